"""Model zoo: GELAN and YOLOv9 (PGI) detection models built from the official configs."""

from __future__ import annotations

from yolov9k.models.head import DFL, DDetect, DualDDetect
from yolov9k.models.model import MODELS, DetectionModel, build_model, load_config
from yolov9k.models.parse import REGISTRY, make_activation

__all__ = [
    "MODELS",
    "REGISTRY",
    "DDetect",
    "DFL",
    "DetectionModel",
    "DualDDetect",
    "build_model",
    "load_config",
    "make_activation",
]
