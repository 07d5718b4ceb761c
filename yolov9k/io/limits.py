"""Upper bounds on what a file may declare, shared by the readers (``yolov9k.io``) and the model
builder (``yolov9k.models.parse``), so both refuse the same hostile values."""

from __future__ import annotations

__all__ = ["MAX_CLASSES"]

MAX_CLASSES = 100_000  # classes of a model or data set, far above any real one
