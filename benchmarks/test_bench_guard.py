"""The first-use guard's cost after the first call (``yolov9k.ops._guard``): an op called through the
guarded dispatch vs the bare kernel, side by side, on this CPU (the guard's test hook makes it act on
CPU tensors as it does on CUDA ones).

Two ops: ``box_iou`` of 64 x 64 boxes (the C++ kernel, a few microseconds: the guard's cost shows
against it) and a no-op kernel (the guard's own cost per call, nothing else). On CUDA the guard also
asks whether the stream is capturing (``torch.cuda.is_current_stream_capturing``), which this CPU
run does not reach.
"""

from __future__ import annotations

import pytest
import torch
from conftest import device_name

from yolov9k.ops import _dispatch, _guard
from yolov9k.ops._extension import has_native_kernel


def _noop(a: torch.Tensor) -> torch.Tensor:
    return a


@pytest.fixture
def guard_on_cpu():
    _dispatch.define("_guard_bench", reference=_noop)
    _dispatch.register("_guard_bench", "cpp", _noop, native_op="box_iou")
    try:
        with _guard.guard_cpu_tensors():
            yield
    finally:
        _dispatch._OPS.pop("_guard_bench", None)


@pytest.mark.skipif(not has_native_kernel("box_iou", "CPU"), reason="yolov9k._C not built")
@pytest.mark.parametrize("op", ["box_iou", "_guard_bench"])
@pytest.mark.parametrize("path", ["kernel", "guarded"])
def test_guard_cost_after_first_call(benchmark, guard_on_cpu, op, path):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(64, 2, generator=g) * 640
    a = torch.cat([xy, xy + 50], 1)
    with _dispatch.use_backend("cpp"):
        backend, guarded = _dispatch.select(op, a.device)
    assert backend == "cpp"
    kernel = _dispatch._OPS[op].impls["cpp"].fn
    fn = guarded if path == "guarded" else kernel
    if path == "guarded":
        assert fn is not kernel and fn.__name__.startswith("guarded_")
        fn(a, a) if op == "box_iou" else fn(a)  # the checked first call
        assert not _guard.fallbacks()
    call = (lambda: fn(a, a)) if op == "box_iou" else (lambda: fn(a))
    benchmark.group = f"first-use guard after the first call: {op}"
    benchmark.extra_info.update(device=device_name("cpu"), op=op, path=path)
    benchmark.pedantic(call, rounds=2000, iterations=20, warmup_rounds=100)
