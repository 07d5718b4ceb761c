"""``yolov9k.info``: a model summary (layers, parameters, GFLOPs) and the kernel backends of this machine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from yolov9k.checkpoint import load_model
from yolov9k.errors import InputNotFoundError
from yolov9k.models import MODELS, build_model
from yolov9k.models.summary import model_info
from yolov9k.ops import backend_info
from yolov9k.options import check_options
from yolov9k.options.verbs import INFO

__all__ = ["info", "format_info"]


def _load(model: nn.Module | str | os.PathLike, num_classes: int | None) -> tuple[nn.Module, str]:
    """(model in eval mode on CPU, a name for it); zoo names are built without weights warnings."""
    if isinstance(model, nn.Module):
        return model.eval(), type(model).__name__
    text = str(model)
    if text in MODELS and not Path(text).is_file():
        return build_model(text, num_classes=num_classes).eval(), text
    if not Path(text).expanduser().is_file():
        raise InputNotFoundError(
            f"model {text!r} is neither a checkpoint file nor a zoo name ({', '.join(MODELS)})"
        )
    return load_model(Path(text).expanduser(), num_classes=num_classes), Path(text).name


def info(
    model: nn.Module | str | os.PathLike = "gelan-t",
    imgsz: int = 640,
    fuse: bool = False,
    num_classes: int | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Summarise a model and the kernel backends.

    Args:
        model: zoo name, checkpoint file or DetectionModel (a model object is fused in place when
            ``fuse``).
        imgsz: image size for the GFLOPs (official thop recipe, scaled from a stride-sized probe).
        fuse: fold BN and RepConvN first (the deployment figures).
        num_classes: classes for zoo models (default: the config's 80).
        verbose: print the summary.
    Returns:
        dict: ``name``, ``nc``, ``is_dual``, ``fused``, ``stride``, ``layers``, ``params``,
        ``gflops``, ``imgsz``, ``backends`` (``yolov9k.ops.backend_info()``).
    """
    check_options(INFO, {"imgsz": imgsz, "fuse": fuse, "num_classes": num_classes})
    net, name = _load(model, num_classes)
    if fuse:
        net.fuse()
    stats = model_info(net, imgsz)
    out = {
        "name": name,
        "nc": int(net.nc),
        "is_dual": bool(getattr(net, "is_dual", False)),
        "fused": bool(fuse),
        "stride": [float(s) for s in net.stride],
        "layers": int(stats["layers"]),
        "params": int(stats["params"]),
        "gflops": float(stats["gflops"]),
        "imgsz": imgsz,
        "backends": backend_info(),
    }
    if verbose:
        print(format_info(out))
    return out


def format_info(summary: dict[str, Any]) -> str:
    """The text ``info`` prints."""
    kind = "yolov9 (PGI, dual head)" if summary["is_dual"] else "gelan"
    lines = [
        f"{summary['name']} summary{' (fused)' if summary['fused'] else ''}: {summary['layers']} layers, "
        f"{summary['params']:,} parameters, {summary['gflops']:.1f} GFLOPs at {summary['imgsz']}",
        f"  {kind}, {summary['nc']} classes, strides {summary['stride']}",
        "backends:",
    ]
    for key, value in summary["backends"].items():
        if key == "kernel_fallbacks":
            lines.append(
                "  kernel fallbacks: "
                + (
                    "; ".join(
                        f"{f['op']} ({f['backend']}) on {f['device']}, variant {f['variant']}: {f['error']}"
                        for f in value
                    )
                    or "none"
                )
            )
        elif isinstance(value, dict):
            lines.extend(f"  {key}.{op}: {b}" for op, b in value.items())
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines)
