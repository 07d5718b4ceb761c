"""Triton concat + 1x1 conv + bias + SiLU (``kernels/concat_conv1x1.py``) against
``silu(conv2d(torch.cat(inputs), weight, bias))``, on CPU through the Triton interpreter."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_verbose, requires_cuda

from yolov9k.ops import use_backend
from yolov9k.ops.concat_conv1x1_silu import concat_conv1x1_silu, concat_conv1x1_silu_reference

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")


def _kernel():
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton

    return concat_conv1x1_silu_triton


def make_inputs(n: int, channels: list[int], hw: tuple[int, int], layout: str, dtype, seed: int = 0):
    """Branch maps (N, C_i, H, W); ``layout`` 'mixed' cycles contiguous / channels-last / slice."""
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    out = []
    for i, c in enumerate(channels):
        kind = layout if layout != "mixed" else ("contiguous", "channels_last", "channel_slice")[i % 3]
        if kind == "channel_slice":  # e.g. the second chunk of an ELAN cv1 output
            t = torch.randn(n, 2 * c + 3, h, w, generator=g)[:, c + 3 :]
        else:
            t = torch.randn(n, c, h, w, generator=g)
            if kind == "channels_last":
                t = t.contiguous(memory_format=torch.channels_last)
        out.append(t.to(dtype))
    return out


def make_weight(c_out: int, k: int, dtype, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(c_out, k, 1, 1, generator=g) / k**0.5
    return w.to(dtype), torch.randn(c_out, generator=g).to(dtype)


def reference64(inputs, weight, bias):
    return F.silu(F.conv2d(torch.cat([t.double() for t in inputs], 1), weight.double(), bias.double()))


CASES = [  # (batch, branch channels, (H, W), C_out)
    (1, [17], (5, 7), 5),  # the plain 1x1 Conv + bias + SiLU
    (3, [3, 5], (5, 7), 17),
    (1, [8, 8, 17], (5, 7), 3),  # ELAN: [cv1 out, stage 1, stage 2]
    (3, [5, 5, 5, 5], (3, 4), 19),  # SPPELAN: four pyramid maps
    (1, [3, 4, 5, 6, 7], (2, 3), 5),  # more than MAX_INPUTS: the tail is folded
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"b{c[0]}-k{'+'.join(map(str, c[1]))}-o{c[3]}")
@pytest.mark.op_parity("concat_conv1x1_silu")
def test_fp32_matches_cat_conv_silu(case, layout):
    n, channels, hw, c_out = case
    inputs = make_inputs(n, channels, hw, layout, torch.float32)
    weight, bias = make_weight(c_out, sum(channels), torch.float32)
    y = _kernel()(inputs, weight, bias)
    assert y.shape == (n, c_out, *hw) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close_verbose(y, reference64(inputs, weight, bias), rtol=1e-5, atol=1e-6, what="y")
    # the dispatched torch path is the reference itself
    with use_backend("torch"):
        assert torch.equal(
            concat_conv1x1_silu(inputs, weight, bias), concat_conv1x1_silu_reference(inputs, weight, bias)
        )


def test_without_bias():
    inputs = make_inputs(3, [5, 3], (5, 7), "contiguous", torch.float32)
    weight, _ = make_weight(17, 8, torch.float32)
    y = _kernel()(inputs, weight, None)
    expected = F.silu(F.conv2d(torch.cat(inputs, 1).double(), weight.double()))
    assert_close_verbose(y, expected, rtol=1e-5, atol=1e-6, what="y")


@pytest.mark.parametrize("case", CASES[1:3], ids=["two", "three"])
def test_fp16_error_at_most_twice_pytorch(case):
    """fp16 inputs and weights: error vs an fp64 reference <= 2x that of PyTorch's fp16 conv."""
    n, channels, hw, c_out = case
    inputs = make_inputs(n, channels, hw, "mixed", torch.float16)
    weight, bias = make_weight(c_out, sum(channels), torch.float16)
    ref = reference64(inputs, weight, bias)
    ours = _kernel()(inputs, weight, bias)
    assert ours.dtype == torch.float16
    torch16 = concat_conv1x1_silu_reference(inputs, weight, bias)
    err_ours = (ours.double() - ref).abs().max().item()
    err_torch = (torch16.double() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch + 1e-6, f"ours {err_ours:.3e} vs PyTorch fp16 {err_torch:.3e}"


def test_dispatch_forced_triton_and_no_grad_rule():
    inputs = make_inputs(1, [3, 5], (5, 7), "contiguous", torch.float32)
    weight, bias = make_weight(7, 8, torch.float32)
    with use_backend("triton"):
        y = concat_conv1x1_silu(inputs, weight, bias)
        assert_close_verbose(y, reference64(inputs, weight, bias), rtol=1e-5, atol=1e-6, what="y")
        with pytest.raises(RuntimeError, match="inference-only"):
            concat_conv1x1_silu(inputs, weight.requires_grad_(), bias)


def test_bad_inputs_raise_clear_errors():
    f = _kernel()
    a, b = torch.randn(1, 3, 5, 7), torch.randn(1, 5, 5, 7)
    w = torch.randn(4, 8, 1, 1)
    with pytest.raises(ValueError, match="non-empty list"):
        f([], w, None)
    with pytest.raises(ValueError, match="N, H and W must match"):
        f([a, torch.randn(1, 5, 5, 6)], w, None)
    with pytest.raises(ValueError, match=r"weight must be \(C_out, 8, 1, 1\)"):
        f([a, b], torch.randn(4, 7, 1, 1), None)
    with pytest.raises(ValueError, match=r"weight must be \(C_out, 8, 1, 1\)"):
        f([a, b], torch.randn(4, 8, 3, 3), None)
    with pytest.raises(ValueError, match="bias must be"):
        f([a, b], w, torch.randn(5))
    with pytest.raises(ValueError, match="input 1 is torch.float16"):
        f([a, b.half()], w, None)
    with pytest.raises(TypeError, match="floating-point"):
        concat_conv1x1_silu_reference([a.int(), b.int()], w, None)


def test_custom_op_opcheck():
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton

    inputs = make_inputs(1, [3, 5], (5, 7), "mixed", torch.float32)
    weight, bias = make_weight(7, 8, torch.float32)
    torch.library.opcheck(
        concat_conv1x1_silu_triton, (inputs, weight, bias), test_utils=("test_schema", "test_faketensor")
    )


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_low_precision_error_at_most_twice_pytorch(dtype):
    inputs = [t.cuda() for t in make_inputs(4, [64, 64, 64], (40, 40), "channels_last", dtype)]
    weight, bias = (t.cuda() for t in make_weight(128, 192, dtype))
    ref = reference64(inputs, weight, bias)
    err_ours = (_kernel()(inputs, weight, bias).double() - ref).abs().max().item()
    err_torch = (concat_conv1x1_silu_reference(inputs, weight, bias).double() - ref).abs().max().item()
    assert err_ours <= 2 * err_torch + 1e-3, f"ours {err_ours:.3e} vs PyTorch {err_torch:.3e}"
