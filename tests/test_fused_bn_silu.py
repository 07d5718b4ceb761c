"""Triton BatchNorm2d + SiLU (``kernels/bn_silu.py``) against eager ``nn.BatchNorm2d`` + ``nn.SiLU``.

Runs on CPU through the Triton interpreter (TRITON_INTERPRET=1, set in conftest.py); bf16 is tested
on GPU only (the interpreter computes bf16 wrongly). Shapes are tiny: odd channel counts, batch 1
and 3, several channel blocks and row splits, contiguous / channels-last / sliced inputs.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import assert_close_verbose, make_batchnorm, requires_cuda
from torch import nn

from yolov9k.ops import use_backend
from yolov9k.ops.bn_silu import bn_silu, bn_silu_reference

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")

MOMENTUM, EPS = 0.03, 1e-3
SHAPES = [(1, 3, 5, 7), (3, 17, 5, 7), (3, 5, 1, 1)]
LAYOUTS = ["contiguous", "channels_last", "channel_slice", "spatial_slice"]


def _kernel():
    from yolov9k.kernels.bn_silu import bn_silu_triton

    return bn_silu_triton


def make_input(shape, layout: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """x of ``shape`` with the given memory layout; values with a non-zero mean like conv outputs."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    if layout == "channel_slice":  # like the second chunk of an ELAN cv1 output
        base = torch.randn(n, 2 * c + 1, h, w, generator=g) * 2 + 1.5
        x = base[:, c + 1 :]
    elif layout == "spatial_slice":  # H, W not flattenable: the wrapper copies
        base = torch.randn(n, c, h + 2, w + 3, generator=g) * 2 + 1.5
        x = base[:, :, 1 : h + 1, 2 : w + 2]
    else:
        x = torch.randn(n, c, h, w, generator=g) * 2 + 1.5
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    x = x.to(dtype)
    assert x.shape == shape
    return x


def make_bn(c: int, seed: int = 1) -> nn.BatchNorm2d:
    return make_batchnorm(c, eps=EPS, momentum=MOMENTUM, seed=seed)


def run_ours(x, bn: nn.BatchNorm2d, grad: torch.Tensor | None):
    x = x.detach().clone().requires_grad_(grad is not None)
    y = _kernel()(
        x,
        bn.weight,
        bn.bias,
        bn.running_mean,
        bn.running_var,
        bn.training,
        bn.momentum,
        bn.eps,
        bn.num_batches_tracked if bn.training else None,
    )
    grads = None
    if grad is not None:
        y.backward(grad)
        grads = (x.grad, bn.weight.grad, bn.bias.grad)
    return y, grads


def run_eager(x, bn: nn.BatchNorm2d, grad: torch.Tensor | None):
    x = x.detach().clone().requires_grad_(grad is not None)
    y = nn.SiLU()(bn(x))
    grads = None
    if grad is not None:
        y.backward(grad)
        grads = (x.grad, bn.weight.grad, bn.bias.grad)
    return y, grads


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.op_parity("bn_silu")
def test_fp32_forward_backward_and_running_stats(shape, layout, training):
    x = make_input(shape, layout, torch.float32)
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    bn_ours, bn_ref = make_bn(shape[1]), make_bn(shape[1])
    bn_ours.train(training)
    bn_ref.train(training)
    y, (dx, dw, db) = run_ours(x, bn_ours, grad)
    y_ref, (dx_ref, dw_ref, db_ref) = run_eager(x, bn_ref, grad)

    assert y.dtype == x.dtype and y.shape == x.shape
    assert_close_verbose(y, y_ref, rtol=1e-5, atol=1e-6, what="y")
    assert_close_verbose(dx, dx_ref, rtol=1e-5, atol=1e-5, what="dx")
    assert_close_verbose(dw, dw_ref, rtol=1e-5, atol=1e-5, what="dweight")
    assert_close_verbose(db, db_ref, rtol=1e-5, atol=1e-5, what="dbias")
    assert_close_verbose(bn_ours.running_mean, bn_ref.running_mean, rtol=1e-6, atol=1e-7, what="running_mean")
    assert_close_verbose(bn_ours.running_var, bn_ref.running_var, rtol=1e-6, atol=1e-7, what="running_var")
    assert int(bn_ours.num_batches_tracked) == int(bn_ref.num_batches_tracked) == int(training)


def test_output_keeps_channels_last():
    x = make_input((3, 17, 5, 7), "channels_last", torch.float32)
    y, _ = run_ours(x, make_bn(17), None)
    assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # masked lanes, interpreter
def test_large_mean_statistics_are_stable():
    """Welford/Chan statistics: a large offset does not wreck the variance (E[x^2] - E[x]^2 would)."""
    x = (torch.randn(3, 5, 6, 7, dtype=torch.float64) + 1e4).float()
    bn_ours, bn_ref = make_bn(5), make_bn(5)
    y, _ = run_ours(x, bn_ours, None)
    bn_ref.double()
    y_ref, _ = run_eager(x.double(), bn_ref, None)
    assert_close_verbose(y, y_ref, rtol=2e-3, atol=2e-3, what="y at mean 1e4")
    assert_close_verbose(bn_ours.running_var, bn_ref.running_var, rtol=1e-4, atol=0, what="running_var")


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(1, 3, 5, 7), (3, 17, 5, 7)], ids=lambda s: "x".join(map(str, s)))
def test_fp16_error_at_most_twice_pytorch(shape, training):
    """fp16 in, fp32 parameters (as under autocast): error vs an fp64 reference <= 2x PyTorch's own."""
    x16 = make_input(shape, "channels_last", torch.float16)
    grad16 = torch.randn(shape, generator=torch.Generator().manual_seed(2)).half()
    outs = {}
    for name, runner, dtype in (
        ("ours", run_ours, torch.float16),
        ("torch16", run_eager, torch.float16),
        ("ref64", run_eager, torch.float64),
    ):
        bn = make_bn(shape[1]).train(training)
        if dtype == torch.float64:
            bn.double()
        y, grads = runner(x16.to(dtype), bn, grad16.to(dtype))
        outs[name] = (y, *grads, bn.running_mean, bn.running_var)
    names = ("y", "dx", "dweight", "dbias", "running_mean", "running_var")
    for i, what in enumerate(names):
        ref = outs["ref64"][i].double()
        err_ours = (outs["ours"][i].double() - ref).abs().max().item()
        err_torch = (outs["torch16"][i].double() - ref).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-5, (
            f"{what}: ours {err_ours:.3e} vs PyTorch fp16 {err_torch:.3e}"
        )
    assert outs["ours"][0].dtype == torch.float16 and outs["ours"][1].dtype == torch.float16


def test_momentum_none_is_cumulative_average():
    bn_ours = nn.BatchNorm2d(5, eps=EPS, momentum=None)
    bn_ref = nn.BatchNorm2d(5, eps=EPS, momentum=None)
    for seed in range(2):
        x = make_input((3, 5, 5, 7), "contiguous", torch.float32, seed=seed)
        run_ours(x, bn_ours, None)
        run_eager(x, bn_ref, None)
    assert_close_verbose(bn_ours.running_mean, bn_ref.running_mean, rtol=1e-6, atol=1e-7, what="running_mean")
    assert_close_verbose(bn_ours.running_var, bn_ref.running_var, rtol=1e-6, atol=1e-7, what="running_var")
    assert int(bn_ours.num_batches_tracked) == 2


def test_dispatch_backends_and_reference():
    """``bn_silu``: forced torch = the reference = eager BN + SiLU bit for bit; forced triton = kernel."""
    x = make_input((3, 5, 5, 7), "contiguous", torch.float32)
    bn_a, bn_b, bn_c = make_bn(5), make_bn(5), make_bn(5)
    args = lambda bn: (bn.weight, bn.bias, bn.running_mean, bn.running_var, True, MOMENTUM, EPS)  # noqa: E731
    with use_backend("torch"):
        y_torch = bn_silu(x, *args(bn_a), bn_a.num_batches_tracked)
    y_eager = nn.SiLU()(bn_b(x))
    assert torch.equal(y_torch, y_eager)
    assert torch.equal(bn_a.running_var, bn_b.running_var) and int(bn_a.num_batches_tracked) == 1
    with use_backend("triton"):
        y_triton = bn_silu(x, *args(bn_c), bn_c.num_batches_tracked)
    assert_close_verbose(y_triton, y_eager, rtol=1e-5, atol=1e-6, what="triton via dispatch")
    assert_close_verbose(bn_c.running_var, bn_b.running_var, rtol=1e-6, atol=1e-7, what="running_var")


def test_reference_without_running_stats_uses_batch_stats():
    x = make_input((3, 5, 5, 7), "contiguous", torch.float32)
    bn = nn.BatchNorm2d(5, eps=EPS, track_running_stats=False).eval()
    y = bn_silu_reference(x, bn.weight, bn.bias, None, None, False, MOMENTUM, EPS)
    assert torch.equal(y, nn.SiLU()(bn(x)))
    y_triton = _kernel()(x, bn.weight, bn.bias, None, None, False, MOMENTUM, EPS)
    assert_close_verbose(y_triton, y, rtol=1e-5, atol=1e-6, what="no running stats")


def test_bad_inputs_raise_clear_errors():
    f = _kernel()
    w, b = torch.ones(5), torch.zeros(5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        f(torch.randn(3, 5, 7), w, b, None, None, True, MOMENTUM, EPS)
    with pytest.raises(ValueError, match="weight must have shape"):
        f(torch.randn(2, 4, 3, 3), w, b, None, None, True, MOMENTUM, EPS)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        f(torch.randn(1, 5, 1, 1), w, b, torch.zeros(5), torch.ones(5), True, MOMENTUM, EPS)
    with pytest.raises(TypeError, match="floating-point"):
        f(torch.ones(2, 5, 3, 3, dtype=torch.int32), w, b, None, None, True, MOMENTUM, EPS)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        bn_silu_reference(torch.randn(3, 5), w, b, None, None, True, MOMENTUM, EPS)


def test_custom_ops_opcheck():
    """torch.library registration: schema, fake implementation, autograd registration."""
    from yolov9k.kernels.bn_silu import bn_silu_backward, bn_silu_forward

    x = make_input((3, 5, 5, 7), "channels_last", torch.float32).requires_grad_()
    w = (torch.rand(5) + 0.5).requires_grad_()
    b = torch.randn(5).requires_grad_()
    tests = ("test_schema", "test_faketensor", "test_autograd_registration")
    torch.library.opcheck(bn_silu_forward, (x, w, b, None, None, True, EPS), test_utils=tests)
    y, mean, rstd, _ = bn_silu_forward(x.detach(), w.detach(), b.detach(), None, None, True, EPS)
    dy = torch.randn_like(y)
    torch.library.opcheck(
        bn_silu_backward, (dy, x.detach(), w.detach(), b.detach(), mean, rstd, True), test_utils=tests[:2]
    )


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_at_most_twice_pytorch(dtype):
    """GPU only (bf16 is not computed right by the CPU interpreter)."""
    shape = (8, 67, 40, 40)
    x = make_input(shape, "channels_last", dtype).cuda()
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(2)).to(dtype).cuda()
    outs = {}
    for name, runner, dt in (
        ("ours", run_ours, dtype),
        ("torch", run_eager, dtype),
        ("ref", run_eager, None),
    ):
        bn = make_bn(shape[1]).cuda()
        xx, gg = (x, grad) if dt is not None else (x.float(), grad.float())
        y, grads = runner(xx, bn, gg)
        outs[name] = (y, *grads, bn.running_var)
    for i, what in enumerate(("y", "dx", "dweight", "dbias", "running_var")):
        ref = outs["ref"][i].float()
        err_ours = (outs["ours"][i].float() - ref).abs().max().item()
        err_torch = (outs["torch"][i].float() - ref).abs().max().item()
        assert err_ours <= 2 * err_torch + 1e-4, f"{what}: ours {err_ours:.3e} vs PyTorch {err_torch:.3e}"
