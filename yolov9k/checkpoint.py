"""Checkpoints: our own format (save / load) and :func:`load_model` for every kind we accept.

Our format is a dict of plain types and tensors, read back with ``torch.load(weights_only=True)``::

    {"format": "yolov9k", "version": 1, "cfg": <model config dict>, "nc": int,
     "names": {idx: name}, "stride": [8.0, 16.0, 32.0], "fused": bool, "state_dict": {...},
     # optional, written by the trainer: "ema", "optimizer", "scaler", "epoch", "rng", "args", ...}

:func:`load_model` also reads official pickled checkpoints (through the restricted unpickler in
:mod:`yolov9k.io.safe_pickle`: nothing from the file is executed) and plain state dicts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from yolov9k.errors import InputNotFoundError, IsAFolderError
from yolov9k.io.archive import CheckpointError, open_archive, verify_crcs
from yolov9k.io.files import atomic_output
from yolov9k.io.official import OfficialCheckpoint, official_from_object
from yolov9k.io.safe_pickle import Record, UnsafeCheckpointError, is_torch_zip, read_torch_zip
from yolov9k.models import MODELS, build_model, load_config
from yolov9k.models.parse import MAX_CLASSES

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "UnsafeCheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "infer_config",
    "non_finite_entries",
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


def _plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state dict in the standard (NCHW-contiguous) layout, whatever memory format it
    trained in (a channels_last model's tensors are copied; others are the module's own)."""
    return {k: v.contiguous() for k, v in _unwrap(module).state_dict().items()}


def _check_plain(value: Any, where: str) -> Any:
    """``value`` with modules replaced by their state dicts; TypeError for what weights_only refuses."""
    if isinstance(value, nn.Module):
        return _plain_state_dict(value)
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


def non_finite_entries(obj: Any, where: str = "") -> list[str]:
    """Names of the floating-point tensors in ``obj`` (a module, or nested dicts / lists / tuples of
    tensors: a checkpoint, a state dict) that hold a NaN or an infinity, in order. One max-norm
    reduction (``torch._foreach_norm``) and one host sync per device and dtype: a NaN or inf anywhere
    in a tensor makes its max-norm non-finite (gelan-t + EMA: 20 ms, was 70 ms per tensor, dev CPU)."""
    names: list[str] = []
    tensors: list[torch.Tensor] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, nn.Module):
            value = value.state_dict()
        if isinstance(value, torch.Tensor):
            if (value.is_floating_point() or value.is_complex()) and value.numel():
                names.append(name)
                tensors.append(value.detach())
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(v, f"{name}.{k}" if name else str(k))
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{name}[{i}]")

    walk(obj, where)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    finite = [True] * len(tensors)
    for index in groups.values():
        norms = torch._foreach_norm([tensors[i] for i in index], float("inf"))
        for i, ok in zip(index, torch.stack(norms).isfinite().tolist()):
            finite[i] = ok
    return [n for n, ok in zip(names, finite) if not ok]


def save_checkpoint(path: str | os.PathLike, model: nn.Module, **extra: Any) -> Path:
    """Write ``model`` (+ trainer ``extra`` entries) atomically as a yolov9k checkpoint.

    The file appears complete or not at all: it is written to a temporary file in the same
    folder, flushed and fsynced, then renamed over ``path``. Modules among ``extra`` (e.g.
    ``ema=ema_model``) are stored as state dicts; every state dict in the standard contiguous layout
    (a model trained in channels_last saves the same file as one trained in NCHW).

    A checkpoint is never written with a NaN or an infinity in any floating-point tensor (weights,
    BatchNorm statistics, EMA, optimizer state): such a state is refused and the file left as it was.

    Raises:
        ValueError: ``extra`` reuses a reserved key. TypeError: an entry is not a plain type.
        FloatingPointError: a tensor holds NaN / inf (one line naming the first entries).
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
        "state_dict": _plain_state_dict(model),
    }
    ckpt.update({k: _check_plain(v, k) for k, v in extra.items()})
    bad = non_finite_entries(ckpt)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise FloatingPointError(f"not saving {path}: NaN/inf in {', '.join(bad[:3])}{more}")

    path = Path(path)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # umask mode, durable; a full disk says so
        torch.save(ckpt, f)
    return path


def _is_fused(model: nn.Module) -> bool:
    """True once ``model.fuse()`` ran: its Conv blocks have dropped their BatchNorm (``bn is None``)."""
    return any(hasattr(m, "bn") and m.bn is None for m in model.modules())


def _looks_fused(sd: Mapping[str, torch.Tensor]) -> bool:
    return not any(".bn." in k for k in sd)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a yolov9k checkpoint with ``torch.load(weights_only=True)`` (tensors on CPU).

    Entries are checked against their CRC-32 and the archive's sizes against limits first.

    Raises:
        ValueError (often its subclass CheckpointError): the file is not a readable yolov9k
        checkpoint (official pickles: use :func:`load_model`), with a one-line message.
        FileNotFoundError, PermissionError, IsADirectoryError: the path cannot be read.
    """
    with _only_documented_errors(str(path)):
        obj = _read_file(Path(path), allow_official=False)
        if not _is_ours(obj):
            raise CheckpointError(f"{path} is not a yolov9k checkpoint (no format='yolov9k' entry)")
        return _check_ours(obj, str(path))


_PASSED_THROUGH = (UnsafeCheckpointError, FileNotFoundError, PermissionError, IsADirectoryError)
_MAX_MESSAGE = 300


@contextlib.contextmanager
def _only_documented_errors(where: str) -> Iterator[None]:
    """Funnel every failure into the documented types with a one-line message: the error
    types above pass; ValueErrors are trimmed to one line; anything else (a malformed file can
    raise TypeError, KeyError, RecursionError, MemoryError, ...) becomes a CheckpointError."""
    try:
        yield
    except _PASSED_THROUGH:
        raise
    except ValueError as e:
        text = str(e)
        if "\n" in text or len(text) > _MAX_MESSAGE:
            raise CheckpointError(_one_line(text)) from None
        raise
    except Exception as e:
        raise CheckpointError(
            f"{where}: cannot load this checkpoint: {type(e).__name__}: {_one_line(str(e))}"
        ) from None


def _one_line(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if len(first) <= _MAX_MESSAGE else first[: _MAX_MESSAGE - 3] + "..."


def _is_ours(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _check_ours(ckpt: dict[str, Any], where: str) -> dict[str, Any]:
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{where}: yolov9k checkpoint version {version!r} is newer than this yolov9k")
    for key, kind in (("cfg", dict), ("nc", int), ("state_dict", Mapping)):
        if not isinstance(ckpt.get(key), kind):
            raise CheckpointError(f"{where}: yolov9k checkpoint entry {key!r} is missing or malformed")
    return ckpt


# ---------------------------------------------------------------------------------------------
# reading any file
# ---------------------------------------------------------------------------------------------


def _weights_only_reason(error: BaseException) -> str:
    """The line of torch's long weights-only message that says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return next((line[:160] for line in lines if line.startswith("WeightsUnpickler error")), lines[-1][:160])


def _first_sentence(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0][:limit] if text else type(error).__name__


def _verify_archive(path: Path) -> None:
    """Refuse a zip whose directory promises too much, or any of whose entries fails its CRC-32,
    before ``torch.load`` (which checks neither) reads it."""
    try:
        with open_archive(path, str(path)) as zf:
            verify_crcs(zf, str(path))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise CheckpointError(
            f"{path} is not a readable zip archive (corrupt or truncated?): {_first_sentence(e)}"
        ) from None
    except OSError as e:
        if isinstance(e, PermissionError):
            raise
        raise CheckpointError(f"{path} is not a readable zip archive: {_first_sentence(e)}") from None


def _read_file(path: Path, allow_official: bool = True) -> Any:
    """Unpickle ``path`` safely: ``weights_only=True`` first, the restricted unpickler for the
    pickled-module zips that it refuses (official checkpoints)."""
    if path.is_dir():
        raise IsAFolderError(f"checkpoint {path} is a folder, not a file (a run keeps weights/last.pt)")
    if path.exists() and not path.is_file():
        raise CheckpointError(f"checkpoint {path} is not a regular file (a FIFO, device or socket): not read")
    if not path.is_file():
        hint = " (an untrained zoo model comes from yolov9k.build_model)" if path.suffix == "" else ""
        raise InputNotFoundError(f"checkpoint not found: {path}{hint}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (neither a torch.save zip nor a pickle)")
    if head[:2] == b"PK":
        _verify_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # pickled objects (official checkpoint), or a broken pickle
        refused_global = "Unsupported global" in str(e)
        if not refused_global and head[:2] != b"PK":
            reason = _weights_only_reason(e)
            raise CheckpointError(
                f"{path} is not a readable checkpoint (corrupt pickle?): {reason}"
            ) from None
    except (FileNotFoundError, PermissionError):
        raise
    except Exception as e:
        # torch's readers fail in many ways on broken files (RuntimeError, IndexError, ...), and
        # their messages run on for several sentences: keep the first
        reason = _first_sentence(e)
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): {reason}"
        ) from None
    if not is_torch_zip(path):
        raise CheckpointError(
            f"{path} is a legacy (non-zip) torch.save file with pickled objects, which yolov9k does not "
            "read (plain legacy state dicts are fine); re-save its state_dict with a current torch"
        )
    if not allow_official:
        raise CheckpointError(
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
        start = 0
        while k.startswith(_WRAPPER_PREFIXES, start):  # an index, not re-slicing: linear in len(k)
            start = k.index(".", start) + 1
        out[k[start:]] = v
    return out


def _weights_from(obj: Any, where: str) -> _Weights:
    """Classify an unpickled object: official checkpoint, ours, or a (wrapped) state dict."""
    if isinstance(obj, OfficialCheckpoint):
        off = obj
    elif isinstance(obj, Record) or (
        isinstance(obj, dict) and any(isinstance(v, Record) for v in obj.values())
    ):
        try:
            off = official_from_object(obj)
        except ValueError as e:  # name the file, as every other message does
            raise CheckpointError(f"{where}: {e}") from None
    elif _is_ours(obj):
        ck = _check_ours(obj, where)
        sd = ck.get("ema") if _is_state_dict(ck.get("ema")) else ck["state_dict"]
        names = _class_names(ck["names"], where) if ck.get("names") else None
        fused = bool(ck.get("fused"))
        return _Weights(_clean_keys(sd), ck["cfg"], ck["nc"], names, ck.get("stride"), fused)
    elif _is_state_dict(obj):
        return _Weights(_clean_keys(obj))
    elif isinstance(obj, Mapping):
        for key in ("ema", "model", "state_dict", "model_state_dict"):
            if _is_state_dict(obj.get(key)):
                return _Weights(_clean_keys(obj[key]))
        if "param_groups" in obj:
            raise CheckpointError(f"{where} holds an optimizer state, not model weights")
        keys = ", ".join(map(repr, list(obj)[:8]))
        raise CheckpointError(f"{where}: found no model weights in this dict (keys: {keys})")
    else:
        raise CheckpointError(f"{where}: cannot load a model from a {type(obj).__name__}")
    stride = off.stride.tolist() if off.stride is not None else None
    return _Weights(dict(off.state_dict), off.cfg, off.nc, off.names, stride)


def _class_names(raw: Any, where: str) -> dict[int, str]:
    """Our checkpoints' ``names``: a dict of int -> str, as save_checkpoint writes it."""
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, int) and isinstance(v, str) for k, v in raw.items()
    ):
        raise CheckpointError(f"{where}: the class names are not a dict of int -> str")
    return dict(raw)


_HEAD_CLS = re.compile(r"model\.(\d+)\.cv3\.0\.2\.weight")


def _nc_from_state_dict(sd: Mapping[str, torch.Tensor]) -> int | None:
    """Classes = output channels of the (last) head's first class-branch conv."""
    hits = [(int(m.group(1)), v) for k, v in sd.items() if (m := _HEAD_CLS.fullmatch(k))]
    return int(max(hits, key=lambda h: h[0])[1].shape[0]) if hits else None


@functools.lru_cache(maxsize=32)
def _zoo_layer_count(name: str) -> int:
    cfg = load_config(name)
    return len(cfg["backbone"]) + len(cfg["head"])


@functools.lru_cache(maxsize=32)
def _signature_of_zoo_model(name: str, nc: int, fused: bool) -> dict[str, tuple[int, ...]]:
    """Parameter names -> shapes of a zoo model (built on CPU: the meta device is slower here,
    its first use pulls in torch's decompositions)."""
    model = build_model(name, num_classes=nc)
    if fused:
        model.fuse()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def infer_config(state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None) -> str:
    """The zoo model (``yolov9k.MODELS`` name) whose parameter names and shapes match ``state_dict``.

    Raises:
        ValueError: no zoo config (or more than one) matches.
    """
    sd = _clean_keys(state_dict)
    nc = num_classes or _nc_from_state_dict(sd)
    if nc is None:
        raise CheckpointError(
            "cannot infer the model: no detection head (model.N.cv3.0.2.weight) in the weights"
        )
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
        raise CheckpointError(f"cannot infer the model config: {found} matches these weights; pass cfg=")
    return matches[0]


_MAX_CFG_DEPTH = 8  # a config is a dict of rows of args: 4 levels deep
_MAX_CFG_ITEMS = 100_000


def _check_plain_config(cfg: Any, where: str) -> None:
    """Refuse a checkpoint's model config unless it is plain data (dicts, lists, str, numbers),
    at most ``_MAX_CFG_DEPTH`` deep and ``_MAX_CFG_ITEMS`` large; each container is visited once,
    so a pickled config that repeats or contains itself costs no more than its size."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(cfg, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str | int | float | bool | type(None)):
            continue
        if not isinstance(value, dict | list | tuple):
            raise CheckpointError(f"{where}: the model config holds a {type(value).__name__}")
        if id(value) in seen and len(value) > 0:  # (empty tuples are one shared object)
            raise CheckpointError(f"{where}: the model config repeats or contains itself")
        if depth >= _MAX_CFG_DEPTH:
            raise CheckpointError(f"{where}: the model config is nested deeper than {_MAX_CFG_DEPTH} levels")
        seen.add(id(value))
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else list(value)
        if len(seen) + len(stack) + len(items) > _MAX_CFG_ITEMS:
            raise CheckpointError(f"{where}: the model config has more than {_MAX_CFG_ITEMS} items")
        stack.extend((item, depth + 1) for item in items)


def _count_parameters_of(cfg: dict[str, Any], nc: int | None, where: str) -> int:
    """Parameters + buffers of the model ``cfg`` describes, built on the meta device (no memory)."""
    with _meta_constructors():
        model = _build(cfg, nc, where)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def _meta_constructors() -> contextlib.AbstractContextManager:
    """Like ``with torch.device("meta")``, except for ``torch.arange`` (the DFL's 16 bins), whose
    meta kernel imports torch._dynamo: seconds on first use."""
    try:
        from torch.utils._device import _device_constructors  # private: fall back if it goes
    except ImportError:
        return torch.device("meta")

    class MetaExceptArange(TorchFunctionMode):
        def __torch_function__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            kwargs = kwargs or {}
            if func in _device_constructors() and func is not torch.arange and kwargs.get("device") is None:
                kwargs["device"] = "meta"
            return func(*args, **kwargs)

    return MetaExceptArange()


# A checkpoint's own config may describe at most twice the model its weights hold, plus this
# (new class heads of a partial load): a small file cannot make load_model build a huge model.
_CONFIG_SLACK_PARAMETERS = 1 << 24


def _check_config_fits_weights(w: _Weights, where: str) -> None:
    """Range-check the checkpoint's own config (nc, plain data, model size) before building it."""
    if w.nc is not None and (isinstance(w.nc, bool) or not 1 <= w.nc <= MAX_CLASSES):
        raise CheckpointError(f"{where}: invalid number of classes {str(w.nc)[:40]}")
    if not isinstance(w.cfg, dict):
        return
    _check_plain_config(w.cfg, where)
    stored = sum(t.numel() for t in w.state_dict.values())
    needed = _count_parameters_of(w.cfg, w.nc, where)
    if needed > 2 * stored + _CONFIG_SLACK_PARAMETERS:
        raise CheckpointError(
            f"{where}: the checkpoint's model config describes {needed} parameters but its weights hold "
            f"{stored}: refusing to build it"
        )


def _build(cfg: dict[str, Any] | str | os.PathLike, nc: int | None, where: str) -> nn.Module:
    try:
        return build_model(cfg, num_classes=nc)
    except (FileNotFoundError, MemoryError):
        raise
    except Exception as e:  # a broken yaml can fail anywhere in parsing: report it in one line
        what = "the checkpoint's model config" if isinstance(cfg, dict) else f"model config {cfg!r}"
        raise CheckpointError(
            f"{where}: cannot build {what}: {type(e).__name__}: {_one_line(str(e))}"
        ) from None


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
            raise CheckpointError(f"{where}: the weights do not fit the model config; " + "; ".join(parts))
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
        FileNotFoundError, PermissionError, IsADirectoryError: the path cannot be read.
        UnsafeCheckpointError: the pickle names a foreign global (nothing from it is run).
        ValueError (often its subclass CheckpointError): anything else that is not a loadable
        model checkpoint -- corrupt (CRC-32), truncated, oversized or malformed files, configs out
        of range -- always with a one-line message. See docs/reliability.md for the time and
        memory a hostile file can take.
    """
    where = str(source) if isinstance(source, str | os.PathLike) else "in-memory weights"
    with _only_documented_errors(where):
        return _load_model(source, where, num_classes, cfg, device, fuse)


def _load_model(
    source: str | os.PathLike | Mapping[str, Any] | OfficialCheckpoint,
    where: str,
    num_classes: int | None,
    cfg: str | os.PathLike | dict[str, Any] | None,
    device: str | torch.device,
    fuse: bool,
) -> nn.Module:
    obj = _read_file(Path(source)) if isinstance(source, str | os.PathLike) else source
    w = _weights_from(obj, where)
    if cfg is None and w.cfg is not None:
        _check_config_fits_weights(w, where)
        cfg = w.cfg
    elif cfg is None:
        cfg = infer_config(w.state_dict, num_classes)
    ckpt_nc = w.nc or _nc_from_state_dict(w.state_dict)
    partial = num_classes is not None and ckpt_nc is not None and num_classes != ckpt_nc
    model = _build(cfg, num_classes or ckpt_nc, where)
    if w.fused or _looks_fused(w.state_dict):  # weights of a fused model: fuse first, then load
        model.fuse()
    _load_weights(model, w.state_dict, partial, where)
    if w.names and not partial:
        if len(w.names) != model.nc:
            raise CheckpointError(f"{where}: {len(w.names)} class names for {model.nc} classes")
        model.names = dict(w.names)
    if w.stride is not None and [float(s) for s in w.stride] != model.stride.tolist():
        raise CheckpointError(
            f"{where}: checkpoint strides {w.stride} differ from the model's {model.stride.tolist()}"
        )
    model = model.float().to(device).eval()
    if fuse:
        model.fuse()
    return model
