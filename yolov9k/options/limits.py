"""Bounds of the numeric options that other layers enforce too (``yolov9k.ops.postprocess`` checks
``max_det`` against the same figure). Each is far above any real use and below what would exhaust
memory or overflow before any work starts; ``docs/options.md`` lists every option's range."""

from __future__ import annotations

__all__ = ["MAX_DET", "MAX_IMGSZ", "MAX_BATCH", "MAX_EXPORT_BATCH", "MAX_SEED", "MAX_WORKERS", "MAX_EPOCHS"]

MAX_DET = 100_000  # detections kept per image (the official default is 300, COCO scores 100)
MAX_IMGSZ = 8192  # pixels of an image side (a 8192 x 8192 float input is 0.8 GB)
MAX_BATCH = 4096  # images per batch
MAX_EXPORT_BATCH = 256  # the traced example input of an export (the batch axis is dynamic by default)
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_WORKERS = 128  # dataloader worker processes
MAX_EPOCHS = 100_000  # epochs, and the epoch counts derived from them (patience, close_mosaic, ...)
