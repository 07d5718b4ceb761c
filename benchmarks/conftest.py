"""Benchmark helpers. ``YOLOV9K_BENCH_QUICK=1`` shrinks sizes so CI only proves the cases run;
performance claims come from full runs (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import os

import pytest
import torch

QUICK = os.environ.get("YOLOV9K_BENCH_QUICK", "0") == "1"


def pick(full, quick):
    """``quick`` in quick mode, else ``full``."""
    return quick if QUICK else full


def device_name(device: str | torch.device = "cpu") -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: str | torch.device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
