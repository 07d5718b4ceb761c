"""``accelerate(model)``: whole models with the torch backend (bit-exact no-op), and one block of each
kind with the Triton kernels forced under the CPU interpreter (train: outputs, grads, running stats;
fused eval: outputs).

Whole gelan-t / yolov9-t under the interpreter take minutes (~80 s a forward on 2 shared cores), so
that comparison is opt-in: ``YOLOV9K_INTERPRETER_MODEL=1``. Its criterion is the eager fp32 model's
own error against fp64 (x2): 50+ layers of batch statistics on 2x2 maps amplify rounding, and the
eager fp32 model itself is ~0.3 away from fp64 on raw maps of gelan-t at 64 px.
"""

from __future__ import annotations

import copy
import importlib.util
import os

import pytest
import torch
from conftest import assert_close_verbose
from torch import nn

from yolov9k.models import build_model
from yolov9k.models.accelerate import AcceleratedConv, accelerate
from yolov9k.models.blocks import ELAN1, SPPELAN, AConv, ADown, Conv, RepConvN, RepNCSPELAN4
from yolov9k.ops import use_backend

requires_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def _flat(out) -> list[torch.Tensor]:
    """Train-mode model output (list, or (aux, main) for PGI models) -> list of maps."""
    if isinstance(out, tuple):
        return [*out[0], *out[1]]
    return list(out)


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine parameters and running statistics (the defaults hide mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
    return model


# --- torch backend: an exact no-op -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "backend"), [("gelan-t", "torch")])
def test_torch_backend_is_bit_exact(name, backend):
    """Forced torch: the original forwards, bit for bit (auto on CPU runs the C++ BN + SiLU in
    training: tests/test_bn_silu_cpp.py). gelan-t has every GELAN-T block kind (yolov9-t only adds
    the unaccelerated PGI routing)."""
    torch.manual_seed(0)
    ref = _randomize_bn(build_model(name, num_classes=3))
    ours = accelerate(copy.deepcopy(ref))
    x = torch.randn(2, 3, 32, 32)  # batch 2: the 1x1 P5 maps still give BN two values
    with use_backend(backend):
        out = _flat(ours(x))
        sum(o.square().mean() for o in out).backward()
    out_ref = _flat(ref(x))
    sum(o.square().mean() for o in out_ref).backward()
    assert all(torch.equal(a, b) for a, b in zip(out, out_ref))
    for (k, p), (_, q) in zip(ours.named_parameters(), ref.named_parameters()):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad), k
    for (k, b), (_, c) in zip(ours.named_buffers(), ref.named_buffers()):
        assert torch.equal(b, c), k
    ours.eval().fuse()
    ref.eval().fuse()
    with use_backend(backend), torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_accelerate_swaps_classes_keeps_state_and_is_idempotent():
    model = build_model("gelan-t", num_classes=3)
    keys = list(model.state_dict())
    n_conv = sum(type(m) is Conv for m in model.modules())
    accelerate(model)
    accelerate(model)
    assert list(model.state_dict()) == keys
    assert sum(type(m) is AcceleratedConv for m in model.modules()) == n_conv
    assert all(isinstance(m, Conv) for m in model.modules() if type(m) is AcceleratedConv)
    clone = copy.deepcopy(model)  # EMA copies the model
    assert any(type(m) is AcceleratedConv for m in clone.modules())
    with pytest.raises(TypeError, match="nn.Module"):
        accelerate("gelan-t")


# --- Triton forced under the interpreter: one block of each kind ------------------------------------

BLOCKS = {
    "Conv3x3s2": lambda: Conv(16, 8, 3, 2),
    "Conv1x1": lambda: Conv(16, 11, 1, 1),
    "ELAN1": lambda: ELAN1(16, 16, 16, 8),
    "RepNCSPELAN4": lambda: RepNCSPELAN4(16, 16, 16, 8, 1),
    "SPPELAN": lambda: SPPELAN(16, 16, 8),
    "AConv": lambda: AConv(16, 8),
    "ADown": lambda: ADown(16, 16),
}


def _fuse_block(block: nn.Module) -> None:
    """What ``DetectionModel.fuse`` does, for a lone block: RepConvN first, then every Conv."""
    for kind in (RepConvN, Conv):
        for m in block.modules():
            if isinstance(m, kind):
                m.fuse()


def _block_pair(kind: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    ref = _randomize_bn(BLOCKS[kind](), seed)
    return ref, accelerate(copy.deepcopy(ref))


def _within_eager_noise(ours: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor, what: str) -> None:
    """Error of ours vs the fp64 model <= 2x the eager fp32 model's own error (+ a tiny floor)."""
    err = (ours.double() - exact).abs().max().item()
    err_eager = (eager.double() - exact).abs().max().item()
    floor = 1e-5 * max(exact.abs().max().item(), 1.0)  # 1e-5 of the tensor scale
    assert err <= 2 * err_eager + floor, f"{what}: ours {err:.3e} vs eager fp32 {err_eager:.3e} (fp64 ref)"


@requires_triton
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_train_mode_parity(kind, channels_last):
    """Outputs within 1e-5 of eager; grads and running stats within eager fp32's own error vs fp64."""
    ref, ours = _block_pair(kind)
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(2, 16, 6, 6, generator=torch.Generator().manual_seed(1))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    xs = {
        "ref": x.clone().requires_grad_(),
        "ours": x.clone().requires_grad_(),
        "64": x.double().requires_grad_(),
    }
    y_ref, y64 = ref(xs["ref"]), ref64(xs["64"])
    with use_backend("triton"):
        y = ours(xs["ours"])
        grad = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
        y.backward(grad)
    y_ref.backward(grad)
    y64.backward(grad.double())
    assert_close_verbose(y, y_ref, rtol=1e-5, atol=1e-5, what=f"{kind} y")
    _within_eager_noise(xs["ours"].grad, xs["ref"].grad, xs["64"].grad, f"{kind} dx")
    params = zip(ours.named_parameters(), ref.parameters(), ref64.parameters())
    for (k, p), q, r in params:
        _within_eager_noise(p.grad, q.grad, r.grad, f"{kind} grad {k}")
    for (k, b), c in zip(ours.named_buffers(), ref.buffers()):
        assert_close_verbose(b, c, rtol=1e-5, atol=1e-6, what=f"{kind} buffer {k}")


@requires_triton
@pytest.mark.parametrize("kind", ["Conv3x3s2", "ELAN1", "RepNCSPELAN4"])
def test_block_unfused_eval_uses_running_stats(kind):
    ref, ours = _block_pair(kind)
    ref.eval()
    ours.eval()
    x = torch.randn(1, 16, 5, 7, generator=torch.Generator().manual_seed(1))
    with use_backend("triton"), torch.no_grad():
        y = ours(x)
    with torch.no_grad():
        assert_close_verbose(y, ref(x), rtol=1e-5, atol=1e-5, what=f"{kind} eval y")


@requires_triton
@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_fused_eval_parity(kind):
    ref, ours = _block_pair(kind)
    for m in (ref, ours):
        _fuse_block(m.eval())
    x = torch.randn(3, 16, 5, 7, generator=torch.Generator().manual_seed(1))
    with use_backend("triton"), torch.no_grad():
        y = ours(x)
    with torch.no_grad():
        y_ref = ref(x)
    assert_close_verbose(y, y_ref, rtol=1e-5, atol=1e-5, what=f"{kind} fused eval y")


@requires_triton
def test_forced_triton_on_cpu_without_interpreter_raises(monkeypatch):
    from yolov9k.ops import BackendUnavailableError

    monkeypatch.setenv("TRITON_INTERPRET", "0")
    _, ours = _block_pair("Conv1x1")
    with use_backend("triton"), pytest.raises(BackendUnavailableError, match="TRITON_INTERPRET"):
        ours(torch.randn(1, 16, 3, 3))


# --- whole models under the interpreter (opt-in: minutes) --------------------------------------------


@requires_triton
@pytest.mark.skipif(
    os.environ.get("YOLOV9K_INTERPRETER_MODEL") != "1", reason="minutes under the interpreter; opt in"
)
@pytest.mark.parametrize("name", ["gelan-t", "yolov9-t"])
def test_whole_model_forced_triton_within_eager_fp32_noise(name):
    torch.manual_seed(0)
    ref = _randomize_bn(build_model(name, num_classes=3))
    ref64 = copy.deepcopy(ref).double()
    ours = accelerate(copy.deepcopy(ref))
    x = torch.randn(1, 3, 64, 64)
    with use_backend("triton"):
        out = _flat(ours(x))
    out_ref, out64 = _flat(ref(x)), _flat(ref64(x.double()))
    for i, (a, b, c) in enumerate(zip(out, out_ref, out64)):
        err, err_eager = (a.double() - c).abs().max().item(), (b.double() - c).abs().max().item()
        assert err <= 2 * err_eager + 1e-5, f"train map {i}: ours {err:.3e} vs eager fp32 {err_eager:.3e}"
    for m in (ours, ref, ref64):
        m.eval().fuse()
    with use_backend("triton"), torch.no_grad():
        y = ours(x)
    with torch.no_grad():
        y_ref, y64 = ref(x), ref64(x.double())
    err, err_eager = (y.double() - y64).abs().max().item(), (y_ref.double() - y64).abs().max().item()
    assert err <= 2 * err_eager + 1e-5, f"fused eval: ours {err:.3e} vs eager fp32 {err_eager:.3e}"


# --- per-op switches: accelerate(model, bn_silu=..., concat_conv=...) ----------------------------


def _count_calls(monkeypatch, op: str, backend: str) -> list[int]:
    """Replace ``op``'s ``backend`` implementation by its reference that counts its calls."""
    from yolov9k.ops import _dispatch

    spec = _dispatch._OPS[op]
    calls = [0]

    def counting(*args, **kwargs):
        calls[0] += 1
        return spec.reference(*args, **kwargs)

    monkeypatch.setitem(spec.impls, backend, _dispatch._Impl(counting, spec.impls[backend].native_op))
    return calls


@pytest.mark.parametrize("bn_silu", [True, False])
def test_bn_silu_switch(monkeypatch, bn_silu):
    calls = _count_calls(monkeypatch, "bn_silu", "triton")
    torch.manual_seed(0)
    ref = _randomize_bn(build_model("gelan-t", num_classes=3))
    model = accelerate(copy.deepcopy(ref), bn_silu=bn_silu)
    assert all(type(m) is AcceleratedConv for m in model.modules() if isinstance(m, Conv))
    x = torch.randn(2, 3, 32, 32)
    with use_backend("triton"):
        out = _flat(model(x))
    n_bn_conv = sum(
        isinstance(m, Conv) and m.bn is not None and isinstance(m.act, nn.SiLU) for m in model.modules()
    )
    assert calls[0] == (n_bn_conv if bn_silu else 0)
    assert all(torch.equal(a, b) for a, b in zip(out, _flat(ref(x))))  # the counting kernel is the reference


@pytest.mark.parametrize("concat_conv", [True, False])
def test_concat_conv_switch(monkeypatch, concat_conv):
    calls = _count_calls(monkeypatch, "concat_conv1x1_silu", "triton")
    torch.manual_seed(0)
    block = RepNCSPELAN4(16, 16, 16, 8, 1).eval()
    _fuse_block(block)
    block = accelerate(block.half(), concat_conv=concat_conv)
    x = torch.randn(1, 16, 8, 8).half()
    with use_backend("triton"), torch.no_grad():
        block(x)
    assert (calls[0] > 0) == concat_conv


def test_switches_off_restore_the_plain_conv_and_default_is_all_on():
    model = accelerate(build_model("gelan-t", num_classes=3), bn_silu=False, concat_conv=False)
    assert not any(type(m) is AcceleratedConv for m in model.modules())
    accelerate(model)
    convs = [m for m in model.modules() if type(m) is AcceleratedConv]
    assert convs and all(m.use_bn_silu and m.use_concat_conv for m in convs)
