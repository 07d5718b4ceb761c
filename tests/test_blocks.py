"""Unit tests of the building blocks: shapes, fusion numerics, routing ops (independent references)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_verbose

from yolov9k.models.blocks import (
    ELAN1,
    SPPELAN,
    AConv,
    ADown,
    CBFuse,
    CBLinear,
    Conv,
    RepConvN,
    RepNCSPELAN4,
    avg_pool_2x2,
    make_divisible,
)
from yolov9k.models.head import DFL


def _randomise_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


@pytest.mark.parametrize("g,s", [(1, 1), (2, 1), (1, 2)])
def test_repconvn_fuse_matches_branches(g, s):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = RepConvN(8, 6, 3, s, g=g).eval()
    _randomise_bn(m, gen)
    x = torch.randn(2, 8, 9, 11, generator=gen)
    with torch.no_grad():
        # independent reference in float64: explicit conv + BN formula per branch
        def branch(c: Conv) -> torch.Tensor:
            bn = c.bn
            cv = c.conv
            y = F.conv2d(x.double(), cv.weight.double(), None, cv.stride, cv.padding, 1, cv.groups)
            inv = (bn.running_var.double() + bn.eps).rsqrt()
            shift = bn.bias.double() - bn.running_mean.double() * bn.weight.double() * inv
            return y * (bn.weight.double() * inv).view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

        ref = F.silu(branch(m.conv1) + branch(m.conv2))
        y = m(x)
        m.fuse()
        yf = m(x)
    assert m.conv1 is None and m.conv2 is None and m.conv.bias is not None
    assert yf.shape == ref.shape == (2, 6, (9 - 1) // s + 1, (11 - 1) // s + 1)
    assert_close_verbose(y, ref.float(), atol=1e-5, rtol=1e-5, what="RepConvN unfused")
    assert_close_verbose(yf, ref.float(), atol=1e-5, rtol=1e-5, what="RepConvN fused")


def test_conv_fuse_and_train_mode_bn():
    gen = torch.Generator().manual_seed(1)
    m = Conv(4, 5, 3, 2).eval()
    _randomise_bn(m, gen)
    x = torch.randn(1, 4, 7, 7, generator=gen)
    with torch.no_grad():
        y = m(x)
        m.fuse()
        assert m.bn is None
        assert_close_verbose(m(x), y, atol=1e-5, rtol=1e-5, what="Conv fused")
    assert y.shape == (1, 5, 4, 4)


def test_downsample_shapes_and_values():
    x = torch.randn(2, 8, 16, 12)
    a = AConv(8, 10).eval()
    assert a(x).shape == (2, 10, 8, 6)
    d = ADown(8, 10).eval()
    y = d(x)
    assert y.shape == (2, 10, 8, 6)
    with torch.no_grad():  # second half: avg-pool 2/1 -> max-pool 3/2/1 -> 1x1 conv (reference by hand)
        p = F.avg_pool2d(x, 2, 1)[:, 4:]
        ref = d.cv2(F.max_pool2d(p, 3, 2, 1))
    assert torch.equal(y[:, 5:], ref)


def test_elan_and_spp_shapes():
    x = torch.randn(1, 16, 8, 8)
    assert ELAN1(16, 24, 16, 8)(x).shape == (1, 24, 8, 8)
    m = RepNCSPELAN4(16, 32, 16, 8, 2)
    assert m(x).shape == (1, 32, 8, 8)
    assert m.cv4.conv.in_channels == 16 + 2 * 8 and len(m.cv2[0].m) == 2
    s = SPPELAN(16, 20, 6)
    assert s(x).shape == (1, 20, 8, 8) and s.cv5.conv.in_channels == 24


def test_sppelan_pools_are_chained():
    s = SPPELAN(2, 2, 2).eval()
    x = torch.zeros(1, 2, 11, 11)
    x[..., 5, 5] = 1.0
    y1 = s.cv2(x)
    assert int((y1 > 0).sum()) == 2 * 25  # 5x5 window
    assert int((s.cv3(y1) > 0).sum()) == 2 * 81  # chained: 9x9 receptive field


def test_cblinear_cbfuse():
    torch.manual_seed(0)
    lin = CBLinear(4, [3, 5, 7])
    x = torch.randn(1, 4, 4, 4)
    outs = lin(x)
    assert [o.shape[1] for o in outs] == [3, 5, 7]
    full = lin.conv(x)
    assert torch.equal(torch.cat(outs, 1), full)
    fuse = CBFuse([1, 0])
    a = (torch.randn(1, 2, 2, 2), torch.randn(1, 5, 2, 2))
    b = (torch.randn(1, 5, 4, 4),)
    target = torch.randn(1, 5, 4, 4)
    y = fuse([a, b, target])
    up = a[1].repeat_interleave(2, 2).repeat_interleave(2, 3)  # nearest x2 by hand
    assert torch.allclose(y, up + b[0] + target, atol=1e-6)
    with pytest.raises(ValueError):
        fuse([a, target])


def test_dfl_expectation():
    d = DFL(16)
    assert not d.conv.weight.requires_grad
    logits = torch.full((1, 64, 3), -1e4)
    for side, k in enumerate((0, 5, 15, 7)):
        logits[0, side * 16 + k] = 0.0
    out = d(logits)
    assert torch.allclose(out[0, :, 0], torch.tensor([0.0, 5.0, 15.0, 7.0]))


def test_make_divisible_and_errors():
    assert make_divisible(60, 8) == 64 and make_divisible(64, 8) == 64 and make_divisible(4.5, 4) == 8
    with pytest.raises(ValueError):
        RepConvN(4, 4, k=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 2, 2), (3, 16, 33, 17), (0, 4, 6, 6)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_pool_2x2_matches_avg_pool2d(dtype, shape, channels_last):
    """The CPU depthwise-conv pool gives ATen's 2x2/1 average pool and its gradient (to the
    rounding of a 4-term sum), on both memory layouts."""
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(*shape, generator=g, dtype=dtype) * 100).requires_grad_()
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    ref_x = x.detach().clone().requires_grad_()
    y = avg_pool_2x2(x)
    ref = F.avg_pool2d(ref_x, 2, 1, 0, False, True)
    assert y.shape == ref.shape
    tol = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(y, ref, rtol=tol, atol=tol * 100)
    gy = torch.randn(ref.shape, generator=g, dtype=dtype)
    y.backward(gy)
    ref.backward(gy)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=tol, atol=tol)
