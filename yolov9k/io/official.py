"""Official YOLOv9 checkpoints (train.py / train_dual.py + strip_optimizer) read without their code.

The file is a dict ``{epoch, best_fitness, model, ema, updates, optimizer, opt, git, date}`` whose
``model`` / ``ema`` entry is a pickled ``models.yolo.DetectionModel`` (usually fp16). The restricted
unpickler turns that module tree into inert :class:`~yolov9k.io.safe_pickle.Record` objects; this
module walks them the way ``nn.Module.state_dict()`` would to recover the official state dict, and
collects the model's ``yaml`` config, ``nc``, ``names``, ``stride`` and ``hyp``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolov9k.io.safe_pickle import Record, read_torch_zip

__all__ = ["OfficialCheckpoint", "read_official_checkpoint", "official_from_object", "module_state_dict"]


@dataclass
class OfficialCheckpoint:
    """What an official checkpoint holds, in plain types.

    Attributes:
        state_dict: official keys -> tensors, in the stored dtype (fp16 for released files).
        cfg: the parsed model yaml (``model.yaml``), as ``build_model`` accepts it.
        nc: number of classes. names: class index -> name. stride: per-level strides (pixels).
        hyp: training hyperparameters, if stored. source: ``"ema"`` or ``"model"``.
        meta: the other top-level entries (epoch, date, opt as a dict, ...), never the optimizer.
    """

    state_dict: OrderedDict[str, torch.Tensor]
    cfg: dict[str, Any]
    nc: int
    names: dict[int, str]
    stride: torch.Tensor | None
    hyp: dict[str, Any] | None = None
    source: str = "model"
    meta: dict[str, Any] = field(default_factory=dict)


def _records(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"expected a dict of module members, found {type(value).__name__}")
    return value


def module_state_dict(module: Record, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The ``state_dict()`` of a pickled module record: parameters, then persistent buffers, then
    children (recursively, ``<child>.`` prefixed); ``None`` entries are skipped as torch does."""
    if not isinstance(module, Record):
        raise ValueError(f"{prefix or 'model'} is a {type(module).__name__}, not a pickled module")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    state = module.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        for name, tensor in _records(state.get(kind)).items():
            if tensor is None or (kind == "_buffers" and name in non_persistent):
                continue
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"{prefix}{name} is a {type(tensor).__name__}, not a tensor")
            out[prefix + name] = tensor
    for name, child in _records(state.get("_modules")).items():
        if child is not None:
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _names(raw: Any, nc: int) -> dict[int, str]:
    if isinstance(raw, dict):
        return {int(k): str(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple):
        return {i: str(v) for i, v in enumerate(raw)}
    return {i: str(i) for i in range(nc)}


def official_from_object(ckpt: Any) -> OfficialCheckpoint:
    """Interpret an unpickled official checkpoint dict (or a bare pickled model record)."""
    if isinstance(ckpt, Record):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict):
        raise ValueError(f"an official checkpoint is a dict, this one is a {type(ckpt).__name__}")
    source = "ema" if ckpt.get("ema") is not None else "model"
    model = ckpt.get(source)
    if model is None:
        keys = ", ".join(map(str, list(ckpt)[:8]))
        raise ValueError(f"checkpoint has no model weights: 'model' and 'ema' are empty (keys: {keys})")
    if not isinstance(model, Record) or "_modules" not in model.state:
        raise ValueError(f"checkpoint['{source}'] is a {type(model).__name__}, not a pickled model")
    cfg = model.state.get("yaml")
    if not isinstance(cfg, dict):
        raise ValueError(f"checkpoint['{source}'] has no parsed model config ('yaml' attribute)")
    nc = model.state.get("nc", cfg.get("nc"))
    if not isinstance(nc, int) or nc < 1:
        raise ValueError(f"checkpoint['{source}'] has an invalid number of classes: {nc!r}")
    stride = model.state.get("stride")
    hyp = model.state.get("hyp")
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "ema", "optimizer")}
    if isinstance(meta.get("opt"), Record):
        meta["opt"] = dict(meta["opt"].state)
    return OfficialCheckpoint(
        state_dict=module_state_dict(model),
        cfg=dict(cfg),
        nc=nc,
        names=_names(model.state.get("names"), nc),
        stride=stride.float().clone() if isinstance(stride, torch.Tensor) else None,
        hyp=dict(hyp) if isinstance(hyp, dict) else None,
        source=source,
        meta=meta,
    )


def read_official_checkpoint(path: str | Path) -> OfficialCheckpoint:
    """Read an official pickled YOLOv9 checkpoint without executing anything from it.

    Raises:
        UnsafeCheckpointError: the file references a global outside the allow-list.
        ValueError: not a torch checkpoint, or not an official model checkpoint.
    """
    return official_from_object(read_torch_zip(path))
