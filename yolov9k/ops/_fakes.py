"""Fake (meta) implementations of the ``yolov9k::`` ops, for torch.compile and export.

Imported by ``_extension`` once the library is loaded; each op's fake lives here so there is one
list of them to keep in step with ``csrc/*.cpp`` schemas.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("yolov9k::box_iou")
def _box_iou_fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be (M, 4)")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))
