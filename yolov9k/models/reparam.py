"""yolov9-X -> gelan-X: drop the PGI auxiliary branch and head, keep the main branch.

The layer mapping is derived from the two configs: the layers the main head depends on are walked in
order and matched to the GELAN layers by module name, repeat count, constructor args and (mapped)
sources; parameter-free pass-through layers without a GELAN counterpart (``Silence``) are skipped.
The main head (cv4 / cv5 / dfl2) becomes the DDetect head (cv2 / cv3 / dfl). Outputs are identical to
the yolov9 main branch.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from yolov9k.models.model import MODELS, DetectionModel, load_config
from yolov9k.models.parse import INPUT, LayerSpec, dependency_closure, head_sources

__all__ = ["reparameterize", "match_layers"]

_PASS_THROUGH = {"Silence"}
_HEAD_RENAME = {"cv4": "cv2", "cv5": "cv3", "dfl2": "dfl"}


def match_layers(dual: list[LayerSpec], gelan: list[LayerSpec]) -> dict[int, int] | None:
    """Map main-branch layer indices of a PGI model to the layers of a GELAN model, or None.

    Returns {yolov9 index: gelan index} for every layer with a counterpart (head included); skipped
    pass-through layers are absent.
    """
    _, main_src = head_sources(dual)
    _, gelan_src = head_sources(gelan)
    if len(main_src) != len(gelan_src):
        return None
    where: dict[int, int] = {INPUT: INPUT}  # yolov9 layer -> gelan layer whose output it equals
    mapping: dict[int, int] = {}
    body = gelan[:-1]
    j = 0
    for i in dependency_closure(dual, main_src):
        y = dual[i]
        srcs = [where.get(k) for k in y.sources]
        if j < len(body):
            g = body[j]
            if (y.module, y.n, y.args, srcs) == (g.module, g.n, g.args, g.sources):
                where[i] = mapping[i] = j
                j += 1
                continue
        if y.module in _PASS_THROUGH and len(srcs) == 1 and srcs[0] is not None:
            where[i] = srcs[0]
            continue
        return None
    if j != len(body) or [where.get(k) for k in main_src] != gelan_src:
        return None
    mapping[len(dual) - 1] = len(gelan) - 1
    return mapping


def _convert_state(model: DetectionModel, mapping: dict[int, int]) -> dict[str, Any]:
    head = len(model.specs) - 1
    out = {}
    for key, value in model.state_dict().items():
        _, idx, rest = key.split(".", 2)
        i = int(idx)
        if i not in mapping:
            continue
        if i == head:
            branch, _, tail = rest.partition(".")
            if branch not in _HEAD_RENAME:
                continue  # auxiliary head (cv2 / cv3 / dfl)
            rest = f"{_HEAD_RENAME[branch]}.{tail}"
        out[f"model.{mapping[i]}.{rest}"] = value
    return out


def reparameterize(model: DetectionModel, gelan_cfg: str | dict | None = None) -> DetectionModel:
    """A GELAN model with the main-branch weights of a PGI (yolov9-X) model.

    Args:
        model: a DetectionModel. GELAN models (no auxiliary branch) are returned unchanged.
        gelan_cfg: the target config (zoo name, path or dict); by default the zoo GELAN config whose
            layers match the main branch.
    Returns:
        A new DetectionModel (same nc, names, device, dtype and train/eval mode) whose eval output
        equals the main-branch output of ``model``.
    """
    if not isinstance(model, DetectionModel):
        raise TypeError(f"reparameterize expects a DetectionModel, got {type(model).__name__}")
    if not model.is_dual:
        return model
    candidates = [gelan_cfg] if gelan_cfg is not None else [n for n in MODELS if n.startswith("gelan-")]
    for cand in candidates:
        cfg = load_config(cand)
        cfg["nc"] = model.nc
        if "activation" in model.cfg:
            cfg["activation"] = model.cfg["activation"]
        with torch.device("meta"):  # cheap structural match before building real weights
            mapping = match_layers(model.specs, DetectionModel(cfg).specs)
        if mapping is None:
            continue
        target = DetectionModel(cfg).to(next(model.parameters()).device)
        target.load_state_dict(_convert_state(model, mapping), strict=True)
        target = target.to(dtype=next(model.parameters()).dtype)
        target.names = copy.deepcopy(model.names)
        return target.train(model.training)
    raise ValueError(
        "no GELAN config matches the main branch of this model"
        + (f" (tried {gelan_cfg!r})" if gelan_cfg is not None else " (tried the zoo gelan-t/s/m/c/e)")
    )
