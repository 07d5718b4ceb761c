"""Hyperparameters as the data pipeline reads them; the table (defaults, ranges, meanings) is the
option schema's (``yolov9k.options.train.HYP_OPTIONS``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yolov9k.options import HYP_DEFAULTS, HYP_SCRATCH_HIGH

__all__ = ["HYP_SCRATCH_HIGH", "resolve_hyp"]


def resolve_hyp(hyp: Mapping[str, Any] | None = None, strict: bool = True) -> dict[str, float]:
    """The hyperparameter defaults (``yolov9k.options.HYP_DEFAULTS``) updated with ``hyp``.

    With ``strict`` unknown keys raise ``KeyError`` naming them; otherwise they are kept as given.
    """
    out: dict[str, Any] = dict(HYP_DEFAULTS)
    if hyp:
        unknown = sorted(set(hyp) - set(HYP_SCRATCH_HIGH))
        if unknown and strict:
            raise KeyError(f"unknown hyperparameter(s) {unknown}; known: {sorted(HYP_SCRATCH_HIGH)}")
        out.update({k: float(v) if k in HYP_SCRATCH_HIGH else v for k, v in hyp.items()})
    return out
