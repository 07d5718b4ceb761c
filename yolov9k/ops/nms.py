"""Batched NMS and YOLO post-processing: PyTorch references and the dispatched native ops.

Reading order: shared conventions, the references (``batched_nms_reference``,
``postprocess_reference``), the native wrappers, then the public functions ``batched_nms``,
``postprocess`` and ``postprocess_fixed``.

Conventions shared by every backend (the native kernels in ``csrc/*/nms_kernel.*`` follow them to
the bit):

* Boxes are xyxy, in the caller's units (pixels for model outputs). IoU is computed like
  ``yolov9k.ops.box_iou.box_iou_reference`` in float32: ``inter / (area1 + area2 - inter)``, 0 where the union
  is not positive (so boxes with NaN/inf coordinates or zero area never suppress anything). fp16,
  bf16 and float64 inputs are converted to float32 first.
* A box is suppressed when its IoU with a kept, better-ranked box of the same class is
  ``> iou_thres``, the comparison done in float64 as torchvision's CPU kernel does.
* Rank: score descending, ties broken by the lower index (for ``postprocess``: lower anchor, then
  lower class). NaN scores are never kept.

``postprocess`` equals the official YOLOv9 ``non_max_suppression`` (utils/general.py) without its
time limit, with two documented choices:

* An anchor with a NaN class score is dropped entirely (the official ``amax(1) > conf`` does that).
* Different classes never suppress each other. The official code emulates this with a class offset
  of 7680 px; we add the same offset before computing IoU (so the float32 rounding is identical)
  but also require equal classes, which differs from it only for boxes wider than 7680 px.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp
from yolov9k.ops.box_iou import box_iou_reference
from yolov9k.ops.boxes import xywh2xyxy
from yolov9k.options.limits import MAX_DET

__all__ = [
    "MAX_WH",
    "batched_nms",
    "batched_nms_reference",
    "postprocess",
    "postprocess_fixed",
    "postprocess_reference",
]

MAX_WH = 7680.0  # px; per-class coordinate offset of the official batched NMS
_NMS_BLOCK = 32  # candidates the reference decides together (one IoU block per step)


# --------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------


def batched_nms_reference(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thres: float, max_keep: int | None = None
) -> Tensor:
    """Greedy per-class NMS, written for clarity (the oracle of the native kernels).

    Each class is processed on its own (classes never suppress each other), and IoUs are computed
    lazily, only between the boxes kept so far and the remaining boxes of their class: memory stays
    O(N) beyond the inputs (nothing N x N, nothing per kept box that pins other tensors), and the
    work is about the sum over classes of (kept x class size).

    Args:
        boxes: Tensor[N, 4] xyxy, any floating dtype (computed in float32).
        scores: Tensor[N] floating.
        idxs: Tensor[N] integer class (or group) of each box; groups never suppress each other.
        iou_thres: suppress when IoU > iou_thres.
        max_keep: stop after this many kept boxes (``None``: no limit). Greedy NMS keeps boxes in
            rank order, so this equals cutting the full result.
    Returns:
        Tensor[K] int64 indices into the inputs, best score first.
    """
    boxes, scores = boxes.float(), scores.float()
    limit = boxes.shape[0] if max_keep is None else max_keep
    order = _rank_order(scores)
    kept = [
        _greedy_nms_one_class(boxes, members, iou_thres, limit)
        for members in _split_by_class(order, idxs[order])
    ]
    keep = torch.cat([order.new_empty(0), *kept]).sort().values  # back to the global rank order
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices][:limit]


def _rank_order(scores: Tensor) -> Tensor:
    """Indices of the non-NaN scores, score descending, ties by lower index."""
    valid = torch.nonzero(~torch.isnan(scores)).flatten()
    return valid[torch.sort(scores[valid], descending=True, stable=True).indices]


def _split_by_class(order: Tensor, classes: Tensor) -> list[Tensor]:
    """``order`` cut into one index tensor per class, each still in rank order."""
    by_class = torch.sort(classes, stable=True)
    counts = torch.unique_consecutive(by_class.values, return_counts=True)[1]
    return list(order[by_class.indices].split(counts.tolist()))


def _greedy_nms_one_class(boxes: Tensor, members: Tensor, iou_thres: float, max_keep: int) -> Tensor:
    """Greedy NMS over ``members`` (indices of one class, in rank order): the kept indices.

    Works on blocks of the next ``_NMS_BLOCK`` surviving candidates: the greedy decisions inside a
    block come from the block's own IoU matrix, then the block's kept boxes suppress the rest of the
    class. Same result as one box at a time, with far fewer tensor ops; memory O(block x class size).
    """
    keep: list[Tensor] = []
    n_kept = 0
    rest = members
    while rest.numel() > 0 and n_kept < max_keep:
        block, rest = rest[:_NMS_BLOCK], rest[_NMS_BLOCK:]
        kept = block[_greedy_in_rank_order(boxes[block], iou_thres, max_keep - n_kept)]
        keep.append(kept)  # a copy (index tensor), not a view that would pin ``rest``'s storage
        n_kept += kept.numel()
        rest = rest[~_suppresses(boxes[kept], boxes[rest], iou_thres).any(0)]
    return torch.cat([members.new_empty(0), *keep])


def _suppresses(kept: Tensor, others: Tensor, iou_thres: float) -> Tensor:
    """Bool Tensor[len(kept), len(others)]: IoU > iou_thres, compared in float64 like torchvision."""
    return box_iou_reference(kept, others).double() > iou_thres


def _greedy_in_rank_order(boxes: Tensor, iou_thres: float, max_keep: int) -> list[int]:
    """Positions kept by greedy NMS among ``boxes`` (one class, rank order), at most ``max_keep``."""
    suppresses = _suppresses(boxes, boxes, iou_thres).tolist()
    removed = [False] * len(suppresses)
    kept: list[int] = []
    for i, row in enumerate(suppresses):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) == max_keep:
            break
        removed = [r or s for r, s in zip(removed, row)]  # marks only matter for positions after i
    return kept


def _image_candidates(
    x: Tensor, conf_thres: float, multi_label: bool, class_mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Candidates of one image, in the official order (anchor, then class).

    Args:
        x: Tensor[A, 4 + nc] float32, xywh boxes then class scores.
    Returns:
        (boxes Tensor[n, 4] xyxy, scores Tensor[n], classes Tensor[n] int64).
    """
    cls = x[:, 4:]
    keep_anchor = (cls.amax(1) > conf_thres) & ~torch.isnan(cls).any(1)
    x, cls = x[keep_anchor], cls[keep_anchor]
    box = xywh2xyxy(x[:, :4])
    if multi_label:
        i, j = (cls > conf_thres).nonzero(as_tuple=True)
        box, conf = box[i], cls[i, j]
    else:
        conf, j = cls.max(1)
        ok = conf > conf_thres
        box, conf, j = box[ok], conf[ok], j[ok]
    if class_mask is not None:
        ok = class_mask[j]
        box, conf, j = box[ok], conf[ok], j[ok]
    return box, conf, j


def _class_mask(classes: Sequence[int] | Tensor | None, nc: int, device: torch.device) -> Tensor | None:
    """Bool Tensor[nc], True for the classes to keep (ids outside [0, nc) match nothing)."""
    if classes is None:
        return None
    ids = torch.as_tensor(classes, dtype=torch.int64).flatten().cpu()
    mask = torch.zeros(nc, dtype=torch.bool)
    mask[ids[(ids >= 0) & (ids < nc)]] = True
    return mask.to(device)


def postprocess_reference(
    pred: Tensor | Sequence[Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    max_nms: int = 30000,
    multi_label: bool = False,
    agnostic: bool = False,
    classes: Sequence[int] | Tensor | None = None,
) -> list[Tensor]:
    """Official ``non_max_suppression`` steps in plain PyTorch (see ``postprocess`` for the args)."""
    pred = _check_pred(pred, conf_thres, iou_thres, max_det, max_nms)
    nc = pred.shape[1] - 4
    multi_label = multi_label and nc > 1
    mask = _class_mask(classes, nc, pred.device)
    out = []
    for x in pred.float().transpose(1, 2):  # (A, 4 + nc) per image
        box, conf, cls = _image_candidates(x, conf_thres, multi_label, mask)
        order = torch.sort(conf, descending=True, stable=True).indices[:max_nms]
        box, conf, cls = box[order], conf[order], cls[order]
        offset = cls[:, None].float() * (0.0 if agnostic else MAX_WH)
        groups = torch.zeros_like(cls) if agnostic else cls
        keep = batched_nms_reference(box + offset, conf, groups, iou_thres, max_keep=max_det)
        out.append(torch.cat([box[keep], conf[keep, None], cls[keep, None].float()], 1))
    return out


# --------------------------------------------------------------------------------------------------
# Input checks (shared by every backend)
# --------------------------------------------------------------------------------------------------


def _check_pred(
    pred: Tensor | Sequence[Tensor], conf_thres: float, iou_thres: float, max_det: int, max_nms: int
) -> Tensor:
    if isinstance(pred, (list, tuple)):
        if not pred:
            raise ValueError("postprocess: pred is an empty list/tuple")
        pred = pred[0]
    if not isinstance(pred, Tensor):
        raise TypeError(f"postprocess: pred must be a Tensor (B, 4 + nc, A), got {type(pred).__name__}")
    if pred.dim() != 3 or pred.shape[1] < 5:
        raise ValueError(
            f"postprocess: pred must have shape (B, 4 + nc, A) with nc >= 1, got {tuple(pred.shape)}"
        )
    if not pred.is_floating_point():
        raise TypeError(f"postprocess: pred must be floating point, got {pred.dtype}")
    if not 0.0 <= conf_thres <= 1.0:
        raise ValueError(f"postprocess: conf_thres must be in [0, 1], got {conf_thres}")
    if not 0.0 <= iou_thres <= 1.0:
        raise ValueError(f"postprocess: iou_thres must be in [0, 1], got {iou_thres}")
    for name, value, high in (("max_det", max_det, MAX_DET), ("max_nms", max_nms, None)):
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if not whole or value < 1 or (high is not None and value > high):
            bounds = f"[1, {high}]" if high is not None else "[1, inf)"
            raise ValueError(f"postprocess: {name} must be an integer in {bounds}, got {value!r}")
    return pred


def _check_nms_inputs(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thres: float) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"batched_nms: boxes must have shape (N, 4), got {tuple(boxes.shape)}")
    if scores.dim() != 1 or idxs.dim() != 1 or not scores.shape[0] == idxs.shape[0] == boxes.shape[0]:
        raise ValueError(
            f"batched_nms: scores and idxs must have shape (N,) with N = {boxes.shape[0]}, "
            f"got {tuple(scores.shape)} and {tuple(idxs.shape)}"
        )
    if not boxes.is_floating_point() or not scores.is_floating_point():
        raise TypeError(
            f"batched_nms: boxes and scores must be floating point, got {boxes.dtype}, {scores.dtype}"
        )
    if idxs.is_floating_point() or idxs.is_complex() or idxs.dtype == torch.bool:
        raise TypeError(f"batched_nms: idxs must be an integer tensor, got {idxs.dtype}")
    if not boxes.device == scores.device == idxs.device:
        raise ValueError(
            f"batched_nms: tensors on different devices ({boxes.device}, {scores.device}, {idxs.device})"
        )
    if iou_thres != iou_thres:
        raise ValueError("batched_nms: iou_thres is NaN")


# --------------------------------------------------------------------------------------------------
# Native wrappers, fakes and registration
# --------------------------------------------------------------------------------------------------


def _native_batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thres: float, max_keep: int
) -> Tensor:
    return torch.ops.yolov9k.batched_nms(boxes, scores, idxs, float(iou_thres), int(max_keep))


def _reference_batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thres: float, max_keep: int
) -> Tensor:
    return batched_nms_reference(boxes, scores, idxs, iou_thres, None if max_keep < 0 else max_keep)


def _native_postprocess(
    pred: Tensor,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    max_nms: int,
    multi_label: bool,
    agnostic: bool,
    class_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    return torch.ops.yolov9k.postprocess(
        pred,
        float(conf_thres),
        float(iou_thres),
        int(max_det),
        int(max_nms),
        multi_label,
        agnostic,
        class_mask,
    )


def _reference_postprocess(
    pred: Tensor,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    max_nms: int,
    multi_label: bool,
    agnostic: bool,
    class_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    classes = None if class_mask is None else torch.nonzero(class_mask).flatten()
    dets = postprocess_reference(
        pred, conf_thres, iou_thres, max_det, max_nms, multi_label, agnostic, classes
    )
    return _pad(dets, max_det, pred.device)


def _pad(dets: list[Tensor], max_det: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """List of (n_b, 6) -> (Tensor[B, max_det, 6] zero-padded, counts Tensor[B] int64)."""
    out = torch.zeros(len(dets), max_det, 6, dtype=torch.float32, device=device)
    for b, d in enumerate(dets):
        out[b, : len(d)] = d
    return out, torch.tensor([len(d) for d in dets], dtype=torch.int64, device=device)


def _batched_nms_fake(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, max_keep: int = -1
) -> Tensor:
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must be (N, 4)")
    torch._check(scores.dim() == 1 and idxs.dim() == 1, lambda: "scores and idxs must be (N,)")
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


def _postprocess_fake(
    pred: Tensor,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    max_nms: int,
    multi_label: bool,
    agnostic: bool,
    class_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    torch._check(pred.dim() == 3 and pred.shape[1] >= 5, lambda: "pred must be (B, 4 + nc, A)")
    batch = pred.shape[0]
    return (
        pred.new_empty((batch, max_det, 6), dtype=torch.float32),
        pred.new_empty((batch,), dtype=torch.int64),
    )


# Inference-only ops: no autograd. Schemas and argument checks: csrc/nms.cpp, csrc/nms.h.
_dispatch.define(
    "postprocess",
    reference=_reference_postprocess,
    kernel_ops=[KernelOp("yolov9k::postprocess", fake=_postprocess_fake)],
)
_dispatch.define(
    "batched_nms",
    reference=_reference_batched_nms,
    kernel_ops=[KernelOp("yolov9k::batched_nms", fake=_batched_nms_fake)],
)
for _backend in ("cpp", "cuda"):
    _dispatch.register("postprocess", _backend, _native_postprocess, native_op="postprocess")
    _dispatch.register("batched_nms", _backend, _native_batched_nms, native_op="batched_nms")


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def batched_nms(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_thres: float, max_keep: int | None = None
) -> Tensor:
    """Greedy NMS per class (torchvision ``batched_nms`` semantics).

    Args:
        boxes: Tensor[N, 4] xyxy (float32/float16/bfloat16/float64; IoU computed in float32).
        scores: Tensor[N] floating; NaN scores are never kept.
        idxs: Tensor[N] integer class of each box; boxes of different classes never suppress each
            other.
        iou_thres: suppress a box when its IoU with a better kept box is ``> iou_thres``.
        max_keep: optional cap on the number of kept boxes (the best ``max_keep`` of the full result).
    Returns:
        Tensor[K] int64 indices of the kept boxes, score descending, ties by lower index.
    """
    _check_nms_inputs(boxes, scores, idxs, iou_thres)
    if max_keep is not None and max_keep < 0:
        raise ValueError(f"batched_nms: max_keep must be >= 0, got {max_keep}")
    _, fn = _dispatch.select("batched_nms", boxes.device)
    return fn(boxes, scores, idxs, float(iou_thres), -1 if max_keep is None else int(max_keep))


def postprocess_fixed(
    pred: Tensor | Sequence[Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    max_nms: int = 30000,
    multi_label: bool = False,
    agnostic: bool = False,
    classes: Sequence[int] | Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``postprocess`` with fixed-size outputs (no host sync on CUDA, CUDA-graph capturable).

    Returns:
        (dets Tensor[B, max_det, 6] float32 [x1, y1, x2, y2, conf, cls], rows past the count are 0;
        counts Tensor[B] int64, the number of detections of each image).
    """
    pred = _check_pred(pred, conf_thres, iou_thres, max_det, max_nms)
    mask = _class_mask(classes, pred.shape[1] - 4, pred.device)
    _, fn = _dispatch.select("postprocess", pred.device)
    return fn(
        pred, conf_thres, iou_thres, int(max_det), int(max_nms), bool(multi_label), bool(agnostic), mask
    )


def postprocess(
    pred: Tensor | Sequence[Tensor],
    conf_thres: float = 0.25,
    iou_thres: float = 0.45,
    max_det: int = 300,
    max_nms: int = 30000,
    multi_label: bool = False,
    agnostic: bool = False,
    classes: Sequence[int] | Tensor | None = None,
) -> list[Tensor]:
    """Detections of a YOLO eval output: the official ``non_max_suppression``, without time limit.

    Steps: anchors whose best class score is ``> conf_thres``; xywh -> xyxy; with ``multi_label``
    every (box, class) pair with score ``> conf_thres``, else the best class; the ``classes``
    filter; the ``max_nms`` best by score; class-aware NMS (class-agnostic with ``agnostic``);
    the first ``max_det`` kept.

    Args:
        pred: Tensor[B, 4 + nc, A] = the model's eval output (xywh pixels, then sigmoid scores),
            any floating dtype (computed in float32). A list/tuple is replaced by its element 0, as
            the official code does. PGI pitfall: the official *dual* model returns
            ``[y_aux, y_main]`` in eval; pass ``y_main`` explicitly (element 0 would be the
            auxiliary branch). Our models return the main-branch tensor directly.
        conf_thres: score threshold in [0, 1] (compared in float32, strictly greater).
        iou_thres: NMS IoU threshold in [0, 1].
        max_det: detections kept per image.
        max_nms: candidates entering NMS per image (the best by score).
        multi_label: one detection per (box, class) pair above ``conf_thres`` (validation).
        agnostic: NMS across classes.
        classes: keep only these class ids.
    Returns:
        list of B Tensors (n, 6) float32 [x1, y1, x2, y2, conf, cls], score descending.
    """
    dets, counts = postprocess_fixed(
        pred, conf_thres, iou_thres, max_det, max_nms, multi_label, agnostic, classes
    )
    return [d[:n] for d, n in zip(dets, counts.tolist())]
