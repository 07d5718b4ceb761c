"""DetectionModel: the layers of a GELAN / YOLOv9 config run as a graph, with the official layout
(``model.<i>.<...>`` state-dict keys) and output contract.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from yolov9k.errors import InputError
from yolov9k.io.limits import MAX_CLASSES
from yolov9k.io.textfiles import load_yaml_file
from yolov9k.models.blocks import Conv, RepConvN
from yolov9k.models.head import DDetect, DualDDetect
from yolov9k.models.parse import INPUT, dependency_closure, head_sources, parse_model, validate_config

__all__ = ["MODELS", "DetectionModel", "build_model", "load_config"]

MODELS: tuple[str, ...] = (
    "gelan-t",
    "gelan-s",
    "gelan-m",
    "gelan-c",
    "gelan-e",
    "yolov9-t",
    "yolov9-s",
    "yolov9-m",
    "yolov9-c",
    "yolov9-e",
)


def load_config(cfg: str | os.PathLike | dict) -> dict[str, Any]:
    """A zoo name (``'yolov9-c'``), a yaml path, or a config dict -> a validated config dict (a copy)."""
    if isinstance(cfg, dict):
        return validate_config(cfg)
    if not isinstance(cfg, (str, os.PathLike)):
        raise TypeError(f"cfg must be a zoo name, a yaml path or a dict, got {type(cfg).__name__}")
    name = str(cfg)
    if name in MODELS:
        text = resources.files("yolov9k.models").joinpath("configs", f"{name}.yaml").read_text("utf-8")
        data = yaml.safe_load(text)
    else:
        path = Path(name)
        if not path.is_file():
            raise InputError(f"unknown model {name!r}: not a zoo name ({', '.join(MODELS)}) nor a yaml file")
        data = load_yaml_file(path, "model config")  # bounded: size, aliases, depth
    if not isinstance(data, dict):
        raise InputError(f"model config {name!r} is not a yaml mapping")
    return validate_config(data)


class DetectionModel(nn.Module):
    """A detection model built from a config dict.

    Attributes: ``nc``, ``names`` (dict idx -> str), ``stride`` (Tensor[nl], pixels), ``reg_max``,
    ``is_dual`` (PGI model with a DualDDetect head), ``cfg`` (the config dict), ``model``
    (nn.Sequential of the config rows).

    Forward (x: (B, 3, H, W) float, H and W multiples of 32):
      * train mode: raw head maps, each (B, 4*reg_max + nc, H/s, W/s) for s in stride; a list of
        levels for GELAN, a tuple ``(aux_maps, main_maps)`` for PGI models.
      * eval mode: y (B, 4 + nc, A): xywh boxes in input pixels + sigmoid class scores, of the main
        branch (the auxiliary branch is not run); with ``return_maps=True``: ``(y, maps)`` with maps
        as in train mode (the auxiliary branch runs too).
    """

    def __init__(self, cfg: dict[str, Any], num_classes: int | None = None) -> None:
        super().__init__()
        cfg = validate_config(cfg)
        if num_classes is not None:
            if (
                isinstance(num_classes, bool)
                or not isinstance(num_classes, int)
                or not 1 <= num_classes <= MAX_CLASSES
            ):
                raise ValueError(
                    f"num_classes must be an int in [1, {MAX_CLASSES}], got {str(num_classes)[:40]}"
                )
            cfg["nc"] = num_classes
        self.cfg = cfg
        ch = int(cfg.get("ch", 3))
        layers, specs = parse_model(cfg, ch)
        self.model = nn.Sequential(*layers)
        self.specs = specs
        self.nc = int(cfg["nc"])
        self.names: dict[int, str] = {i: str(i) for i in range(self.nc)}
        head = self.head
        self.is_dual = isinstance(head, DualDDetect)
        self.reg_max = head.reg_max

        aux_src, main_src = head_sources(specs)
        strides = [specs[k].stride for k in main_src]
        if aux_src and [specs[k].stride for k in aux_src] != strides:
            raise ValueError("auxiliary and main head inputs have different strides")
        # Explicit CPU: strides stay readable when the model is built under torch.device("meta").
        self.register_buffer("stride", torch.tensor(strides, device="cpu"), persistent=False)
        head.stride = torch.tensor(strides, device="cpu")
        head.bias_init(strides)

        body = len(specs) - 1
        self._aux_src, self._main_src = aux_src, main_src
        self._plan_full = list(range(body))
        self._plan_main = dependency_closure(specs, main_src)
        used = {j for s in specs for j in s.sources}
        self._keep = frozenset(used)

    @property
    def head(self) -> DDetect | DualDDetect:
        """The detection head (last layer)."""
        return self.model[-1]

    def level_strides(self) -> list[float]:
        """Stride in pixels of each detection level, from the config (no tensor involved)."""
        return [self.specs[k].stride for k in self._main_src]

    def _run(self, x: Tensor, plan: list[int]) -> dict[int, Any]:
        outs: dict[int, Any] = {INPUT: x}
        for i in plan:
            spec = self.specs[i]
            inp = [outs[k] for k in spec.sources] if isinstance(spec.from_, list) else outs[spec.sources[0]]
            out = self.model[i](inp)
            if i in self._keep:
                outs[i] = out
        return outs

    def forward_maps(self, x: Tensor) -> list[Tensor] | tuple[list[Tensor], list[Tensor]]:
        """Raw head maps of every branch (the train-mode output), in any mode."""
        outs = self._run(x, self._plan_full)
        head = self.head
        if self.is_dual:
            return head.forward_aux([outs[k] for k in self._aux_src]), head.forward_main(
                [outs[k] for k in self._main_src]
            )
        return head([outs[k] for k in self._main_src])

    def forward_main(self, x: Tensor) -> list[Tensor]:
        """Raw main-branch maps only (the auxiliary branch of PGI models is skipped)."""
        outs = self._run(x, self._plan_main)
        feats = [outs[k] for k in self._main_src]
        return self.head.forward_main(feats) if self.is_dual else self.head(feats)

    def decode(self, maps: list[Tensor]) -> Tensor:
        """Main-branch raw maps -> y (B, 4 + nc, A)."""
        return self.head.decode(maps)

    def forward(self, x: Tensor, return_maps: bool = False) -> Any:
        if x.dim() != 4 or x.shape[1] != int(self.cfg.get("ch", 3)):
            raise ValueError(f"expected input (B, {self.cfg.get('ch', 3)}, H, W), got {tuple(x.shape)}")
        if self.training:
            return self.forward_maps(x)
        if return_maps:
            maps = self.forward_maps(x)
            return self.decode(maps[1] if self.is_dual else maps), maps
        return self.decode(self.forward_main(x))

    @torch.no_grad()
    def fuse(self) -> DetectionModel:
        """Fold BatchNorms into convs and merge RepConvN branches (in place); eval outputs unchanged."""
        for m in self.modules():
            if isinstance(m, RepConvN):
                m.fuse()
        for m in self.modules():
            if isinstance(m, Conv):
                m.fuse()
        return self

    def extra_repr(self) -> str:
        return f"nc={self.nc}, dual={self.is_dual}, stride={self.stride.tolist()}"


def build_model(cfg: str | os.PathLike | dict, num_classes: int | None = None) -> DetectionModel:
    """Build a model from a zoo name, a yaml path or a config dict; ``num_classes`` overrides ``nc``."""
    return DetectionModel(load_config(cfg), num_classes=num_classes)
