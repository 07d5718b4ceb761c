"""Checkpoints: our own format (save / load) and :func:`load_model` for every kind we accept.

Our format is a dict of plain types and tensors, read back with ``torch.load(weights_only=True)``::

    {"format": "yolov9k", "version": 1, "cfg": <model config dict>, "nc": int,
     "names": {idx: name}, "stride": [8.0, 16.0, 32.0], "fused": bool, "state_dict": {...},
     # optional, written by the trainer: "ema", "optimizer", "scaler", "epoch", "rng", "args", ...}

:func:`load_model` also reads official pickled checkpoints (through the restricted unpickler in
:mod:`yolov9k.io.safe_pickle`: nothing from the file is executed) and plain state dicts.
"""

from __future__ import annotations

import functools
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolov9k.io.files import atomic_output
from yolov9k.io.official import OfficialCheckpoint, official_from_object
from yolov9k.io.safe_pickle import Record, UnsafeCheckpointError, is_torch_zip, read_torch_zip

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "UnsafeCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "infer_config",
]

CHECKPOINT_FORMAT = "yolov9k"
CHECKPOINT_VERSION = 1
_RESERVED = frozenset({"format", "version", "cfg", "nc", "names", "stride", "state_dict"})
_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device)


# ---------------------------------------------------------------------------------------------
# our format
# ---------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (``.module``) or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _check_plain(value: Any, where: str) -> Any:
    """``value`` with modules replaced by their state dicts; TypeError for what weights_only refuses."""
    if isinstance(value, nn.Module):
        return _unwrap(value).state_dict()
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        return type(value)((k, _check_plain(v, f"{where}[{k!r}]")) for k, v in value.items())
    if isinstance(value, list | tuple):
        items = [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__module__}.{type(value).__qualname__}; only plain "
        "types and tensors can be stored (convert numpy arrays with torch.as_tensor)"
    )


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write ``model`` (+ trainer ``extra`` entries) atomically as a yolov9k checkpoint.

    The file appears complete or not at all: it is written to a temporary file in the same
    folder, flushed and fsynced, then renamed over ``path``. Modules among ``extra`` (e.g.
    ``ema=ema_model``) are stored as state dicts.

    Raises:
        ValueError: ``extra`` reuses a reserved key. TypeError: an entry is not a plain type.
    """
    model = _unwrap(model)
    clash = _RESERVED & extra.keys()
    if clash:
        raise ValueError(f"save_checkpoint: reserved keys passed as extra entries: {sorted(clash)}")
    cfg = getattr(model, "cfg", None)
    if not isinstance(cfg, dict):
        raise TypeError("save_checkpoint needs a yolov9k DetectionModel (with a .cfg dict)")
    stride = getattr(model, "stride", None)
    ckpt: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "cfg": _check_plain(cfg, "cfg"),
        "nc": int(model.nc),
        "names": {int(k): str(v) for k, v in dict(model.names).items()},
        "stride": [float(s) for s in stride] if stride is not None else None,
        "fused": _is_fused(model),
        "state_dict": model.state_dict(),
    }
    ckpt.update({k: _check_plain(v, k) for k, v in extra.items()})

    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # umask mode; a full disk says so
        torch.save(ckpt, f)
    _fsync_dir(path.parent)
    return path


def _is_fused(model: nn.Module) -> bool:
    """True once ``model.fuse()`` ran: its Conv blocks have dropped their BatchNorm (``bn is None``)."""
    return any(hasattr(m, "bn") and m.bn is None for m in model.modules())


def _looks_fused(sd: Mapping[str, torch.Tensor]) -> bool:
    return not any(".bn." in k for k in sd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a yolov9k checkpoint with ``torch.load(weights_only=True)`` (tensors on CPU).

    Raises:
        ValueError: the file is not a yolov9k checkpoint (official pickles: use :func:`load_model`).
    """
    obj = _read_file(Path(path), allow_official=False)
    if not _is_ours(obj):
        raise ValueError(f"{path} is not a yolov9k checkpoint (no format='yolov9k' entry)")
    return _check_ours(obj, str(path))


def _is_ours(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _check_ours(ckpt: dict[str, Any], where: str) -> dict[str, Any]:
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise ValueError(f"{where}: yolov9k checkpoint version {version!r} is newer than this yolov9k")
    for key, kind in (("cfg", dict), ("nc", int), ("state_dict", Mapping)):
        if not isinstance(ckpt.get(key), kind):
            raise ValueError(f"{where}: yolov9k checkpoint entry {key!r} is missing or malformed")
    return ckpt


# ---------------------------------------------------------------------------------------------
# reading any file
# ---------------------------------------------------------------------------------------------


def _read_file(path: Path, allow_official: bool = True) -> Any:
    """Unpickle ``path`` safely: ``weights_only=True`` first, the restricted unpickler for the
    pickled-module zips that it refuses (official checkpoints)."""
    if not path.is_file():
        hint = " (an untrained zoo model comes from yolov9k.build_model)" if path.suffix == "" else ""
        raise FileNotFoundError(f"checkpoint not found: {path}{hint}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise ValueError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # pickled objects (weights_only refuses them): official checkpoint or foreign content
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        if isinstance(e, FileNotFoundError | PermissionError):
            raise
        reason = str(e).split(". ")[0][:160]  # torch's own messages run on for several sentences
        raise ValueError(f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}") from None
    if not is_torch_zip(path):
        raise ValueError(
            f"{path} is a legacy (non-zip) torch.save file with pickled objects, which yolov9k does not "
            "read (plain legacy state dicts are fine); re-save its state_dict with a current torch"
        )
    if not allow_official:
        raise ValueError(
            f"{path} holds pickled Python objects (an official YOLOv9 checkpoint?), not a yolov9k "
            "checkpoint; read it with yolov9k.load_model"
        )
    return read_torch_zip(path)


# ---------------------------------------------------------------------------------------------
# load_model
# ---------------------------------------------------------------------------------------------


@dataclass
class _Weights:
    """Weights and metadata from any supported source, before a model is built."""

    state_dict: dict[str, torch.Tensor]
    cfg: dict[str, Any] | str | None = None
    nc: int | None = None
    names: dict[int, str] | None = None
    stride: list[float] | None = None
    fused: bool = False


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _clean_keys(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        out[k] = v
    return out


def _weights_from(obj: Any, where: str) -> _Weights:
    """Classify an unpickled object: official checkpoint, ours, or a (wrapped) state dict."""
    if isinstance(obj, OfficialCheckpoint):
        off = obj
    elif isinstance(obj, Record) or (
        isinstance(obj, dict) and any(isinstance(v, Record) for v in obj.values())
    ):
        off = official_from_object(obj)
    elif _is_ours(obj):
        ck = _check_ours(obj, where)
        sd = ck.get("ema") if _is_state_dict(ck.get("ema")) else ck["state_dict"]
        names = dict(ck["names"]) if ck.get("names") else None
        fused = bool(ck.get("fused"))
        return _Weights(_clean_keys(sd), ck["cfg"], ck["nc"], names, ck.get("stride"), fused)
    elif _is_state_dict(obj):
        return _Weights(_clean_keys(obj))
    elif isinstance(obj, Mapping):
        for key in ("ema", "model", "state_dict", "model_state_dict"):
            if _is_state_dict(obj.get(key)):
                return _Weights(_clean_keys(obj[key]))
        if "param_groups" in obj:
            raise ValueError(f"{where} holds an optimizer state, not model weights")
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise ValueError(f"{where}: found no model weights in this dict (keys: {keys})")
    else:
        raise ValueError(f"{where}: cannot load a model from a {type(obj).__name__}")
    stride = off.stride.tolist() if off.stride is not None else None
    return _Weights(dict(off.state_dict), off.cfg, off.nc, off.names, stride)


_HEAD_CLS = re.compile(r"model\.(\d+)\.cv3\.0\.2\.weight")


def _nc_from_state_dict(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Classes = output channels of the (last) head's first class-branch conv."""
    hits = [(int(m.group(1)), v) for k, v in sd.items() if (m := _HEAD_CLS.fullmatch(k))]
    return int(max(hits, key=lambda h: h[0])[1].shape[0]) if hits else None


@functools.lru_cache(maxsize=32)
def _zoo_layer_count(name: str) -> int:
    from yolov9k.models import load_config

    cfg = load_config(name)
    return len(cfg["backbone"]) + len(cfg["head"])


@functools.lru_cache(maxsize=32)
def _signature_of_zoo_model(name: str, nc: int, fused: bool) -> dict[str, tuple[int, ...]]:
    """Parameter names -> shapes of a zoo model (built on CPU: the meta device is slower here,
    its first use pulls in torch's decompositions)."""
    from yolov9k.models import build_model

    model = build_model(name, num_classes=nc)
    if fused:
        model.fuse()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_config(state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None) -> str:
    """The zoo model (``yolov9k.MODELS`` name) whose parameter names and shapes match ``state_dict``.

    Raises:
        ValueError: no zoo config (or more than one) matches.
    """
    from yolov9k.models import MODELS

    sd = _clean_keys(state_dict)
    nc = num_classes or _nc_from_state_dict(sd)
    if nc is None:
        raise ValueError("cannot infer the model: no detection head (model.N.cv3.0.2.weight) in the weights")
    want = {k: tuple(v.shape) for k, v in sd.items()}
    fused = _looks_fused(sd)
    n_layers = 1 + max((int(k.split(".")[1]) for k in sd if re.match(r"model\.\d+\.", k)), default=-1)
    matches = []
    for name in MODELS:
        if _zoo_layer_count(name) != n_layers:  # cheap filter before building
            continue
        if _signature_of_zoo_model(name, nc, fused) == want:
            matches.append(name)
    if len(matches) != 1:
        found = "no zoo config" if not matches else f"several zoo configs ({matches})"
        raise ValueError(f"cannot infer the model config: {found} matches these weights; pass cfg=")
    return matches[0]


def _build(cfg: dict[str, Any] | str | os.PathLike, nc: int | None) -> nn.Module:
    from yolov9k.models import build_model

    try:
        return build_model(cfg, num_classes=nc)
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:  # a broken yaml can fail anywhere in parsing: report it in one line
        what = "the checkpoint's model config" if isinstance(cfg, dict) else f"model config {cfg!r}"
        raise ValueError(f"cannot build {what}: {type(e).__name__}: {e}") from None


def _load_weights(model: nn.Module, sd: dict[str, torch.Tensor], partial: bool, where: str) -> None:
    own = model.state_dict()
    if partial:  # transfer learning: keep the tensors whose shapes still fit (e.g. not the class convs)
        keep = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
        skipped = len(own) - len(keep)
        if skipped:
            warnings.warn(f"{where}: {skipped}/{len(own)} tensors not loaded (new num_classes)", stacklevel=3)
        sd = keep
    else:
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        shapes = [k for k in own if k in sd and own[k].shape != sd[k].shape]
        if missing or unexpected or shapes:
            parts = [
                f"{label} ({len(keys)}): {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes))
                if keys
            ]
            raise ValueError(f"{where}: the weights do not fit the model config; " + "; ".join(parts))
    model.load_state_dict(sd, strict=not partial)


def load_model(
    source: str | os.PathLike | Mapping[str, Any] | OfficialCheckpoint,
    num_classes: int | None = None,
    cfg: str | os.PathLike | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    fuse: bool = False,
) -> nn.Module:
    """Build a float32 ``DetectionModel`` in eval mode from weights, detecting their format.

    Args:
        source: a file (official pickled checkpoint, yolov9k checkpoint, or a saved state dict) or
            an in-memory dict (state dict or checkpoint dict).
        num_classes: classes of the returned model; if it differs from the checkpoint's, only the
            tensors whose shapes fit are loaded (fine-tuning start) and names are reset.
        cfg: model config (zoo name, yaml path or dict) overriding the checkpoint's; needed for
            plain state dicts unless the zoo config can be inferred from names and shapes.
        device: where the model goes. fuse: fold BN and RepConvN for inference.

    The EMA weights are used when the checkpoint has them (as the official loader does).

    Raises:
        FileNotFoundError, UnsafeCheckpointError (foreign pickled global), ValueError (anything
        that is not a loadable model checkpoint).
    """
    if isinstance(source, str | os.PathLike):
        where = str(source)
        obj = _read_file(Path(source))
    else:
        where = "in-memory weights"
        obj = source
    w = _weights_from(obj, where)
    if cfg is None:
        cfg = w.cfg if w.cfg is not None else infer_config(w.state_dict, num_classes)
    ckpt_nc = w.nc or _nc_from_state_dict(w.state_dict)
    partial = num_classes is not None and ckpt_nc is not None and num_classes != ckpt_nc
    model = _build(cfg, num_classes or ckpt_nc)
    if w.fused or _looks_fused(w.state_dict):  # weights of a fused model: fuse first, then load
        model.fuse()
    _load_weights(model, w.state_dict, partial, where)
    if w.names and not partial:
        if len(w.names) != model.nc:
            raise ValueError(f"{where}: {len(w.names)} class names for {model.nc} classes")
        model.names = dict(w.names)
    if w.stride is not None and [float(s) for s in w.stride] != model.stride.tolist():
        raise ValueError(
            f"{where}: checkpoint strides {w.stride} differ from the model's {model.stride.tolist()}"
        )
    model = model.float().to(device).eval()
    if fuse:
        model.fuse()
    return model
