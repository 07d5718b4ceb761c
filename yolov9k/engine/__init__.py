"""Training engine: ``train`` / ``Trainer``, the validation loop, options, EMA, optimizer and DDP helpers."""

from __future__ import annotations

from yolov9k.engine.config import DEFAULTS, ConfigError, parse_cli_overrides, resolve_config
from yolov9k.engine.ema import ModelEMA
from yolov9k.engine.trainer import Trainer, train
from yolov9k.engine.validate import validate

__all__ = [
    "DEFAULTS",
    "ConfigError",
    "ModelEMA",
    "Trainer",
    "parse_cli_overrides",
    "resolve_config",
    "train",
    "validate",
]
