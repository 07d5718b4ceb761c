"""Box utilities shared by the model head, loss, assigner, NMS and data code.

Conventions: ``xyxy`` = (x1, y1, x2, y2) corners, ``xywh`` = (cx, cy, w, h) centre and size; units
are whatever the caller uses (pixels in the model and loss, normalized in labels). Arithmetic
follows the order of the official YOLOv9 code so that results agree to the last float32 bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from yolov9k.ops import _dispatch

__all__ = [
    "xywh2xyxy",
    "xyxy2xywh",
    "box_area",
    "box_iou",
    "box_iou_reference",
    "box_iou_backward",
    "bbox_iou",
    "make_anchors",
    "dist2bbox",
    "bbox2dist",
]


def xywh2xyxy(x: Tensor) -> Tensor:
    """(..., 4) centre/size boxes -> corner boxes."""
    y = torch.empty_like(x)
    half_w, half_h = x[..., 2] / 2, x[..., 3] / 2
    y[..., 0] = x[..., 0] - half_w
    y[..., 1] = x[..., 1] - half_h
    y[..., 2] = x[..., 0] + half_w
    y[..., 3] = x[..., 1] + half_h
    return y


def xyxy2xywh(x: Tensor) -> Tensor:
    """(..., 4) corner boxes -> centre/size boxes."""
    y = torch.empty_like(x)
    y[..., 0] = (x[..., 0] + x[..., 2]) / 2
    y[..., 1] = (x[..., 1] + x[..., 3]) / 2
    y[..., 2] = x[..., 2] - x[..., 0]
    y[..., 3] = x[..., 3] - x[..., 1]
    return y


def box_area(boxes: Tensor) -> Tensor:
    """Area of (..., 4) xyxy boxes."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


_IOU_BLOCK = 1 << 20  # (row, column) pairs per block: ~40 MB of float32 intermediates


def _row_blocks(n: int, m: int) -> list[slice]:
    """Row slices of an (n, m) IoU matrix with at most ``_IOU_BLOCK`` pairs each (at least one row)."""
    rows = max(1, _IOU_BLOCK // max(m, 1))
    return [slice(i, min(i + rows, n)) for i in range(0, n, rows)]


def _iou_block(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every row of ``a`` with every row of ``b`` (same dtype), the arithmetic of the op."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    ok = union > 0  # else IoU 0; dividing by 1 there keeps 0/0 out of the gradient
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(inter))


def box_iou_reference(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes in PyTorch: the reference of the ``yolov9k::box_iou`` op and the
    ``torch`` backend of :func:`box_iou` (no argument checks).

    Computed in blocks of rows, so that its memory is the output plus ~40 MB (not several N x M
    temporaries), like the native kernels'. Differentiable (autograd through the blocks).

    Args:
        boxes1: Tensor[N, 4] xyxy.
        boxes2: Tensor[M, 4] xyxy.
    Returns:
        Tensor[N, M]: ``inter / (area1 + area2 - inter)``, 0 where the union is not positive. Computed
        in float32 (float64 for float64 input) and returned in the input dtype.
    """
    dtype = boxes1.dtype
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    a, b = boxes1.to(compute), boxes2.to(compute)
    n, m = a.shape[0], b.shape[0]
    blocks = _row_blocks(n, m)
    if len(blocks) <= 1:
        return _iou_block(a, b).to(dtype)
    out = torch.empty(n, m, dtype=dtype, device=a.device)
    for rows in blocks:
        out[rows] = _iou_block(a[rows], b)  # a CopySlices step when gradients are needed
    return out


def box_iou_backward(boxes1: Tensor, boxes2: Tensor, grad: Tensor, needs: tuple[bool, bool]) -> tuple:
    """Gradients of ``sum(grad * box_iou(boxes1, boxes2))`` w.r.t. the boxes, block by block (memory
    as the forward): the autograd formula of the native ``yolov9k::box_iou`` kernels, so that every
    backend gives an IoU loss term the same gradient as :func:`box_iou_reference`.

    Returns:
        (grad of boxes1 or None, grad of boxes2 or None), each in its input's dtype.
    """
    grad1 = torch.zeros_like(boxes1) if needs[0] else None
    grad2 = torch.zeros_like(boxes2) if needs[1] else None
    b = boxes2.detach().requires_grad_(needs[1])
    with torch.enable_grad():
        for rows in _row_blocks(boxes1.shape[0], boxes2.shape[0]):
            a = boxes1[rows].detach().requires_grad_(needs[0])
            inputs = [t for t, need in ((a, needs[0]), (b, needs[1])) if need]
            got = list(torch.autograd.grad(_iou_block_as(a, b, boxes1.dtype), inputs, grad[rows]))
            if needs[0]:
                grad1[rows] = got.pop(0)
            if needs[1]:
                grad2 += got.pop(0)
    return grad1, grad2


def _iou_block_as(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    return _iou_block(a.to(compute), b.to(compute)).to(dtype)


def _native_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return torch.ops.yolov9k.box_iou(boxes1, boxes2)


for _backend in ("cpp", "cuda"):
    _dispatch.register("box_iou", _backend, _native_box_iou, native_op="box_iou")
_dispatch.register("box_iou", "torch", box_iou_reference)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU matrix of xyxy boxes (dispatched: C++ / CUDA kernel, or :func:`box_iou_reference`).

    Args:
        boxes1: Tensor[N, 4] xyxy, floating point.
        boxes2: Tensor[M, 4] xyxy, same device.
    Returns:
        Tensor[N, M] in the input dtype (computed in float32, or float64 for float64 input):
        ``inter / (area1 + area2 - inter)``, 0 where the union is not positive.

    Every backend gives the same values, the same gradient (the native kernels' backward is
    :func:`box_iou_backward`) and the same memory: the output plus at most ~40 MB of temporaries.

    Raises:
        ValueError / TypeError: not (N, 4) floating-point boxes on one device.
    """
    for name, t in (("boxes1", boxes1), ("boxes2", boxes2)):
        if t.dim() != 2 or t.shape[-1] != 4:
            raise ValueError(f"box_iou: {name} must have shape (N, 4), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"box_iou: {name} must be floating point, got {t.dtype}")
    if boxes1.device != boxes2.device:
        raise ValueError(f"box_iou: boxes on different devices ({boxes1.device}, {boxes2.device})")
    _, fn = _dispatch.select("box_iou", boxes1.device)
    return fn(boxes1, boxes2)


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
