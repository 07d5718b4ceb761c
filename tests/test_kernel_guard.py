"""The first-use guard of the accelerated kernels (yolov9k/ops/_guard.py), tested on CPU.

The guard acts on CUDA tensors; ``_guard.guard_cpu_tensors()`` lets it act on CPU tensors here, so a
kernel that raises (a compile or launch error) or returns wrong values can be planted: the op must
fall back to its reference with one warning, be reported, and raise instead under
``YOLOV9K_STRICT_KERNELS=1``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import yolov9k
from yolov9k.api.info import format_info
from yolov9k.ops import _dispatch, _guard
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops._guard import KernelFallbackError, KernelFallbackWarning
from yolov9k.ops.bn_silu import bn_silu, bn_silu_cpp, bn_silu_reference

needs_ext = pytest.mark.skipif(not has_native_kernel("box_iou", "CPU"), reason="yolov9k._C not built")


def _reference(a: torch.Tensor) -> torch.Tensor:
    if a.numel() == 0:
        raise ValueError("_probe: empty input")
    return a * 2 + 1


@pytest.fixture
def probe_op(monkeypatch):
    """A registered op ``_probe`` (reference a*2+1) whose ``cpp`` kernel the test sets; guard on CPU."""
    monkeypatch.delenv("YOLOV9K_STRICT_KERNELS", raising=False)
    kernels = {}

    def set_kernel(fn):
        kernels["fn"] = fn
        _dispatch.register("_probe", "cpp", fn, native_op="box_iou")

    _dispatch.define("_probe", reference=_reference)
    try:
        with _guard.guard_cpu_tensors():
            yield set_kernel
    finally:
        _dispatch._OPS.pop("_probe", None)


def _call(a):
    _, fn = _dispatch.select("_probe", a.device)
    return fn(a)


@needs_ext
def test_a_raising_kernel_falls_back_with_one_warning_and_is_reported(probe_op):
    calls = []

    def broken(a):
        calls.append(1)
        raise RuntimeError("PTXASError: ptxas fatal: unresolved extern function\nmore lines")

    probe_op(broken)
    a = torch.arange(6.0)
    with pytest.warns(KernelFallbackWarning, match=r"cpp kernel of _probe failed on cpu.*float32/contiguous"):
        out = _call(a)
    assert torch.equal(out, _reference(a))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        for dtype in (torch.float32, torch.float64):  # every variant: the op has fallen back
            assert torch.equal(_call(a.to(dtype)), _reference(a.to(dtype)))
    assert len(calls) == 1  # the broken kernel is not called again
    (record,) = [f for f in _guard.fallbacks() if f["op"] == "_probe"]
    assert record["device"] == "cpu" and record["backend"] == "cpp"
    assert record["error"] == "RuntimeError: PTXASError: ptxas fatal: unresolved extern function"
    info = yolov9k.ops.backend_info()
    assert record in info["kernel_fallbacks"]
    assert info["ops_cpu"]["_probe"].startswith("cpp -> torch")


@needs_ext
def test_a_kernel_with_wrong_values_falls_back(probe_op):
    probe_op(lambda a: _reference(a) * (1 + 1e-3))  # off by 1e-3 relative: more than fp32 rounding
    a = torch.linspace(-3, 3, 50)
    with pytest.warns(KernelFallbackWarning, match="KernelMismatch: output: max"):
        assert torch.equal(_call(a), _reference(a))
    assert _guard.has_fallen_back("_probe", "cpu")


@needs_ext
def test_rounding_differences_pass_and_later_calls_go_straight_to_the_kernel(probe_op):
    seen = []

    def kernel(a):
        seen.append(a.dtype)
        return _reference(a) + 1e-7 * a.abs().max()  # within fp32 rounding of the output scale

    probe_op(kernel)
    a = torch.linspace(-3, 3, 50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            _call(a)
    assert seen == [torch.float32] * 3  # checked once (kernel + reference), then the kernel only
    assert not _guard.fallbacks()


@needs_ext
def test_a_later_exception_of_a_checked_kernel_also_falls_back(probe_op):
    state = {"n": 0}

    def flaky(a):
        state["n"] += 1
        if state["n"] > 1:
            raise RuntimeError("CUDA error: out of resources")
        return _reference(a)

    probe_op(flaky)
    a = torch.ones(4)
    _call(a)
    with pytest.warns(KernelFallbackWarning, match="out of resources"):
        assert torch.equal(_call(a), _reference(a))


@needs_ext
def test_a_fallback_of_one_variant_also_stops_the_variants_checked_before(probe_op):
    """The op falls back on the device: a variant that passed its check earlier runs the reference too."""
    seen = []

    def kernel(a):
        seen.append(a.dtype)
        if a.dtype == torch.float64:
            raise RuntimeError("CUDA error: misaligned address")
        return _reference(a)

    probe_op(kernel)
    a = torch.ones(4)
    _call(a)
    _call(a)  # checked, then straight to the kernel
    with pytest.warns(KernelFallbackWarning, match="misaligned address"):
        _call(a.double())
    assert torch.equal(_call(a), _reference(a))
    assert seen == [torch.float32, torch.float32, torch.float64]  # not called after the fallback


@needs_ext
def test_an_input_the_reference_rejects_too_is_the_callers_error(probe_op):
    def kernel(a):
        raise ValueError("bad boxes")

    probe_op(kernel)
    with pytest.raises(ValueError, match="_probe: empty input"), warnings.catch_warnings():
        warnings.simplefilter("error")
        _call(torch.ones(0))
    assert not _guard.fallbacks()


@needs_ext
def test_strict_mode_raises_instead_of_falling_back(probe_op, monkeypatch):
    monkeypatch.setenv("YOLOV9K_STRICT_KERNELS", "1")
    probe_op(lambda a: a * 0)
    with pytest.raises(KernelFallbackError, match=r"cpp kernel of _probe failed.*YOLOV9K_STRICT_KERNELS=1"):
        _call(torch.ones(3))
    assert not _guard.fallbacks()


def test_the_guard_is_off_for_cpu_tensors_by_default():
    fn = _dispatch.implementation("bn_silu", "cpp", torch.device("cpu"))
    assert fn is bn_silu_cpp
    cuda_fn = _dispatch.implementation("bn_silu", "triton", torch.device("cuda"))
    assert cuda_fn.__name__ == "guarded_bn_silu_triton"


# --------------------------------------------------------------------------------------------------
# bn_silu: running statistics compared on copies and restored; the Triton kernel under the interpreter


def _bn_args(bn: torch.nn.BatchNorm2d):
    stats = (bn.running_mean, bn.running_var, True, bn.momentum, bn.eps, bn.num_batches_tracked)
    return (bn.weight, bn.bias, *stats)


@pytest.mark.skipif(not has_native_kernel("bn_silu_train", "CPU"), reason="yolov9k._C without bn_silu_train")
def test_bn_silu_kernel_corrupting_the_running_stats_is_caught_and_undone(monkeypatch):
    from conftest import make_batchnorm

    monkeypatch.delenv("YOLOV9K_STRICT_KERNELS", raising=False)

    def corrupting(*args, **kwargs):
        y = bn_silu_cpp(*args, **kwargs)
        args[3].add_(1.0)  # running_mean off by one
        return y

    bn, bn_ref = make_batchnorm(8, eps=1e-3, momentum=0.03), make_batchnorm(8, eps=1e-3, momentum=0.03)
    x = torch.randn(2, 8, 5, 5)
    monkeypatch.setitem(_dispatch._OPS["bn_silu"].impls, "cpp", _dispatch._Impl(corrupting, "bn_silu_train"))
    with _guard.guard_cpu_tensors(), pytest.warns(KernelFallbackWarning, match="running_mean"):
        y = bn_silu(x, *_bn_args(bn))
    want = bn_silu_reference(x, *_bn_args(bn_ref))
    assert torch.equal(y, want)
    for name in ("running_mean", "running_var", "num_batches_tracked"):  # updated once, by the reference
        assert torch.equal(getattr(bn, name), getattr(bn_ref, name)), name


def test_triton_bn_silu_returning_wrong_values_falls_back_under_the_interpreter(monkeypatch):
    """A Triton kernel (run by TRITON_INTERPRET=1, as tests/conftest.py sets) that doubles its output."""
    from conftest import make_batchnorm
    from yolov9k.kernels import bn_silu as kernel_module

    monkeypatch.delenv("YOLOV9K_STRICT_KERNELS", raising=False)
    real = kernel_module.bn_silu_forward_impl

    def wrong(*args):
        y, *stats = real(*args)
        return (y * 2, *stats)

    monkeypatch.setattr(kernel_module, "bn_silu_forward_impl", wrong)
    bn = make_batchnorm(4, eps=1e-3, momentum=0.03)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    with _guard.guard_cpu_tensors(), _dispatch.use_backend("triton"):
        match = r"triton kernel of bn_silu.*float32/contiguous/train\+grad"
        with pytest.warns(KernelFallbackWarning, match=match):
            y = bn_silu(x, *_bn_args(bn))
        assert _guard.has_fallen_back("bn_silu", "cpu")
    y.sum().backward()  # the reference's graph
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --------------------------------------------------------------------------------------------------
# a short training run whose BN + SiLU kernel fails: it continues on the reference


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolov9k.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("guard")
    return str(generate_demo_dataset(root / "set", num_train=8, num_val=4, imgsz=64, seed=0))


TINY = dict(
    model="gelan-t", epochs=1, imgsz=64, batch=4, workers=0, device="cpu", nbs=4, warmup_epochs=0.0,
    plots=False, verbose=False, val=False, mosaic=0.0, channels_last=False,
)  # fmt: skip


def _broken_bn_silu(*args, **kwargs):
    raise RuntimeError("triton.compiler.errors.CompilationError: at 12:8: unsupported layout")


@pytest.mark.skipif(not has_native_kernel("bn_silu_train", "CPU"), reason="yolov9k._C without bn_silu_train")
@pytest.mark.usefixtures("one_thread")
def test_training_continues_on_the_reference_warns_once_and_reports(tiny_data, tmp_path, monkeypatch):
    from yolov9k.engine import Trainer

    monkeypatch.delenv("YOLOV9K_STRICT_KERNELS", raising=False)
    _plant_broken_bn_silu(monkeypatch)
    with _guard.guard_cpu_tensors(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), name="run")).fit()
        fallbacks = yolov9k.ops.backend_info()["kernel_fallbacks"]
        text = format_info({**_info_stub(), "backends": yolov9k.ops.backend_info()})
    mine = [w for w in caught if issubclass(w.category, KernelFallbackWarning)]
    assert len(mine) == 1 and "bn_silu" in str(mine[0].message) and "CompilationError" in str(mine[0].message)
    assert [f["op"] for f in fallbacks] == ["bn_silu"]
    assert "kernel fallbacks: bn_silu (cpp) on cpu, variant float32/contiguous/train+grad" in text
    assert (tmp_path / "run" / "weights" / "last.pt").is_file() and summary["save_dir"]


@pytest.mark.skipif(not has_native_kernel("bn_silu_train", "CPU"), reason="yolov9k._C without bn_silu_train")
@pytest.mark.usefixtures("one_thread")
def test_training_with_a_failing_kernel_stops_in_strict_mode(tiny_data, tmp_path, monkeypatch):
    from yolov9k.engine import Trainer

    monkeypatch.setenv("YOLOV9K_STRICT_KERNELS", "1")
    _plant_broken_bn_silu(monkeypatch)
    with _guard.guard_cpu_tensors(), pytest.raises(KernelFallbackError, match="bn_silu"):
        Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), name="run")).fit()


def _plant_broken_bn_silu(monkeypatch) -> None:
    broken = _dispatch._Impl(_broken_bn_silu, "bn_silu_train")
    monkeypatch.setitem(_dispatch._OPS["bn_silu"].impls, "cpp", broken)


def _info_stub() -> dict:
    base = {"name": "m", "fused": False, "layers": 1, "params": 1, "gflops": 1.0, "imgsz": 64}
    return {**base, "is_dual": False, "nc": 1, "stride": [8.0]}
