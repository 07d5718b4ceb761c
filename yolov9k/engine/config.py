"""Training options: one flat table of defaults and meanings, and typed ``key=value`` checking.

``train(**overrides)`` and the CLI (``yolov9k train epochs=10 lr0=0.02``) go through
:func:`resolve_config`: unknown keys raise :class:`ConfigError` with the closest known keys, values
are checked (and, for CLI strings, converted) against the type of each key.

The hyperparameters of the official ``hyp.scratch-high.yaml`` (``yolov9k.data.HYP_SCRATCH_HIGH``) are
keys of the same table, so ``lr0=0.02`` or ``mosaic=0.5`` work like any other option.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from yolov9k.data.hyp import HYP_HELP, HYP_SCRATCH_HIGH

__all__ = [
    "DEFAULTS",
    "HELP",
    "HYP_KEYS",
    "FLAG_KEYS",
    "ConfigError",
    "resolve_config",
    "parse_cli_overrides",
    "hyp_from_config",
]


class ConfigError(ValueError):
    """A training option that does not exist or has a value of the wrong type or range."""


# fmt: off
# name: (default, meaning); the meanings are also the CLI help of ``yolov9k train``.
_TRAIN_OPTIONS: dict[str, tuple[Any, str]] = {
    # what to train on
    "model":            ("gelan-t", "zoo name (yolov9k.MODELS), model yaml, or checkpoint to start from"),
    "data":             (None, "dataset yaml/dict; None = the generated demo data set"),
    "pretrained":       (None, "optional weights (checkpoint path) loaded into a config-built model"),
    # schedule
    "epochs":           (100, "epochs to train for (on resume: may be raised to extend a finished run)"),
    "imgsz":            (640, "train and val image size in pixels (rounded up to the max stride)"),
    "batch":            (16, "total batch size over all DDP ranks"),
    "nbs":              (64, "nominal batch size: gradients are accumulated up to it"),
    "optimizer":        ("SGD", "SGD (nesterov) | Adam | AdamW"),
    "cos_lr":           (False, "cosine LR schedule (official one_cycle) instead of linear"),
    "close_mosaic":     (15, "turn mosaic/mixup off for the last N epochs (0 = never)"),
    "clip_grad":        (10.0, "max gradient norm (after unscaling); 0 = no clipping"),
    "ema_decay":        (0.9999, "EMA decay d of ModelEMA"),
    "ema_tau":          (2000.0, "EMA warm-up constant: decay = d * (1 - exp(-updates / tau))"),
    "patience":         (0, "stop once this many epochs passed since the best fitness, checked after each "
                            "validation (an epoch without one is never an improvement); 0 = never"),
    # runtime
    "device":           (None, "'cpu', 'cuda', 'cuda:1', or None = first GPU if present else CPU"),
    "workers":          (8, "dataloader workers per rank"),
    "seed":             (0, "global seed (data order, augmentation and init)"),
    "deterministic":    (True, "deterministic algorithms (resume reproduces weights exactly on CPU)"),
    "amp":              ("auto", "'auto' (fp16 on CUDA, off on CPU) | 'fp16' | 'bf16' | False"),
    "channels_last":    ("auto", "NHWC model and inputs: True | False | 'auto' (on for a CPU with AVX-512 "
                                 "kernels, where it was measured faster; off elsewhere)"),
    "compile":          (False, "torch.compile the training model"),
    "sync_bn":          (False, "SyncBatchNorm in DDP (CUDA only)"),
    "dist_timeout":     (600, "seconds a DDP rank waits for the others before failing with an error"),
    "cache_dir":        (None, "folder for label caches when the data folder is not writable"),
    "rect":             (False, "rectangular (aspect-ratio) training batches, no mosaic"),
    "max_nan_skips":    (100, "abort when more optimizer steps than this were skipped for NaN/inf losses"),
    "background_only":  (False, "allow a train/val split without a single box (on purpose), with a warning"),
    # validation
    "val":              (True, "validate during training, every val_period epochs (otherwise only after "
                            "the last epoch)"),
    "val_period":       (1, "validate after every N-th epoch (with val); the last epoch is always validated"),
    "conf":             (0.001, "validation confidence threshold"),
    "iou":              (0.7, "validation NMS IoU threshold"),
    "max_det":          (300, "validation detections kept per image"),
    # output
    "project":          (None, "runs go to <project>/<name>; None = runs/train"),
    "name":             (None, "run folder name; None = exp, exp2, ..."),
    "exist_ok":         (False, "reuse an existing run folder instead of making a new one"),
    "save_period":      (0, "also keep weights/epoch<N>.pt every N epochs (0 = off)"),
    "plots":            (True, "write results.png, PR curve, confusion matrix and batch images"),
    "verbose":          (True, "progress bars and log lines"),
    "resume":           (False, "path to a last.pt, or True = the latest run's last.pt"),
    "hyp":              (None, "yaml file or dict of hyperparameter overrides (lr0, mosaic, ...)"),
}
# fmt: on

HYP_KEYS: tuple[str, ...] = tuple(HYP_SCRATCH_HIGH)
DEFAULTS: dict[str, Any] = {**{k: d for k, (d, _) in _TRAIN_OPTIONS.items()}, **HYP_SCRATCH_HIGH}
HELP: dict[str, str] = {**{k: h for k, (_, h) in _TRAIN_OPTIONS.items()}, **HYP_HELP}

_INT_KEYS = frozenset(
    {"epochs", "imgsz", "batch", "nbs", "close_mosaic", "patience", "workers", "seed", "dist_timeout"}
    | {"max_det", "save_period", "max_nan_skips", "val_period"}
)
_FLOAT_KEYS = frozenset({"clip_grad", "ema_decay", "ema_tau", "conf", "iou", *HYP_KEYS})
_BOOL_KEYS = frozenset(
    {"cos_lr", "deterministic", "compile", "sync_bn", "rect", "val", "exist_ok", "plots"}
    | {"verbose", "background_only"}
)
_CHOICES: dict[str, tuple[Any, ...]] = {
    "optimizer": ("SGD", "Adam", "AdamW"),
    "amp": ("auto", "fp16", "bf16", False),
    "channels_last": ("auto", True, False),
}
# Options that a command-line flag may give alone (``--plots`` = ``--plots true``).
FLAG_KEYS = _BOOL_KEYS | {k for k, choices in _CHOICES.items() if True in choices}
_PATH_KEYS = frozenset({"model", "data", "pretrained", "device", "cache_dir", "project", "name", "hyp"})
_POSITIVE = frozenset({"epochs", "imgsz", "batch", "nbs", "dist_timeout", "max_det", "ema_tau", "val_period"})
_UNIT_RANGE = frozenset({"conf", "iou", "ema_decay", "lrf", "momentum", "warmup_momentum"})


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _coerce(key: str, value: Any) -> Any:
    """``value`` checked (and converted where lossless) for ``key``; ConfigError otherwise."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"option {key}={value!r} ({type(value).__name__}): expected {expected}")

    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise bad("True or False")
        return value
    if key in _INT_KEYS | _FLOAT_KEYS and isinstance(value, str):
        value = _number_from_text(value, bad("an integer" if key in _INT_KEYS else "a number"))
    if key in _INT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float) or float(value) != int(value):
            raise bad("an integer")
        value = int(value)
    elif key in _FLOAT_KEYS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise bad("a finite number")
    elif key in _CHOICES:
        if value is True and key == "amp":
            value = "auto"
        if not isinstance(value, str | bool) or value not in _CHOICES[key]:
            raise bad(f"one of {_CHOICES[key]}")
        return value
    elif key == "resume":
        if not isinstance(value, bool | str | os.PathLike):
            raise bad("True, False or a path to last.pt")
        return str(value) if isinstance(value, os.PathLike) else value
    elif key == "data" or key == "hyp":
        if value is not None and not isinstance(value, str | os.PathLike | Mapping):
            raise bad("a path, a dict or None")
        return str(value) if isinstance(value, os.PathLike) else value
    elif key in _PATH_KEYS:
        if value is not None and not isinstance(value, str | os.PathLike):
            raise bad("a string/path or None")
        return str(value) if isinstance(value, os.PathLike) else value

    if key in _POSITIVE and value <= 0:
        raise bad("a value > 0")
    if key in _UNIT_RANGE and not 0.0 <= value <= 1.0:
        raise bad("a value in [0, 1]")
    if isinstance(value, int | float) and value < 0 and key not in ("seed",):
        raise bad("a value >= 0")
    return value


def _number_from_text(text: str, error: ConfigError) -> float:
    """Any float spelling Python accepts (``1e-3``, ``1E-3``, ``1.0e8``, ``.5``, ``1_000``).

    YAML 1.1, which reads CLI values and hyp files, takes ``1e-3`` (no dot) for a string.
    """
    try:
        return float(text)
    except ValueError:
        raise error from None


def _load_hyp(hyp: str | Mapping[str, Any] | None) -> dict[str, Any]:
    if hyp is None:
        return {}
    if isinstance(hyp, Mapping):
        return dict(hyp)
    path = Path(hyp)
    if not path.is_file():
        raise ConfigError(f"hyp file not found: {path}")
    loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"hyp file {path} is not a yaml mapping")
    return loaded


def resolve_config(overrides: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> dict:
    """``base`` (default :data:`DEFAULTS`) updated with checked ``overrides``; a new flat dict.

    The entries of ``hyp=`` (a yaml path or a dict) are applied first, explicit keys after them.

    Raises:
        ConfigError: unknown key (with suggestions) or a value of the wrong type/range.

    Example:
        >>> cfg = resolve_config({"epochs": 3, "lr0": 0.02})
        >>> cfg["epochs"], cfg["lr0"], cfg["momentum"]
        (3, 0.02, 0.937)
    """
    cfg = dict(DEFAULTS if base is None else base)
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in DEFAULTS]
    if unknown:
        k = unknown[0]
        more = f" (also unknown: {unknown[1:]})" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown training option {k!r}{_suggest(k, DEFAULTS)}{more}")
    hyp = _load_hyp(overrides.get("hyp", None))
    bad_hyp = [k for k in hyp if k not in HYP_KEYS]
    if bad_hyp:
        raise ConfigError(f"unknown hyperparameter {bad_hyp[0]!r} in hyp{_suggest(bad_hyp[0], HYP_KEYS)}")
    for key, value in {**hyp, **overrides}.items():
        cfg[key] = _coerce(key, value)
    return cfg


def parse_cli_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "amp=False", "name=exp"]`` -> ``{"epochs": 3, "amp": False, "name": "exp"}``.

    Values are read as YAML scalars (numbers, true/false, null); path-like keys keep their text.
    The result still has to go through :func:`resolve_config` for key and type checks.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if not key:
            raise ConfigError(f"empty key in {item!r}")
        if key in _PATH_KEYS - {"device"} and text.lower() not in ("none", "null", ""):
            out[key] = text
            continue
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        if key == "amp" and isinstance(value, str) and value.lower() in ("false", "off", "none"):
            value = False
        out[key] = value
    return out


def hyp_from_config(cfg: Mapping[str, Any]) -> dict[str, float]:
    """The hyperparameter entries of a resolved config (what the data pipeline and the loss read)."""
    return {k: float(cfg[k]) for k in HYP_KEYS}
