"""Building blocks of GELAN / YOLOv9 (Wang et al. 2024, "YOLOv9: Learning What You Want to Learn Using
Programmable Gradient Information", arXiv:2402.13616).

Every block keeps the attribute names of the official implementation (``cv1``, ``conv``, ``bn``, ...)
so official state dicts load 1:1. Activations are passed in explicitly (``act``): a model shares one
stateless activation instance between its blocks instead of changing a class-wide default.

Shapes: all blocks map (B, C_in, H, W) -> (B, C_out, H', W'); stride-2 blocks halve H and W
(rounding as noted per block).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "autopad",
    "make_divisible",
    "fuse_conv_bn",
    "avg_pool_2x2",
    "Conv",
    "RepConvN",
    "RepNBottleneck",
    "RepNCSP",
    "RepNCSPELAN4",
    "ELAN1",
    "AConv",
    "ADown",
    "SP",
    "SPPELAN",
    "CBLinear",
    "CBFuse",
    "Concat",
    "Silence",
]

# BatchNorm settings of the official initialisation (utils/torch_utils.py::initialize_weights).
BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | tuple[int, int], p: int | None = None, d: int = 1) -> int | list[int]:
    """'Same' padding for kernel ``k`` with dilation ``d`` unless ``p`` is given."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


def _batchnorm(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def _resolve_act(act: bool | nn.Module | None) -> nn.Module:
    """``True`` -> a new SiLU, a module -> that module (shared), ``False``/``None`` -> Identity."""
    if act is True:
        return nn.SiLU(inplace=True)
    if isinstance(act, nn.Module):
        return act
    return nn.Identity()


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)``, (C,) each, with ``bn(x) == x * scale + shift`` in eval mode, in the
    float order of the official fusions (Conv and RepConvN alike)."""
    std = torch.sqrt(bn.running_var + bn.eps)
    return bn.weight / std, bn.bias - bn.weight * bn.running_mean / std


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold ``bn`` into ``conv`` (modified in place and returned): a biased conv equal to
    ``bn(conv(x))`` in eval mode, in the float order of the official fusion. Parameters are frozen."""
    # Row scaling: bit-identical to the official diag(scale) @ W product (each output element is
    # one product plus exact zeros) without building the diagonal matrix.
    scale, shift = bn_scale_shift(bn)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return conv


def _tracing() -> bool:
    """True under torch.jit tracing, ONNX export or torch.compile / torch.export."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


def avg_pool_2x2(x: Tensor) -> Tensor:
    """2x2 average pool, stride 1, no padding: the first step of :class:`AConv` and :class:`ADown`.

    On CPU for NCHW-contiguous float32/float64 maps it runs as a depthwise conv with weights 1/4:
    each product is exact (a power-of-two scaling), so the result is the pool's to the rounding of
    a 4-term sum. Why: with ATen's NCHW ``avg_pool2d`` instead, the gelan-t CPU train step is
    1.03-1.05x slower (interleaved step, 2-core dev VMs; op-level history: benchmarks/RESULTS.md,
    "Training end to end"). Other layouts, dtypes and devices use ``avg_pool2d`` (ATen's
    channels-last pool is already fast), and so do traced, exported and compiled graphs (the ONNX
    ``AveragePool`` of the official export).
    """
    if (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.dim() == 4
        and x.is_contiguous()
        and not _tracing()
    ):
        c = x.shape[1]
        return F.conv2d(x, x.new_full((c, 1, 2, 2), 0.25), groups=c)
    return F.avg_pool2d(x, 2, 1, 0, False, True)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation; 'same' padding by default.

    After :meth:`fuse` the BN is folded into a biased conv and ``bn`` is None.
    """

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 1,
        s: int = 1,
        p: int | None = None,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn: nn.BatchNorm2d | None = _batchnorm(c2)
        self.act = _resolve_act(act)

    def forward(self, x: Tensor) -> Tensor:
        if self.bn is None:
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    def forward_concat(self, inputs: list[Tensor]) -> Tensor:
        """``self(torch.cat(inputs, 1))``: the concat-then-conv of the GELAN blocks, in one place so
        that ``yolov9k.models.accelerate`` can read the inputs in place instead."""
        return self(torch.cat(inputs, 1))

    def fuse(self) -> None:
        """Fold the BatchNorm into the conv (in place)."""
        if self.bn is not None:
            self.conv = fuse_conv_bn(self.conv, self.bn)
            self.bn = None


class RepConvN(nn.Module):
    """Re-parameterisable 3x3 conv (RepVGG, Ding et al. 2021, arXiv:2101.03697) without identity branch:
    act(BN(conv3x3(x)) + BN(conv1x1(x))); :meth:`fuse` merges both into one biased 3x3 conv."""

    def __init__(
        self,
        c1: int,
        c2: int,
        k: int = 3,
        s: int = 1,
        p: int = 1,
        g: int = 1,
        d: int = 1,
        act: bool | nn.Module = True,
    ) -> None:
        super().__init__()
        if k != 3 or p != 1:
            raise ValueError(f"RepConvN needs k=3, p=1 (got k={k}, p={p})")
        self.g, self.c1, self.c2 = g, c1, c2
        self.act = _resolve_act(act)
        self.conv1: Conv | None = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2: Conv | None = Conv(c1, c2, 1, s, p=p - k // 2, g=g, act=False)
        self.conv: nn.Conv2d | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.conv is not None:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @staticmethod
    def _folded(branch: Conv) -> tuple[Tensor, Tensor]:
        scale, shift = bn_scale_shift(branch.bn)
        return branch.conv.weight * scale.reshape(-1, 1, 1, 1), shift

    @torch.no_grad()
    def fuse(self) -> None:
        """Merge the 3x3 and 1x1 branches (with their BNs) into ``self.conv`` (in place)."""
        if self.conv is not None:
            return
        k3, b3 = self._folded(self.conv1)
        k1, b1 = self._folded(self.conv2)
        conv = self.conv1.conv  # reused: same 3x3 geometry, new weight and bias
        conv.weight = nn.Parameter(k3 + F.pad(k1, [1, 1, 1, 1]), requires_grad=False)
        conv.bias = nn.Parameter(b3 + b1, requires_grad=False)
        self.conv = conv
        self.conv1 = None
        self.conv2 = None


class RepNBottleneck(nn.Module):
    """RepConvN(k[0]) -> Conv(k[1]) with a residual add when ``shortcut`` and c1 == c2."""

    def __init__(
        self,
        c1: int,
        c2: int,
        shortcut: bool = True,
        g: int = 1,
        k: tuple[int, int] = (3, 3),
        e: float = 0.5,
        act: bool | nn.Module = True,
        rep_act: bool | nn.Module | None = None,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = RepConvN(c1, c_, k[0], 1, act=act if rep_act is None else rep_act)
        self.cv2 = Conv(c_, c2, k[1], 1, g=g, act=act)
        self.add = shortcut and c1 == c2

    def forward(self, x: Tensor) -> Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class RepNCSP(nn.Module):
    """CSP block (Wang et al. 2020, arXiv:1911.11929) with ``n`` RepNBottlenecks."""

    def __init__(
        self,
        c1: int,
        c2: int,
        n: int = 1,
        shortcut: bool = True,
        g: int = 1,
        e: float = 0.5,
        act: bool | nn.Module = True,
        rep_act: bool | nn.Module | None = None,
    ) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1, act=act)
        self.cv2 = Conv(c1, c_, 1, 1, act=act)
        self.cv3 = Conv(2 * c_, c2, 1, act=act)
        self.m = nn.Sequential(
            *(RepNBottleneck(c_, c_, shortcut, g, e=1.0, act=act, rep_act=rep_act) for _ in range(n))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.cv3.forward_concat([self.m(self.cv1(x)), self.cv2(x)])


def _elan_forward(block: RepNCSPELAN4 | ELAN1, x: Tensor) -> Tensor:
    """Forward of the ELAN blocks: cv1's two halves, two chained stages (cv2, cv3) on the second
    half, all four concatenated into cv4."""
    y = list(block.cv1(x).chunk(2, 1))
    y.append(block.cv2(y[-1]))
    y.append(block.cv3(y[-1]))
    return block.cv4.forward_concat(y)


class RepNCSPELAN4(nn.Module):
    """GELAN block: 1x1 to c3, split in halves, two (RepNCSP(c5) -> 3x3) stages on the second half,
    concat [half1, half2, stage1, stage2] (c3 + 2*c4 channels) -> 1x1 to c2."""

    def __init__(
        self,
        c1: int,
        c2: int,
        c3: int,
        c4: int,
        c5: int = 1,
        act: bool | nn.Module = True,
        rep_act: bool | nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1, act=act)
        rep = {"act": act, "rep_act": rep_act}
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, c5, **rep), Conv(c4, c4, 3, 1, act=act))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, c5, **rep), Conv(c4, c4, 3, 1, act=act))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return _elan_forward(self, x)


class ELAN1(nn.Module):
    """Light ELAN block of gelan-t/s: like RepNCSPELAN4 with plain 3x3 Convs as stages."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, act: bool | nn.Module = True) -> None:
        super().__init__()
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1, act=act)
        self.cv2 = Conv(c3 // 2, c4, 3, 1, act=act)
        self.cv3 = Conv(c4, c4, 3, 1, act=act)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return _elan_forward(self, x)


class AConv(nn.Module):
    """Downsample: 2x2 average pool (stride 1) -> Conv 3x3 stride 2. H -> floor((H - 2) / 2) + 1."""

    def __init__(self, c1: int, c2: int, act: bool | nn.Module = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.cv1(avg_pool_2x2(x))


class ADown(nn.Module):
    """Downsample: 2x2 average pool (stride 1), then half the channels through Conv 3x3 s2 and the other
    half through max-pool 3x3 s2 -> Conv 1x1; outputs concatenated (c2 // 2 each)."""

    def __init__(self, c1: int, c2: int, act: bool | nn.Module = True) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1, act=act)
        self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x = avg_pool_2x2(x)
        x1, x2 = x.chunk(2, 1)
        x1 = self.cv1(x1)
        x2 = self.cv2(F.max_pool2d(x2, 3, 2, 1))
        return torch.cat((x1, x2), 1)


class SP(nn.Module):
    """Max pool with stride 1 and 'same' padding (the SPP pyramid step)."""

    def __init__(self, k: int = 3, s: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=k, stride=s, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


class SPPELAN(nn.Module):
    """SPP-ELAN: 1x1 to c3, three chained 5x5 max pools, concat of the four (4*c3) -> 1x1 to c2."""

    def __init__(self, c1: int, c2: int, c3: int, act: bool | nn.Module = True) -> None:
        super().__init__()
        self.c = c3
        self.cv1 = Conv(c1, c3, 1, 1, act=act)
        self.cv2 = SP(5)
        self.cv3 = SP(5)
        self.cv4 = SP(5)
        self.cv5 = Conv(4 * c3, c2, 1, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        y = [self.cv1(x)]
        for m in (self.cv2, self.cv3, self.cv4):
            y.append(m(y[-1]))
        return self.cv5.forward_concat(y)


class CBLinear(nn.Module):
    """Routing conv of the PGI auxiliary branch (CBNet-style, Liang et al. 2021, arXiv:2107.00420): one
    biased conv to sum(c2s) channels, returned as a tuple of maps with c2s[i] channels."""

    def __init__(
        self, c1: int, c2s: list[int], k: int = 1, s: int = 1, p: int | None = None, g: int = 1
    ) -> None:
        super().__init__()
        self.c2s = [int(c) for c in c2s]
        self.conv = nn.Conv2d(c1, sum(self.c2s), k, s, autopad(k, p), groups=g, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return self.conv(x).split(self.c2s, dim=1)


class CBFuse(nn.Module):
    """Sum of ``xs[-1]`` and ``xs[i][idx[i]]`` (nearest-resized to ``xs[-1]``'s size) for every i."""

    def __init__(self, idx: list[int]) -> None:
        super().__init__()
        self.idx = [int(i) for i in idx]

    def forward(self, xs: list) -> Tensor:
        target = xs[-1]
        if len(xs) - 1 != len(self.idx):
            raise ValueError(f"CBFuse expects {len(self.idx) + 1} inputs, got {len(xs)}")
        size = target.shape[2:]
        res = [F.interpolate(x[self.idx[i]], size=size, mode="nearest") for i, x in enumerate(xs[:-1])]
        return torch.sum(torch.stack(res + [target]), dim=0)


class Concat(nn.Module):
    """torch.cat of a list of maps along ``dimension``."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[Tensor]) -> Tensor:
        return torch.cat(x, self.d)


class Silence(nn.Module):
    """Identity placeholder (the input image as layer 0 of PGI models)."""

    def forward(self, x: Tensor) -> Tensor:
        return x
