"""Detection heads: DFL decoding, DDetect (GELAN) and DualDDetect (YOLOv9 with the PGI auxiliary head).

Raw maps: per level (B, 4*reg_max + nc, H, W): distribution logits of the (left, top, right, bottom)
distances in grid units (reg_max bins each), then class logits. Decoded output ``y``: (B, 4 + nc, A)
with xywh boxes in input pixels and sigmoid class scores, A = sum(H*W) over levels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from yolov9k.models.blocks import Conv, make_divisible
from yolov9k.ops.boxes import dist2bbox, make_anchors

__all__ = ["DFL", "DDetect", "DualDDetect"]


class DFL(nn.Module):
    """Integral of the distance distribution (Distribution Focal Loss, Li et al. 2020, arXiv:2006.04388):
    softmax over ``c1`` bins, expectation via a frozen 1x1 conv with weights 0..c1-1.

    (B, 4*c1, A) -> (B, 4, A) in grid units.
    """

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.c1 = c1
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def _branch(ch: tuple[int, ...], nc: int, reg_max: int, act: bool | nn.Module) -> tuple[nn.ModuleList, ...]:
    """The box (grouped 3x3 convs) and class towers of a decoupled head for input channels ``ch``."""
    c2 = make_divisible(max(ch[0] // 4, reg_max * 4, 16), 4)
    c3 = max(ch[0], min(nc * 2, 128))
    box = nn.ModuleList(
        nn.Sequential(
            Conv(x, c2, 3, act=act), Conv(c2, c2, 3, g=4, act=act), nn.Conv2d(c2, 4 * reg_max, 1, groups=4)
        )
        for x in ch
    )
    cls = nn.ModuleList(
        nn.Sequential(Conv(x, c3, 3, act=act), Conv(c3, c3, 3, act=act), nn.Conv2d(c3, nc, 1)) for x in ch
    )
    return box, cls


class _HeadBase(nn.Module):
    """Shared decode and anchor cache of the detection heads."""

    reg_max = 16

    def __init__(self, nc: int, nl: int) -> None:
        super().__init__()
        if nc < 1:
            raise ValueError(f"number of classes must be >= 1, got {nc}")
        self.nc = nc
        self.nl = nl
        self.no = nc + 4 * self.reg_max
        self.register_buffer("stride", torch.zeros(nl), persistent=False)
        self._anchor_key: tuple | None = None
        self._anchors = torch.empty(0)
        self._strides = torch.empty(0)

    def _anchors_for(self, maps: list[Tensor]) -> tuple[Tensor, Tensor]:
        key = (tuple(m.shape[2:] for m in maps), maps[0].dtype, maps[0].device)
        if key != self._anchor_key:
            points, strides = make_anchors(maps, self.stride, 0.5)
            self._anchors, self._strides = points.transpose(0, 1), strides.transpose(0, 1)
            self._anchor_key = key
        return self._anchors, self._strides

    def _decode(self, maps: list[Tensor], dfl: DFL) -> Tensor:
        b = maps[0].shape[0]
        anchors, strides = self._anchors_for(maps)
        box, cls = torch.cat([m.view(b, self.no, -1) for m in maps], 2).split((4 * self.reg_max, self.nc), 1)
        dbox = dist2bbox(dfl(box), anchors.unsqueeze(0), xywh=True, dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)

    @staticmethod
    def _run(box: nn.ModuleList, cls: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        return [torch.cat((box[i](x), cls[i](x)), 1) for i, x in enumerate(xs)]

    @torch.no_grad()
    def _bias_init(self, box: nn.ModuleList, cls: nn.ModuleList, strides: list[float] | None) -> None:
        # Prior of ~5 objects per 640x640 image spread over nc classes (official Detect.bias_init).
        for a, b, s in zip(box, cls, self.stride.tolist() if strides is None else strides):
            a[-1].bias.fill_(1.0)
            b[-1].bias[: self.nc] = math.log(5 / self.nc / (640 / s) ** 2)


class DDetect(_HeadBase):
    """GELAN detection head over ``len(ch)`` levels.

    ``forward(xs)`` returns the raw maps (list of (B, no, H_i, W_i)); :meth:`decode` turns them into y.
    """

    is_dual = False

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), act: bool | nn.Module = True) -> None:
        super().__init__(nc, len(ch))
        self.cv2, self.cv3 = _branch(tuple(ch), nc, self.reg_max, act)
        self.dfl = DFL(self.reg_max)

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        return self._run(self.cv2, self.cv3, xs)

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Raw maps -> (B, 4 + nc, A): xywh pixels + sigmoid class scores."""
        return self._decode(maps, self.dfl)

    def bias_init(self, strides: list[float] | None = None) -> None:
        """Official prior biases for level ``strides`` (default: ``self.stride``)."""
        self._bias_init(self.cv2, self.cv3, strides)


class DualDDetect(_HeadBase):
    """YOLOv9 dual head: inputs are ``nl`` auxiliary-branch levels then ``nl`` main-branch levels.

    Auxiliary head: cv2/cv3/dfl; main head: cv4/cv5/dfl2 (the one kept by reparameterization).
    """

    is_dual = True

    def __init__(self, nc: int = 80, ch: tuple[int, ...] = (), act: bool | nn.Module = True) -> None:
        if len(ch) % 2:
            raise ValueError(f"DualDDetect needs an even number of inputs (aux + main), got {len(ch)}")
        nl = len(ch) // 2
        super().__init__(nc, nl)
        self.cv2, self.cv3 = _branch(tuple(ch[:nl]), nc, self.reg_max, act)
        self.cv4, self.cv5 = _branch(tuple(ch[nl:]), nc, self.reg_max, act)
        self.dfl = DFL(self.reg_max)
        self.dfl2 = DFL(self.reg_max)

    def forward(self, xs: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """``xs`` = aux levels + main levels -> (aux maps, main maps)."""
        return self.forward_aux(xs[: self.nl]), self.forward_main(xs[self.nl :])

    def forward_aux(self, xs: list[Tensor]) -> list[Tensor]:
        return self._run(self.cv2, self.cv3, xs)

    def forward_main(self, xs: list[Tensor]) -> list[Tensor]:
        return self._run(self.cv4, self.cv5, xs)

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Main-branch raw maps -> (B, 4 + nc, A)."""
        return self._decode(maps, self.dfl2)

    def decode_aux(self, maps: list[Tensor]) -> Tensor:
        """Auxiliary-branch raw maps -> (B, 4 + nc, A)."""
        return self._decode(maps, self.dfl)

    def bias_init(self, strides: list[float] | None = None) -> None:
        """Official prior biases of both heads for level ``strides`` (default: ``self.stride``)."""
        self._bias_init(self.cv2, self.cv3, strides)
        self._bias_init(self.cv4, self.cv5, strides)
