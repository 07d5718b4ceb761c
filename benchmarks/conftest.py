"""Benchmark helpers. ``YOLOV9K_BENCH_QUICK=1`` shrinks sizes so CI only proves the cases run;
performance claims come from full runs (see benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


def peak_rss_rise_mb(setup: str, call: str) -> float:
    """Peak resident-memory rise (MB) of the statement ``call`` after ``setup``, in a fresh process.

    The peak (VmHWM) is reset just before ``call`` through ``/proc/self/clear_refs``, so neither
    ``setup`` nor the parent process counts (``ru_maxrss`` would keep the parent's peak across the
    fork + exec of the child). Runs with the parent's thread count.
    """
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
{setup}
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
{call}
print(json.dumps(max(0.0, status("VmHWM:") - before)))
"""
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))
