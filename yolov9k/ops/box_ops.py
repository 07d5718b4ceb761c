"""Dispatched ``box_iou``: the first native op, proving the whole path (C++, CUDA, dispatch)."""

from __future__ import annotations

import torch
from torch import Tensor

from yolov9k.ops import _dispatch, boxes

__all__ = ["box_iou"]


def _native_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return torch.ops.yolov9k.box_iou(boxes1, boxes2)


for _backend in ("cpp", "cuda"):
    _dispatch.register("box_iou", _backend, _native_box_iou, native_op="box_iou")
_dispatch.register("box_iou", "torch", boxes.box_iou)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU matrix of xyxy boxes.

    Args:
        boxes1: Tensor[N, 4] xyxy, floating point.
        boxes2: Tensor[M, 4] xyxy, same device.
    Returns:
        Tensor[N, M] in the input dtype (computed in float32, or float64 for float64 input).
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
