"""Training engine: ``train`` / ``Trainer``, the validation loop, EMA, optimizer and DDP helpers (the
training options are ``yolov9k.options``; ``DEFAULTS``, ``resolve_config`` ... are re-exported here)."""

from __future__ import annotations

from yolov9k.engine.ema import ModelEMA
from yolov9k.engine.trainer import Trainer, train
from yolov9k.engine.validate import validate
from yolov9k.errors import ConfigError
from yolov9k.options import DEFAULTS, parse_cli_overrides, resolve_config

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
