"""Config dict (the official YOLOv9 yaml format) -> layers, without ``eval``.

A config row is ``[from, n, module, args]``. ``module`` names are looked up in :data:`REGISTRY`;
``args`` strings are resolved from a small table (``nc``, ``None``, ...), never evaluated. The
optional ``activation:`` key (e.g. ``nn.LeakyReLU(0.1)``) is parsed with ``ast`` against a whitelist
and applies to that model only.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from yolov9k.errors import InputError
from yolov9k.io.limits import MAX_CLASSES
from yolov9k.models import blocks as B
from yolov9k.models.head import DDetect, DualDDetect

__all__ = [
    "MAX_CLASSES",
    "LayerSpec",
    "ModuleSpec",
    "REGISTRY",
    "make_activation",
    "parse_model",
    "validate_config",
]

INPUT = -1  # resolved source index meaning "the input image"

# Range limits of a config, far above any real model (yolov9-e: 50 rows, repeats <= 2, widths
# <= 1024), checked before anything is built: configs come from untrusted checkpoints too.
MAX_LAYERS = 1_000
MAX_REPEATS = 64  # a row's n x depth_multiple, and a block's inner repeats (RepNCSPELAN4 c5)
MAX_BLOCKS = 4_096  # all rows' repeats x inner repeats
MAX_INT_ARG = 1 << 16  # any integer among a row's args (widths, kernel sizes, ...)
MAX_MULTIPLE = 16.0  # depth_multiple and width_multiple
_INNER_REPEATS_ARG = {"RepNCSPELAN4": 3}  # index of the inner repeat count in a row's args


@dataclass(frozen=True)
class ModuleSpec:
    """How the parser builds one config module name.

    kind: 'conv' (args[0] is the output width, scaled by width_multiple, input width prepended),
    'concat', 'fuse' (CBFuse), 'detect', or 'same' (output width = input width).
    """

    cls: type[nn.Module]
    kind: str
    takes_act: bool = False
    takes_rep_act: bool = False
    stride: Callable[[list[Any]], float] = lambda args: 1.0


def _arg_stride(pos: int) -> Callable[[list[Any]], float]:
    return lambda args: float(args[pos]) if len(args) > pos else 1.0


REGISTRY: dict[str, ModuleSpec] = {
    "Conv": ModuleSpec(B.Conv, "conv", takes_act=True, stride=_arg_stride(3)),
    "RepConvN": ModuleSpec(B.RepConvN, "conv", takes_act=True, stride=_arg_stride(3)),
    "AConv": ModuleSpec(B.AConv, "conv", takes_act=True, stride=lambda a: 2.0),
    "ADown": ModuleSpec(B.ADown, "conv", takes_act=True, stride=lambda a: 2.0),
    "ELAN1": ModuleSpec(B.ELAN1, "conv", takes_act=True),
    "RepNCSPELAN4": ModuleSpec(B.RepNCSPELAN4, "conv", takes_act=True, takes_rep_act=True),
    "SPPELAN": ModuleSpec(B.SPPELAN, "conv", takes_act=True),
    "CBLinear": ModuleSpec(B.CBLinear, "conv", stride=_arg_stride(3)),
    "CBFuse": ModuleSpec(B.CBFuse, "fuse"),
    "Concat": ModuleSpec(B.Concat, "concat"),
    "Silence": ModuleSpec(B.Silence, "same"),
    "nn.Upsample": ModuleSpec(
        nn.Upsample, "same", stride=lambda a: 1.0 / float(a[1]) if len(a) > 1 and a[1] else 1.0
    ),
    "DDetect": ModuleSpec(DDetect, "detect", takes_act=True),
    "DualDDetect": ModuleSpec(DualDDetect, "detect", takes_act=True),
}

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "SiLU": nn.SiLU,
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "LeakyReLU": nn.LeakyReLU,
    "Hardswish": nn.Hardswish,
    "Mish": nn.Mish,
    "GELU": nn.GELU,
    "Identity": nn.Identity,
}
_INPLACE = (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.Mish)


@dataclass
class LayerSpec:
    """One parsed config row. ``sources``: absolute layer indices (``-1`` = the input image)."""

    index: int
    from_: int | list[int]
    n: int
    module: str
    args: list[Any]  # constructor args after channel resolution
    sources: list[int] = field(default_factory=list)
    c_out: int | list[int] = 0
    stride: float = 1.0


def make_activation(spec: str | None) -> nn.Module:
    """A new activation module from a config string such as ``nn.LeakyReLU(0.1)`` (None -> SiLU).

    Only whitelisted torch.nn activations with literal arguments are accepted.
    """
    if spec is None:
        return nn.SiLU(inplace=True)
    try:
        node = ast.parse(str(spec).strip(), mode="eval").body
    except SyntaxError as e:
        raise InputError(f"cannot parse activation {spec!r}") from e
    call_args: list[Any] = []
    call_kwargs: dict[str, Any] = {}
    if isinstance(node, ast.Call):
        call_args = [ast.literal_eval(a) for a in node.args]
        call_kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        node = node.func
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "nn":
        name = node.attr
    elif isinstance(node, ast.Name):
        name = node.id
    else:
        raise InputError(f"unsupported activation {spec!r}: expected e.g. 'nn.SiLU()'")
    if name not in _ACTIVATIONS:
        raise InputError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    cls = _ACTIVATIONS[name]
    if issubclass(cls, _INPLACE) and "inplace" not in call_kwargs:
        call_kwargs["inplace"] = True  # as the official initialize_weights does
    return cls(*call_args, **call_kwargs)


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check the keys and row format of a model config; return a deep copy."""
    if not isinstance(cfg, dict):
        raise TypeError(f"model config must be a dict, got {type(cfg).__name__}")
    missing = [k for k in ("nc", "backbone", "head") if k not in cfg]
    if missing:
        raise InputError(f"model config lacks keys {missing}")
    cfg = copy.deepcopy(cfg)
    cfg.setdefault("depth_multiple", 1.0)
    cfg.setdefault("width_multiple", 1.0)
    rows = list(cfg["backbone"]) + list(cfg["head"])
    if not rows:
        raise InputError("model config has no layers")
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 4):
            raise InputError(f"layer {i}: expected [from, n, module, args], got {row!r}")
        f, n, m, args = row
        if not (isinstance(f, int) or (isinstance(f, list) and all(isinstance(j, int) for j in f))):
            raise InputError(f"layer {i}: 'from' must be an int or a list of ints, got {f!r}")
        if not isinstance(n, int) or n < 1:
            raise InputError(f"layer {i}: repeat count must be a positive int, got {n!r}")
        if m not in REGISTRY:
            raise InputError(f"layer {i}: unknown module {m!r}; known: {sorted(REGISTRY)}")
        if not isinstance(args, list):
            raise InputError(f"layer {i}: args must be a list, got {args!r}")
    if REGISTRY[rows[-1][2]].kind != "detect":
        raise InputError(f"the last layer must be a detection head, got {rows[-1][2]!r}")
    _check_ranges(cfg, rows)
    return cfg


def _check_ranges(cfg: dict[str, Any], rows: list[Any]) -> None:
    """Refuse configs that would build absurdly large models (see the MAX_* limits)."""
    nc = cfg["nc"]
    if isinstance(nc, bool) or not isinstance(nc, int) or not 1 <= nc <= MAX_CLASSES:
        raise InputError(f"model config: nc must be an int in [1, {MAX_CLASSES}], got {str(nc)[:40]}")
    for key in ("depth_multiple", "width_multiple"):
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_MULTIPLE:
            raise InputError(f"model config: {key} must be in (0, {MAX_MULTIPLE}], got {str(value)[:40]}")
    if len(rows) > MAX_LAYERS:
        raise InputError(f"model config has {len(rows)} layers (at most {MAX_LAYERS})")
    blocks = 0
    for i, (_, n, module, args) in enumerate(rows):
        repeats = max(round(n * cfg["depth_multiple"]), 1) if n > 1 else n
        inner = (
            args[_INNER_REPEATS_ARG[module]] if len(args) > _INNER_REPEATS_ARG.get(module, len(args)) else 1
        )
        for count in (n, repeats, inner):
            if not isinstance(count, int) or not 1 <= count <= MAX_REPEATS:
                raise InputError(
                    f"layer {i}: repeat counts must be ints in [1, {MAX_REPEATS}], got {count!r}"
                )
        blocks += repeats * inner
        if _largest_int(args) > MAX_INT_ARG:
            raise InputError(f"layer {i}: an argument is larger than {MAX_INT_ARG}")
    if blocks > MAX_BLOCKS:
        raise InputError(f"model config repeats {blocks} blocks (at most {MAX_BLOCKS})")


def _largest_int(args: list[Any]) -> int:
    """The largest absolute integer among ``args`` and the lists in them (one level deep)."""
    flat = [b for a in args for b in (a if isinstance(a, list) else [a])]
    return max((abs(a) for a in flat if isinstance(a, int)), default=0)


def _resolve_arg(a: Any, names: dict[str, Any]) -> Any:
    return names[a] if isinstance(a, str) and a in names else a


def _sources(i: int, f: int | list[int]) -> list[int]:
    out = []
    for j in [f] if isinstance(f, int) else f:
        k = i + j if j < 0 else j
        if k >= i:
            raise InputError(f"layer {i}: source {j} is not an earlier layer")
        out.append(k if k >= 0 else INPUT)
    return out


def parse_model(cfg: dict[str, Any], ch: int = 3) -> tuple[list[nn.Module], list[LayerSpec]]:
    """Build the layers of a validated config. Returns (modules, specs), one per config row."""
    nc, gd, gw = int(cfg["nc"]), float(cfg["depth_multiple"]), float(cfg["width_multiple"])
    act_conv, act_rep = make_activation(cfg.get("activation")), make_activation(cfg.get("activation"))
    names = {"nc": nc, "None": None, "anchors": cfg.get("anchors"), "True": True, "False": False}
    widths: list[Any] = []  # output width of each layer (list for CBLinear)
    strides: list[float] = []
    layers: list[nn.Module] = []
    specs: list[LayerSpec] = []

    def width(k: int) -> Any:
        return ch if k == INPUT else widths[k]

    def stride_of(k: int) -> float:
        return 1.0 if k == INPUT else strides[k]

    for i, (f, n, mname, raw_args) in enumerate(list(cfg["backbone"]) + list(cfg["head"])):
        spec = REGISTRY[mname]
        args = [_resolve_arg(a, names) for a in raw_args]
        src = _sources(i, f)
        n = max(round(n * gd), 1) if n > 1 else n
        kwargs: dict[str, Any] = {}
        if spec.takes_act:
            kwargs["act"] = act_conv
        if spec.takes_rep_act:
            kwargs["rep_act"] = act_rep
        if spec.kind == "conv":
            c1 = width(src[0])
            c2 = args[0]
            if isinstance(c2, list):
                c2 = [B.make_divisible(c * gw, 8) for c in c2]
            else:
                c2 = B.make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
        elif spec.kind == "concat":
            c2 = sum(width(k) for k in src)
        elif spec.kind == "fuse":
            c2 = width(src[-1])
        elif spec.kind == "detect":
            args = [*args, [width(k) for k in src]]
            c2 = 0
        else:
            c2 = width(src[0])
        if spec.kind == "detect" and not isinstance(args[0], int):
            raise InputError(f"layer {i}: detection head needs an int class count, got {args[0]!r}")
        try:
            if n > 1:
                module: nn.Module = nn.Sequential(*(spec.cls(*args, **kwargs) for _ in range(n)))
            else:
                module = spec.cls(*args, **kwargs)
        except TypeError as e:
            raise InputError(f"layer {i}: bad arguments {raw_args!r} for {mname}: {e}") from e
        in_strides = {stride_of(k) for k in src}
        if spec.kind == "concat" and len(in_strides) > 1:
            raise InputError(f"layer {i}: Concat of maps with different strides {sorted(in_strides)}")
        s = stride_of(src[-1]) * (spec.stride(args) if spec.kind != "detect" else 1.0)
        layers.append(module)
        specs.append(LayerSpec(i, f, n, mname, args, src, c2, s))
        widths.append(c2)
        strides.append(s)
    return layers, specs


def head_sources(specs: Sequence[LayerSpec]) -> tuple[list[int], list[int]]:
    """(aux sources, main sources) of the detection head; aux is empty for single heads."""
    head = specs[-1]
    if REGISTRY[head.module].cls is DualDDetect:
        nl = len(head.sources) // 2
        return head.sources[:nl], head.sources[nl:]
    return [], list(head.sources)


def dependency_closure(specs: Sequence[LayerSpec], roots: Sequence[int]) -> list[int]:
    """Sorted indices of ``roots`` and every layer they depend on (input excluded)."""
    seen: set[int] = set()
    stack = [r for r in roots if r != INPUT]
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        stack.extend(j for j in specs[k].sources if j != INPUT)
    return sorted(seen)
