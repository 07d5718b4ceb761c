"""yolov9k: YOLOv9 (GELAN + PGI) for PyTorch with fused native kernels.

The public API (see README.md): model zoo, checkpoint loading, loss, dispatched ops, and the
train / val / predict / export entry points (imported lazily: they pull in data and plotting code).
"""

from __future__ import annotations

from yolov9k import ops
from yolov9k.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from yolov9k.loss import DetectionLoss
from yolov9k.models import MODELS, DetectionModel, build_model, load_config, model_info, reparameterize
from yolov9k.version import __version__

# Entry points that pull in data loading, plotting and export code: imported on first use.
_LAZY = {
    "train": "yolov9k.engine",
    "val": "yolov9k.api",
    "predict": "yolov9k.api",
    "export": "yolov9k.api",
    "convert": "yolov9k.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'yolov9k' has no attribute {name!r}")


__all__ = [
    "MODELS",
    "CheckpointError",
    "UnsafeCheckpointError",
    "DetectionLoss",
    "DetectionModel",
    "__version__",
    "build_model",
    "convert",
    "export",
    "load_checkpoint",
    "load_config",
    "load_model",
    "model_info",
    "ops",
    "predict",
    "reparameterize",
    "save_checkpoint",
    "train",
    "val",
]
