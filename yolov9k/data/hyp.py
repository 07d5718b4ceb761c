"""Default training hyperparameters: the official YOLOv9 ``data/hyps/hyp.scratch-high.yaml`` values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["HYP_SCRATCH_HIGH", "HYP_HELP", "resolve_hyp"]

# name: (official value, meaning); the meanings are also the CLI help of ``yolov9k train``.
_HYP_TABLE: dict[str, tuple[float, str]] = {
    "lr0": (0.01, "initial learning rate (SGD)"),
    "lrf": (0.01, "final learning rate as a fraction of lr0 (final lr = lr0 * lrf)"),
    "momentum": (0.937, "SGD momentum (Adam beta1)"),
    "weight_decay": (0.0005, "optimizer weight decay (applied to conv/linear weights only)"),
    "warmup_epochs": (3.0, "warm-up length in epochs (fractions allowed)"),
    "warmup_momentum": (0.8, "momentum at the start of warm-up"),
    "warmup_bias_lr": (0.1, "bias learning rate at the start of warm-up"),
    "box": (7.5, "box (CIoU) loss gain"),
    "cls": (0.5, "classification (BCE) loss gain"),
    "cls_pw": (1.0, "BCE positive weight for classes (kept for compatibility)"),
    "obj": (0.7, "objectness gain (unused by the anchor-free head, kept for compatibility)"),
    "obj_pw": (1.0, "objectness BCE positive weight (unused, kept for compatibility)"),
    "dfl": (1.5, "distribution focal loss gain"),
    "iou_t": (0.2, "IoU training threshold (unused by TAL, kept for compatibility)"),
    "anchor_t": (5.0, "anchor-multiple threshold (unused by the anchor-free head)"),
    "fl_gamma": (0.0, "focal loss gamma (0 = plain BCE)"),
    "hsv_h": (0.015, "HSV hue gain (fraction of the hue circle)"),
    "hsv_s": (0.7, "HSV saturation gain (fraction)"),
    "hsv_v": (0.4, "HSV value gain (fraction)"),
    "degrees": (0.0, "random rotation range (+/- degrees)"),
    "translate": (0.1, "random translation (+/- fraction of the output size)"),
    "scale": (0.9, "random scale gain (+/- fraction)"),
    "shear": (0.0, "random shear (+/- degrees)"),
    "perspective": (0.0, "random perspective (+/- fraction), range 0-0.001"),
    "flipud": (0.0, "probability of an up-down flip"),
    "fliplr": (0.5, "probability of a left-right flip"),
    "mosaic": (1.0, "probability of a 4-image mosaic"),
    "mixup": (0.15, "probability of mixup (with a second mosaic)"),
    "copy_paste": (0.3, "segment copy-paste probability (needs polygon labels; no effect on boxes)"),
    "label_smoothing": (0.0, "label smoothing epsilon for the classification targets"),
}
HYP_SCRATCH_HIGH: dict[str, float] = {k: value for k, (value, _) in _HYP_TABLE.items()}
HYP_HELP: dict[str, str] = {k: meaning for k, (_, meaning) in _HYP_TABLE.items()}


def resolve_hyp(hyp: Mapping[str, Any] | None = None, strict: bool = True) -> dict[str, float]:
    """``HYP_SCRATCH_HIGH`` updated with ``hyp``.

    With ``strict`` unknown keys raise ``KeyError`` naming them; otherwise they are kept as given.
    """
    out = dict(HYP_SCRATCH_HIGH)
    if hyp:
        unknown = sorted(set(hyp) - set(out))
        if unknown and strict:
            raise KeyError(f"unknown hyperparameter(s) {unknown}; known: {sorted(out)}")
        out.update({k: float(v) if k in HYP_SCRATCH_HIGH else v for k, v in hyp.items()})
    return out
