"""yolov9k: YOLOv9 (GELAN + PGI) for PyTorch with fused native kernels.

The public API (see README.md): model zoo, checkpoint loading, loss, dispatched ops, and the
train / val / predict / export entry points (imported lazily: they pull in data and plotting code).
"""

from __future__ import annotations

from yolov9k import ops
from yolov9k.checkpoint import UnsafeCheckpointError, load_checkpoint, load_model, save_checkpoint
from yolov9k.loss import DetectionLoss
from yolov9k.models import MODELS, DetectionModel, build_model, load_config, model_info, reparameterize

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "UnsafeCheckpointError",
    "DetectionLoss",
    "DetectionModel",
    "__version__",
    "build_model",
    "load_checkpoint",
    "load_config",
    "load_model",
    "model_info",
    "ops",
    "reparameterize",
    "save_checkpoint",
]
