"""Model zoo: GELAN and YOLOv9 (PGI) detection models built from the official configs."""

from __future__ import annotations

from yolov9k.models.accelerate import accelerate
from yolov9k.models.head import DFL, DDetect, DualDDetect
from yolov9k.models.model import MODELS, DetectionModel, build_model, load_config
from yolov9k.models.parse import REGISTRY, make_activation
from yolov9k.models.reparam import reparameterize
from yolov9k.models.summary import count_macs, model_info

__all__ = [
    "MODELS",
    "REGISTRY",
    "accelerate",
    "DDetect",
    "DFL",
    "DetectionModel",
    "DualDDetect",
    "build_model",
    "count_macs",
    "load_config",
    "make_activation",
    "model_info",
    "reparameterize",
]
