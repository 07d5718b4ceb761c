"""Benchmark baseline: the official YOLOv9 ``non_max_suppression`` algorithm (utils/general.py).

Re-implemented in our own words from a reading of the official function, step for step: candidate
anchors (best class score > conf), xywh -> xyxy, (box, class) pairs or best class, class filter,
full descending sort, ``max_nms`` cut, class offset of 7680 px, a *full* NMS, then the ``max_det``
cut. The official time limit is left out (it would return empty results for late images).

NMS backend: ``torchvision.ops.nms`` when torchvision imports; otherwise ``numpy_nms``, the loop of
torchvision's CPU kernel (for each kept box, one IoU pass over all later boxes) with its inner loop
vectorised in numpy. It is slower than torchvision's C++ by Python overhead per kept box, so
speed-ups against it overstate the gain somewhat; the MISSION figure (~6.6 s for B=32 validation
on 2 cores, with torchvision) is the one to compare with.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from yolov9k.ops.boxes import xywh2xyxy

try:  # pragma: no cover - depends on the environment
    from torchvision.ops import nms as _tv_nms

    NMS_BACKEND = "torchvision"
except Exception:  # noqa: BLE001 - any import failure means "not usable"
    _tv_nms = None
    NMS_BACKEND = "numpy (torchvision CPU algorithm)"


def numpy_nms(boxes: Tensor, scores: Tensor, iou_thres: float) -> Tensor:
    """torchvision.ops.nms semantics: kept indices, score descending; suppress when IoU > thres."""
    b = boxes.detach().cpu().float().numpy()
    order = np.argsort(-scores.detach().cpu().float().numpy(), kind="stable")
    x1, y1, x2, y2 = (b[order, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    removed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(order[i])
        w = np.maximum(np.minimum(x2[i], x2[i + 1 :]) - np.maximum(x1[i], x1[i + 1 :]), 0)
        h = np.maximum(np.minimum(y2[i], y2[i + 1 :]) - np.maximum(y1[i], y1[i + 1 :]), 0)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            removed[i + 1 :] |= inter / (areas[i] + areas[i + 1 :] - inter) > iou_thres
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)


def _nms(boxes: Tensor, scores: Tensor, iou_thres: float) -> Tensor:
    if _tv_nms is not None:
        return _tv_nms(boxes, scores, iou_thres)
    return numpy_nms(boxes, scores, iou_thres)


@torch.no_grad()
def official_style_nms(
    prediction: Tensor,
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    classes: list[int] | None = None,
    agnostic: bool = False,
    multi_label: bool = False,
    max_det: int = 300,
) -> list[Tensor]:
    """prediction (B, 4 + nc, A) -> list of (n, 6) [x1, y1, x2, y2, conf, cls] per image."""
    if isinstance(prediction, (list, tuple)):
        prediction = prediction[0]
    nc = prediction.shape[1] - 4
    max_wh, max_nms = 7680, 30000
    multi_label = multi_label and nc > 1
    is_candidate = prediction[:, 4:].amax(1) > conf_thres
    output = [torch.zeros((0, 6), device=prediction.device)] * prediction.shape[0]
    for b, x in enumerate(prediction):
        x = x.T[is_candidate[b]]
        if not x.shape[0]:
            continue
        box, cls = xywh2xyxy(x[:, :4]), x[:, 4:]
        if multi_label:
            i, j = (cls > conf_thres).nonzero(as_tuple=False).T
            x = torch.cat((box[i], x[i, 4 + j, None], j[:, None].float()), 1)
        else:
            conf, j = cls.max(1, keepdim=True)
            x = torch.cat((box, conf, j.float()), 1)[conf.view(-1) > conf_thres]
        if classes is not None:
            x = x[(x[:, 5:6] == torch.tensor(classes, device=x.device)).any(1)]
        if not x.shape[0]:
            continue
        x = x[x[:, 4].argsort(descending=True)[:max_nms]]
        offset = x[:, 5:6] * (0 if agnostic else max_wh)
        keep = _nms(x[:, :4] + offset, x[:, 4], iou_thres)[:max_det]
        output[b] = x[keep]
    return output
