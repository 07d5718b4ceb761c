"""Training options (``yolov9k train``, ``yolov9k.train(**overrides)``), hyperparameters included.

The hyperparameters are those of the official ``data/hyps/hyp.scratch-high.yaml`` with its values as
defaults, plus ``label_smoothing`` (a ``train.py`` flag there). Five of them have no effect in YOLOv9
(:data:`NO_EFFECT`): they are refused when given as options and ignored with one warning when a hyp
file holds them, so an official hyp file loads unchanged.

:func:`resolve_config` is the one way in: API keywords, ``key=value`` strings
(:func:`parse_cli_overrides`) and hyp files all end there, checked against :data:`TRAIN_OPTIONS`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from yolov9k.errors import ConfigError, InputError, InputNotFoundError, OptionError
from yolov9k.options import limits
from yolov9k.options.schema import Option, suggest

__all__ = [
    "TRAIN_OPTIONS",
    "HYP_OPTIONS",
    "DEFAULTS",
    "HYP_DEFAULTS",
    "HYP_KEYS",
    "HYP_SCRATCH_HIGH",
    "NO_EFFECT",
    "PATH_OPTIONS",
    "resolve_config",
    "parse_cli_overrides",
    "hyp_from_config",
    "load_hyp",
]

LOGGER = logging.getLogger("yolov9k")
HYP = "hyperparameters"
EPOCHS = f"[0, {limits.MAX_EPOCHS}]"

# Shared with the other commands (yolov9k.options.verbs): one rule per option wherever it appears.
IMGSZ = Option("imgsz", "int", 640, "image size in pixels (long side; rounded up to a multiple of the max "
               "stride)", f"[1, {limits.MAX_IMGSZ}]")  # fmt: skip
BATCH = Option("batch", "int", 16, "images per batch", f"[1, {limits.MAX_BATCH}]")
WORKERS = Option("workers", "int", 8, "dataloader worker processes (0: load in the main process)",
                 f"[0, {limits.MAX_WORKERS}]")  # fmt: skip
CONF = Option("conf", "float", 0.001, "confidence threshold", "[0, 1]")
IOU = Option("iou", "float", 0.7, "NMS IoU threshold", "[0, 1]")
MAX_DET = Option("max_det", "int", 300, "detections kept per image", f"[1, {limits.MAX_DET}]")
DEVICE = Option("device", "str", None, "cpu, cuda, cuda:N or N (default: CUDA when available)", nullable=True)
SEED = Option("seed", "int", 0, "random seed", f"[0, {limits.MAX_SEED}]")
PROJECT = Option(
    "project", "path", None, "results go to <project>/<name> (none: runs/<command>)", nullable=True
)
NAME = Option("name", "str", None, "run folder name (none: exp, exp2, ...)", nullable=True)

# fmt: off
_RUN: tuple[Option, ...] = (
    # what to train on
    Option("model", "path", "gelan-t", "zoo name (yolov9k.MODELS), model yaml, or checkpoint to start from"),
    Option("data", "path", None, "dataset yaml (a dict from Python); none = the generated demo data set",
           nullable=True, mapping=True),
    Option("pretrained", "path", None, "weights (checkpoint) loaded into a config-built model",
           nullable=True),
    # schedule
    Option("epochs", "int", 100, "epochs to train for (on resume: may be raised to extend a finished run)",
           f"[1, {limits.MAX_EPOCHS}]"),
    IMGSZ,
    BATCH.but(help="total batch size over all DDP ranks"),
    Option("nbs", "int", 64, "nominal batch size: gradients are accumulated up to it",
           f"[1, {limits.MAX_BATCH}]"),
    Option("optimizer", "choice", "SGD", "optimizer (SGD: with Nesterov momentum)",
           choices=("SGD", "Adam", "AdamW")),
    Option("cos_lr", "bool", False, "cosine LR schedule (official one_cycle) instead of linear"),
    Option("close_mosaic", "int", 15, "turn mosaic/mixup off for the last N epochs (0 = never)", EPOCHS),
    Option("clip_grad", "float", 10.0, "max gradient norm (after unscaling); 0 = no clipping", "[0, inf)"),
    Option("ema_decay", "float", 0.9999, "EMA decay d of ModelEMA", "[0, 1]"),
    Option("ema_tau", "float", 2000.0, "EMA warm-up constant: decay = d * (1 - exp(-updates / tau))",
           "(0, inf)"),
    Option("patience", "int", 0, "stop once this many epochs passed since the best fitness, checked after "
           "each validation (an epoch without one is never an improvement); 0 = never", EPOCHS),
    # runtime
    DEVICE.but(help="cpu, cuda, cuda:N, N or none (first GPU if present, else CPU)"),
    WORKERS.but(help="dataloader worker processes per rank"),
    SEED.but(help="global seed (data order, augmentation and init)"),
    Option("deterministic", "bool", True, "deterministic algorithms (resume reproduces weights exactly on "
           "CPU)"),
    Option("amp", "choice", "auto", "automatic mixed precision (auto: fp16 on CUDA, off on CPU; true means "
           "auto)", choices=("auto", "fp16", "bf16", False), aliases=((True, "auto"),)),
    Option("channels_last", "choice", "auto", "NHWC model and inputs (auto: on for a CPU with AVX-512 "
           "kernels, where it was measured faster; off elsewhere)", choices=("auto", True, False)),
    Option("compile", "bool", False, "torch.compile the training model"),
    Option("sync_bn", "bool", False, "SyncBatchNorm across DDP ranks (CUDA, torchrun only; a single process "
           "warns that it has no effect)"),
    Option("dist_timeout", "int", 600, "seconds a DDP rank waits for the others before failing with an error "
           "(torchrun only)", "[1, 604800]"),
    Option("cache_dir", "path", None, "folder for label caches when the data folder is not writable",
           nullable=True),
    Option("cache", "choice", False, "keep decoded, resized images: ram (bounded by the available memory, "
           "else disk), disk (.npy files beside the label cache) or false", choices=("ram", "disk", False),
           aliases=((True, "ram"),)),
    Option("rect", "bool", False, "rectangular (aspect-ratio) training batches, no mosaic"),
    Option("max_nan_skips", "int", 100, "stop the run (one line) once more optimizer steps than this were "
           "skipped for NaN/inf losses or gradients (0: at the first)", "[0, 1000000000]"),
    Option("background_only", "bool", False, "allow a train/val split without a single box (on purpose), "
           "with a warning"),
    # validation
    Option("val", "bool", True, "validate during training, every val_period epochs (otherwise only after "
           "the last epoch)"),
    Option("val_period", "int", 1, "validate after every N-th epoch (with val); the last epoch is always "
           "validated", f"[1, {limits.MAX_EPOCHS}]"),
    CONF.but(help="validation confidence threshold"),
    IOU.but(help="validation NMS IoU threshold"),
    MAX_DET.but(help="validation detections kept per image"),
    # output
    PROJECT.but(help="runs go to <project>/<name>; none = runs/train"),
    NAME,
    Option("exist_ok", "bool", False, "reuse an existing run folder (not one a run is using) instead of "
           "making a new one; its results.csv is kept aside as results.N.csv"),
    Option("save_period", "int", 0, "also keep weights/epoch<N>.pt every N epochs (0 = off)", EPOCHS),
    Option("plots", "bool", True, "write results.png, PR curve, confusion matrix and batch images"),
    Option("verbose", "bool", True, "progress bars and log lines"),
    Option("resume", "path", False, "path to a last.pt, or true = the latest run's last.pt", bools=True,
           expect="True or a path to last.pt (False: a new run)"),
    Option("hyp", "path", None, "yaml file (a dict from Python) of hyperparameters (lr0, mosaic, ...); "
           "explicit options win over it", nullable=True, mapping=True),
)

_NO_OBJECTNESS = "the anchor-free YOLOv9 head has no objectness branch"
_NO_ANCHORS = "YOLOv9 is anchor-free and assigns targets with TAL"
# name, official hyp.scratch-high value, meaning, range (or the reason it has no effect)
HYP_OPTIONS: tuple[Option, ...] = (
    Option("lr0", "float", 0.01, "initial learning rate (SGD)", "[0, inf)", group=HYP),
    Option("lrf", "float", 0.01, "final learning rate as a fraction of lr0 (final lr = lr0 * lrf)", "[0, 1]",
           group=HYP),
    Option("momentum", "float", 0.937, "SGD momentum (Adam beta1)", "[0, 1)", group=HYP),
    Option("weight_decay", "float", 0.0005, "optimizer weight decay (conv/linear weights only)", "[0, inf)",
           group=HYP),
    Option("warmup_epochs", "float", 3.0, "warm-up length in epochs (fractions allowed; 0 = none)",
           f"[0, {limits.MAX_EPOCHS}]", group=HYP),
    Option("warmup_momentum", "float", 0.8, "momentum at the start of warm-up", "[0, 1)", group=HYP),
    Option("warmup_bias_lr", "float", 0.1, "bias learning rate at the start of warm-up", "[0, inf)",
           group=HYP),
    Option("box", "float", 7.5, "box (CIoU) loss gain", "[0, inf)", group=HYP),
    Option("cls", "float", 0.5, "classification (BCE) loss gain", "[0, inf)", group=HYP),
    Option("cls_pw", "float", 1.0, "BCE positive weight of the class loss", "[0, inf)", group=HYP),
    Option("obj", "float", 0.7, "objectness loss gain of YOLOv5/v7", group=HYP, no_effect=_NO_OBJECTNESS),
    Option("obj_pw", "float", 1.0, "objectness BCE positive weight of YOLOv5/v7", group=HYP,
           no_effect=_NO_OBJECTNESS),
    Option("dfl", "float", 1.5, "distribution focal loss gain", "[0, inf)", group=HYP),
    Option("iou_t", "float", 0.2, "IoU training threshold of YOLOv5/v7's anchor matching", group=HYP,
           no_effect=_NO_ANCHORS),
    Option("anchor_t", "float", 5.0, "anchor-multiple threshold of YOLOv5/v7's anchor matching", group=HYP,
           no_effect=_NO_ANCHORS),
    Option("fl_gamma", "float", 0.0, "focal loss gamma of the class loss (0 = plain BCE; official FocalLoss "
           "with alpha 0.25 above 0)", "[0, 10]", group=HYP),
    Option("hsv_h", "float", 0.015, "HSV hue gain (fraction of the hue circle)", "[0, 1]", group=HYP),
    Option("hsv_s", "float", 0.7, "HSV saturation gain (fraction)", "[0, 1]", group=HYP),
    Option("hsv_v", "float", 0.4, "HSV value gain (fraction)", "[0, 1]", group=HYP),
    Option("degrees", "float", 0.0, "random rotation range (+/- degrees)", "[0, 180]", group=HYP),
    Option("translate", "float", 0.1, "random translation (+/- fraction of the output size)", "[0, 1]",
           group=HYP),
    Option("scale", "float", 0.9, "random scale gain (+/- fraction; below 1 so the gain stays positive)",
           "[0, 1)", group=HYP),
    Option("shear", "float", 0.0, "random shear (+/- degrees)", "[0, 90)", group=HYP),
    Option("perspective", "float", 0.0, "random perspective (+/- fraction; the official range)", "[0, 0.001]",
           group=HYP),
    Option("flipud", "float", 0.0, "probability of an up-down flip", "[0, 1]", group=HYP),
    Option("fliplr", "float", 0.5, "probability of a left-right flip", "[0, 1]", group=HYP),
    Option("mosaic", "float", 1.0, "probability of a 4-image mosaic", "[0, 1]", group=HYP),
    Option("mixup", "float", 0.15, "probability of mixup (with a second mosaic)", "[0, 1]", group=HYP),
    Option("copy_paste", "float", 0.3, "segment copy-paste probability of the official loader", group=HYP,
           no_effect="it pastes polygon segments, and detection labels are boxes"),
    Option("label_smoothing", "float", 0.0, "label smoothing epsilon: class targets t of foreground anchors "
           "become t * (1 - eps) + eps / 2 (yolov5's smooth_BCE; see 'Label smoothing' in docs/options.md)",
           "[0, 1]", group=HYP),
)
# fmt: on

TRAIN_OPTIONS: tuple[Option, ...] = _RUN + HYP_OPTIONS
_TABLE = {o.name: o for o in TRAIN_OPTIONS}
NO_EFFECT: dict[str, str] = {o.name: o.no_effect for o in TRAIN_OPTIONS if o.no_effect}
DEFAULTS: dict[str, Any] = {o.name: o.default for o in TRAIN_OPTIONS if not o.no_effect}
HYP_KEYS: tuple[str, ...] = tuple(o.name for o in HYP_OPTIONS if not o.no_effect)
HYP_DEFAULTS: dict[str, float] = {k: DEFAULTS[k] for k in HYP_KEYS}
# The official hyp.scratch-high.yaml (and label_smoothing), the no-effect entries included.
HYP_SCRATCH_HIGH: dict[str, float] = {o.name: o.default for o in HYP_OPTIONS}
PATH_OPTIONS = frozenset(o.name for o in TRAIN_OPTIONS if o.kind == "path")
MAX_HYP_FILE_BYTES = 1 << 20


def load_hyp(hyp: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any]:
    """The hyperparameters of a hyp yaml file (or a dict), checked; entries with no effect in YOLOv9
    (``obj``, ``iou_t``, ...) are dropped with one warning that names them all.

    A file's values are read as text and parsed like the command line's (decimal: ``1e-3`` is a
    number, ``010`` is 10).

    Raises:
        InputNotFoundError: no such file. InputError: not a flat yaml mapping of values.
        OptionError: an unknown key (with the closest ones) or a value out of range.
    """
    if hyp is None:
        return {}
    where = "hyp"
    if isinstance(hyp, Mapping):
        raw: Mapping[str, Any] = hyp
        text_values = False
    else:
        path = Path(hyp).expanduser()
        where = f"hyp file {path}"
        if not path.is_file():
            raise InputNotFoundError(f"hyp file not found: {path}")
        if path.stat().st_size > MAX_HYP_FILE_BYTES:
            raise InputError(f"{where} is larger than {MAX_HYP_FILE_BYTES} bytes: not a hyp file")
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # all values text
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise InputError(f"{where} is not valid yaml: {str(e).splitlines()[0]}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise InputError(f"{where} must be a yaml mapping of name: value, got {type(loaded).__name__}")
        raw, text_values = loaded, True
    known = {o.name: o for o in HYP_OPTIONS}
    out: dict[str, Any] = {}
    ignored = []
    for key, value in raw.items():
        o = known.get(key)
        if o is None:
            hint = f" in {where}" + suggest(str(key), known)
            raise OptionError.unknown(str(key), value, "hyperparameter", hint)
        if o.no_effect:
            ignored.append(key)
            continue
        if text_values and not isinstance(value, str):
            raise OptionError(key, value, f"in {where}: expected {o.expected()}")
        try:
            out[key] = _check_text_or_value(o, value)
        except OptionError as e:
            raise OptionError(key, value, f"{e.reason} (in {where})") from None
    if ignored:
        LOGGER.warning(
            f"{where}: {', '.join(ignored)} {'has' if len(ignored) == 1 else 'have'} no effect in YOLOv9 "
            "(ignored; docs/options.md says why)"
        )
    return out


def _check_text_or_value(o: Option, value: Any) -> Any:
    """A training option's value from Python: the value itself, or its text (as in a hyp file)."""
    if isinstance(value, str) and o.kind in ("int", "float", "bool", "choice"):
        return o.from_text(value, cli=False)
    return o.check(value)


def resolve_config(overrides: Mapping[str, Any] | None = None, base: Mapping[str, Any] | None = None) -> dict:
    """``base`` (default :data:`DEFAULTS`) updated with checked ``overrides``; a new flat dict.

    The entries of ``hyp=`` (a yaml path or a dict) are applied first, explicit keys after them.
    Values may also be given as text, as in a hyp file (``"1e-3"``, ``"true"``).

    Raises:
        OptionError: unknown key (with suggestions), a value of the wrong type or range, or an
            option with no effect in YOLOv9.

    Example:
        >>> cfg = resolve_config({"epochs": 3, "lr0": 0.02})
        >>> cfg["epochs"], cfg["lr0"], cfg["momentum"]
        (3, 0.02, 0.937)
    """
    cfg = dict(DEFAULTS if base is None else base)
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in _TABLE]
    if unknown:
        k = unknown[0]
        more = f" (also unknown: {unknown[1:]})" if len(unknown) > 1 else ""
        raise OptionError.unknown(k, overrides[k], "training option", suggest(k, DEFAULTS) + more)
    checked = {k: _check_text_or_value(_TABLE[k], v) for k, v in overrides.items()}
    cfg.update(load_hyp(checked.get("hyp")))
    cfg.update(checked)
    return cfg


def parse_cli_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "--amp=false", "name=exp"]`` -> ``{"epochs": 3, "amp": False, "name": "exp"}``.

    Each value is read by the option's own parser (decimal numbers, true/false, none); keys may have
    leading dashes and dashes for underscores.

    Raises:
        OptionError: an unknown key or a value the option refuses (named as on the command line).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in _TABLE:
            raise OptionError.unknown(key, text, "training option", suggest(key, DEFAULTS), cli=True)
        out[key] = _TABLE[key].from_text(text)
    return out


def hyp_from_config(cfg: Mapping[str, Any]) -> dict[str, float]:
    """The hyperparameter entries of a resolved config (what the data pipeline and the loss read)."""
    return {k: float(cfg[k]) for k in HYP_KEYS}
