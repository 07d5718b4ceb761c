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

from yolov9k.io.archive import CheckpointError
from yolov9k.io.limits import MAX_CLASSES
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


MAX_MODULE_DEPTH = 32  # official module trees are ~10 deep
MAX_KEY_CHARS = 256  # official keys are ~40 characters
# (key, tensor) pairs made over the whole walk: an official yolov9-e makes ~30k.
MAX_WALK_ENTRIES = 500_000


def _records(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: expected a dict of module members, found {type(value).__name__}")
    return value


class _StateWalk:
    """``nn.Module.state_dict()`` over pickled module records, visiting each record once.

    A record referenced twice (a shared module) contributes its tensors under both prefixes, as in
    torch, but its subtree is walked only once: a pickle of a few KB can reference one record
    from many places (2**40 paths through 40 records). Cycles, trees deeper than
    ``MAX_MODULE_DEPTH``, keys longer than ``MAX_KEY_CHARS`` and walks that would make more than
    ``MAX_WALK_ENTRIES`` entries are refused, so time and memory stay bounded.
    """

    def __init__(self) -> None:
        self.done: dict[int, list[tuple[str, torch.Tensor]]] = {}
        self.active: set[int] = set()
        self.made = 0

    def entries(self, module: Any, path: str, depth: int) -> list[tuple[str, torch.Tensor]]:
        """(key relative to ``module``, tensor) pairs of ``module`` and its children."""
        where = path[:120] or "model"
        if not isinstance(module, Record):
            raise CheckpointError(f"{where} is a {type(module).__name__}, not a pickled module")
        if id(module) in self.done:
            return self.done[id(module)]
        if id(module) in self.active:
            raise CheckpointError(f"{where}: the pickled module tree contains itself (a cycle)")
        if depth > MAX_MODULE_DEPTH:
            raise CheckpointError(f"the pickled module tree is deeper than {MAX_MODULE_DEPTH} levels")
        self.active.add(id(module))
        out = self._own_tensors(module, where)
        for name, child in _records(module.state.get("_modules"), where).items():
            if child is None:
                continue
            if not isinstance(name, str):
                raise CheckpointError(f"{where}: a child module is named by a {type(name).__name__}")
            sub = self.entries(child, f"{path}{name}.", depth + 1)
            self._count(len(sub))
            if len(path) + len(name) + 1 + max((len(k) for k, _ in sub), default=0) > MAX_KEY_CHARS:
                raise CheckpointError(f"{where}: state-dict keys longer than {MAX_KEY_CHARS} characters")
            out.extend((f"{name}.{k}", v) for k, v in sub)
        self.active.discard(id(module))
        self.done[id(module)] = out
        return out

    def _count(self, n: int) -> None:
        self.made += n
        if self.made > MAX_WALK_ENTRIES:
            raise CheckpointError(
                f"the pickled module tree makes more than {MAX_WALK_ENTRIES} state-dict entries"
            )

    @staticmethod
    def _own_tensors(module: Record, where: str) -> list[tuple[str, torch.Tensor]]:
        """Parameters, then persistent buffers; ``None`` entries are skipped as torch does."""
        state = module.state
        non_persistent = state.get("_non_persistent_buffers_set") or set()
        if not isinstance(non_persistent, set | frozenset | list | tuple | dict):
            raise CheckpointError(f"{where}: malformed _non_persistent_buffers_set")
        out = []
        for kind in ("_parameters", "_buffers"):
            for name, tensor in _records(state.get(kind), where).items():
                if tensor is None or (kind == "_buffers" and name in non_persistent):
                    continue
                if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
                    raise CheckpointError(f"{where}: {kind} entry {str(name)[:60]!r} is not a named tensor")
                if len(name) > MAX_KEY_CHARS:
                    raise CheckpointError(f"{where}: a {kind} name is longer than {MAX_KEY_CHARS} characters")
                out.append((name, tensor))
        return out


def module_state_dict(module: Record, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """The ``state_dict()`` of a pickled module record: parameters, then persistent buffers, then
    children (recursively, ``<child>.`` prefixed); ``None`` entries are skipped as torch does.

    Raises:
        CheckpointError (a ValueError): not a module record, a cycle, a tree too deep or too large.
    """
    return OrderedDict((prefix + k, v) for k, v in _StateWalk().entries(module, prefix, 0))


def _names(raw: Any, nc: int) -> dict[int, str]:
    """Class names as {index: name}; names must be plain strings or numbers."""
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list | tuple):
        items = list(enumerate(raw))
    else:
        return {i: str(i) for i in range(nc)}
    if not all(isinstance(k, int | str) and isinstance(v, str | int | float) for k, v in items):
        raise CheckpointError("the checkpoint's class names are not plain strings")
    try:
        return {int(k): str(v) for k, v in items}
    except ValueError:
        raise CheckpointError("the checkpoint's class names have non-integer indices") from None


def official_from_object(ckpt: Any) -> OfficialCheckpoint:
    """Interpret an unpickled official checkpoint dict (or a bare pickled model record)."""
    if isinstance(ckpt, Record):
        ckpt = {"model": ckpt}
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"an official checkpoint is a dict, this one is a {type(ckpt).__name__}")
    source = "ema" if ckpt.get("ema") is not None else "model"
    model = ckpt.get(source)
    if model is None:
        keys = ", ".join(map(str, list(ckpt)[:8]))
        raise CheckpointError(f"checkpoint has no model weights: 'model' and 'ema' are empty (keys: {keys})")
    if not isinstance(model, Record) or "_modules" not in model.state:
        raise CheckpointError(f"checkpoint['{source}'] is a {type(model).__name__}, not a pickled model")
    cfg = model.state.get("yaml")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"checkpoint['{source}'] has no parsed model config ('yaml' attribute)")
    nc = model.state.get("nc", cfg.get("nc"))
    if not isinstance(nc, int) or not 1 <= nc <= MAX_CLASSES:
        raise CheckpointError(f"checkpoint['{source}'] has an invalid number of classes: {str(nc)[:40]}")
    stride = model.state.get("stride")
    if isinstance(stride, torch.Tensor) and (stride.numel() > 16 or not stride.is_floating_point()):
        raise CheckpointError(f"checkpoint['{source}'] has malformed strides (shape {tuple(stride.shape)})")
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
    obj = read_torch_zip(path)
    try:
        return official_from_object(obj)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
