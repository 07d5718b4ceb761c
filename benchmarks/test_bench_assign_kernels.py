"""Task-aligned assigner kernels side by side: the C++ kernel (``yolov9k::assign``, backend "cpp"),
the Triton kernels (CUDA only), our PyTorch reference (backend "torch") and the dense official-style
algorithm (``official_assigner.py``), at B=16, 640 px (A = 8400, strides 8/16/32), M in {20, 100,
1000} (inputs of ``test_bench_assign.make_inputs``). ``YOLOV9K_BENCH_QUICK=1``: B=2, M=20, 1 round.

The official-style baseline is skipped at M=1000: its int64 one-hot of the top-k indices alone,
(B, M, topk, A), would take 16 * 1000 * 10 * 8400 * 8 B = 10.8 GB.

Peak extra memory (``benchmark.extra_info['peak_extra_mb']``): on CPU the rise of the peak resident
set size over the resident size before one call, in a fresh process with the inputs built
(``conftest.peak_rss_rise_mb``); on CUDA
``torch.cuda.max_memory_allocated`` over the allocated memory before the call.
"""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK, device_name, peak_rss_rise_mb, pick, requires_cuda, synchronize
from official_assigner import official_style_assign
from test_bench_assign import make_inputs

from yolov9k.ops import use_backend
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops.assign import assign

B = pick(16, 2)
M_VALUES = pick([20, 100, 1000], [20])
ROUNDS = pick(5, 1)
ROUNDS_SLOW = pick(2, 1)  # reference at M=1000 (tens of seconds a call on 2 cores)
OFFICIAL_MAX_M = 100


def _backend_call(backend: str):
    def call(*args):
        with use_backend(backend):
            return assign(*args)

    return call


PROVIDERS = {
    "cpp": _backend_call("cpp"),
    "triton": _backend_call("triton"),
    "reference": _backend_call("torch"),
    "official": official_style_assign,
}


def _peak_extra_mb_cpu(provider: str, batch: int, m: int) -> float:
    """Peak RSS rise (MB) of one call in a fresh process, inputs already built."""
    setup = f"from test_bench_assign_kernels import PROVIDERS, make_inputs\nargs = make_inputs({batch}, {m})"
    return peak_rss_rise_mb(setup, f"PROVIDERS[{provider!r}](*args)")


def _run(benchmark, provider: str, m: int, device: str) -> None:
    args = make_inputs(B, m, device)
    fn = PROVIDERS[provider]

    def call():
        out = fn(*args)
        synchronize(device)
        return out

    if device == "cuda":
        call()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        call()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _peak_extra_mb_cpu(provider, B, m)
    benchmark.extra_info.update(
        device=device_name(device),
        provider=provider,
        batch=B,
        anchors=args[0].shape[1],
        max_gt=m,
        classes=args[0].shape[2],
        topk=10,
        quick=QUICK,
        peak_extra_mb=round(peak, 1),
    )
    slow = provider == "reference" and m >= 1000
    rounds = ROUNDS_SLOW if slow else ROUNDS
    out = benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0 if (QUICK or slow) else 1)
    assert out[3].shape == (B, args[0].shape[1])


def _skip_if_unavailable(provider: str, m: int, device: str) -> None:
    if provider == "official" and m > OFFICIAL_MAX_M:
        pytest.skip(f"official-style dense assigner at M={m} needs > 10 GB (see module docstring)")
    if provider == "cpp" and not has_native_kernel("assign", "CPU"):
        pytest.skip("yolov9k._C built without yolov9k::assign")


@pytest.mark.parametrize("m", M_VALUES)
@pytest.mark.parametrize("provider", ["cpp", "reference", "official"])
def test_assign_kernels_cpu(benchmark, provider, m):
    _skip_if_unavailable(provider, m, "cpu")
    benchmark.group = f"assign kernels cpu B={B} A=8400 M={m}"
    _run(benchmark, provider, m, "cpu")


@requires_cuda
@pytest.mark.parametrize("m", M_VALUES)
@pytest.mark.parametrize("provider", ["triton", "reference", "official"])
def test_assign_kernels_cuda(benchmark, provider, m):
    _skip_if_unavailable(provider, m, "cuda")
    benchmark.group = f"assign kernels cuda B={B} A=8400 M={m}"
    _run(benchmark, provider, m, "cuda")
