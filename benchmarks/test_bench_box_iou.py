"""box_iou: PyTorch reference vs our C++ (CPU) / CUDA kernels."""

from __future__ import annotations

import pytest
import torch
from conftest import device_name, pick, requires_cuda, synchronize

from yolov9k import ops

N = pick(8400, 512)
M = pick(100, 20)


def _boxes(n: int, device: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(n)
    xy = torch.rand(n, 2, generator=g) * 640
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 100], 1).to(device)


def _run(benchmark, backend: str, device: str) -> None:
    a, b = _boxes(N, device), _boxes(M, device)

    def call():
        with ops.use_backend(backend):
            out = ops.box_iou(a, b)
        synchronize(device)
        return out

    benchmark.extra_info.update(device=device_name(device), n=N, m=M, backend=backend)
    out = benchmark(call)
    assert out.shape == (N, M)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
@pytest.mark.op_bench("box_iou")
def test_box_iou_cpu(benchmark, backend):
    benchmark.group = f"box_iou cpu {N}x{M}"
    _run(benchmark, backend, "cpu")


@requires_cuda
@pytest.mark.parametrize("backend", ["torch", "cuda"])
def test_box_iou_cuda(benchmark, backend):
    benchmark.group = f"box_iou cuda {N}x{M}"
    _run(benchmark, backend, "cuda")
