"""Box utilities shared by the model head, loss, assigner, NMS and data code (the dispatched
pairwise IoU op is ``yolov9k.ops.box_iou``).

Conventions: ``xyxy`` = (x1, y1, x2, y2) corners, ``xywh`` = (cx, cy, w, h) centre and size; units
are whatever the caller uses (pixels in the model and loss, normalized in labels). Arithmetic
follows the order of the official YOLOv9 code so that results agree to the last float32 bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "xywh2xyxy",
    "xyxy2xywh",
    "box_area",
    "bbox_iou",
    "make_anchors",
    "dist2bbox",
    "bbox2dist",
]


def _empty_like(x: Tensor | np.ndarray) -> Tensor | np.ndarray:
    return torch.empty_like(x) if isinstance(x, Tensor) else np.empty_like(x)


def xywh2xyxy(x: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """(..., 4) centre/size boxes -> corner boxes (a tensor, or a numpy array: the data code's labels,
    a few boxes per image, where torch's per-call overhead costs more than the arithmetic)."""
    y = _empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xyxy2xywh(x: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """(..., 4) corner boxes -> centre/size boxes (a tensor or a numpy array, as ``xywh2xyxy``)."""
    y = _empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def box_area(boxes: Tensor) -> Tensor:
    """Area of (..., 4) xyxy boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def bbox_iou(
    box1: Tensor,
    box2: Tensor,
    xywh: bool = True,
    GIoU: bool = False,  # noqa: N803 - names as in the papers
    DIoU: bool = False,  # noqa: N803
    CIoU: bool = False,  # noqa: N803
    eps: float = 1e-7,
) -> Tensor:
    """Element-wise (broadcast) IoU / GIoU / DIoU / CIoU of (..., 4) boxes; returns (..., 1).

    CIoU: Zheng et al. 2020, "Distance-IoU Loss" (arXiv:1911.08287); the aspect term's weight
    ``alpha`` is treated as a constant (no gradient), as in the official YOLOv9 loss.
    """
    if xywh:
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
        w1_, h1_, w2_, h2_ = w1 / 2, h1 / 2, w2 / 2, h2 / 2
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1_, x1 + w1_, y1 - h1_, y1 + h1_
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2_, x2 + w2_, y2 - h2_, y2 + h2_
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
        w1, h1 = b1_x2 - b1_x1, b1_y2 - b1_y1 + eps
        w2, h2 = b2_x2 - b2_x1, b2_y2 - b2_y1 + eps

    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * (
        torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)
    ).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if not (CIoU or DIoU or GIoU):
        return iou
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)  # enclosing box width
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)  # enclosing box height
    if CIoU or DIoU:
        c2 = cw**2 + ch**2 + eps  # enclosing diagonal squared
        rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4
        if CIoU:
            v = (4 / math.pi**2) * torch.pow(torch.atan(w2 / h2) - torch.atan(w1 / h1), 2)
            with torch.no_grad():
                alpha = v / (v - iou + (1 + eps))
            return iou - (rho2 / c2 + v * alpha)
        return iou - rho2 / c2
    c_area = cw * ch + eps  # GIoU: Rezatofighi et al. 2019 (arXiv:1902.09630)
    return iou - (c_area - union) / c_area


def make_anchors(
    feats: list[Tensor], strides: Tensor | list[float], grid_cell_offset: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Anchor centres of every cell of every level, in grid units, and their strides.

    Args:
        feats: per-level maps (B, C, H_i, W_i); only shape, dtype and device are used.
        strides: stride of each level in pixels.
    Returns:
        (anchor_points Tensor[A, 2] (x, y) in grid cells, stride_tensor Tensor[A, 1]),
        A = sum(H_i * W_i), levels in order, row-major within a level.
    """
    points, stride_list = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for feat, stride in zip(feats, strides):
        h, w = feat.shape[-2:]
        sx = torch.arange(end=w, device=device, dtype=dtype) + grid_cell_offset
        sy = torch.arange(end=h, device=device, dtype=dtype) + grid_cell_offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_list.append(torch.full((h * w, 1), float(stride), dtype=dtype, device=device))
    return torch.cat(points), torch.cat(stride_list)


def dist2bbox(distance: Tensor, anchor_points: Tensor, xywh: bool = True, dim: int = -1) -> Tensor:
    """(left, top, right, bottom) distances from anchor points -> boxes (xywh or xyxy)."""
    lt, rb = torch.split(distance, 2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    if xywh:
        return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)
    return torch.cat((x1y1, x2y2), dim)


def bbox2dist(anchor_points: Tensor, bbox: Tensor, reg_max: int) -> Tensor:
    """xyxy boxes -> (l, t, r, b) distances from anchor points, clamped to [0, reg_max - 0.01]."""
    x1y1, x2y2 = torch.split(bbox, 2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp(0, reg_max - 0.01)
