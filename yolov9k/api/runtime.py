"""What every user-facing verb needs: a device, a model from a model argument, a run folder."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from yolov9k.io.files import make_output_dir

__all__ = [
    "select_device",
    "check_model_arg",
    "resolve_model",
    "run_dir",
    "default_project",
    "to_inference_model",
    "LOGGER",
]

LOGGER = logging.getLogger("yolov9k")

ModelArg = nn.Module | str | os.PathLike


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """A ``torch.device`` from what users type.

    Args:
        device: None or "" (CUDA device 0 when available, else CPU), "cpu", "cuda", "cuda:1",
            "0", "1" or an int (CUDA device index), "mps".
    Raises:
        ValueError: an unknown spelling, or a CUDA device that this machine does not have.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif device is None or (isinstance(device, str) and not device.strip()):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, int):
        spec = f"cuda:{device}"
    else:
        spec = str(device).strip().lower()
        if re.fullmatch(r"\d+", spec):
            spec = f"cuda:{spec}"
        elif re.fullmatch(r"\d+(,\d+)+", spec):
            raise ValueError(f"device={device!r}: one device per process here; use torchrun for several GPUs")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} asks for CUDA, but torch sees no CUDA device; use 'cpu'")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        dev = torch.device("cuda", index)
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("device='mps' is not available on this machine")
    return dev


def check_model_arg(model: ModelArg) -> None:
    """Fail early (before data sets are scanned) when ``model`` names no file and no zoo model."""
    from yolov9k.models import MODELS

    if isinstance(model, str | os.PathLike) and str(model) not in MODELS:
        if not Path(model).expanduser().is_file():
            raise FileNotFoundError(
                f"model {str(model)!r} is neither a checkpoint file nor a zoo name ({', '.join(MODELS)})"
            )


def resolve_model(
    model: ModelArg,
    device: torch.device | str = "cpu",
    num_classes: int | None = None,
    fuse: bool = True,
) -> nn.Module:
    """An eval-mode model on ``device`` from a model object, a checkpoint file or a zoo name.

    Args:
        model: a ``DetectionModel`` (used as is: moved and put in eval mode, never fused, since it
            belongs to the caller), a checkpoint path (official pickle, yolov9k checkpoint or state
            dict; loaded safely), or a zoo name such as ``"gelan-t"`` (random weights, with a warning).
        device: where the model goes.
        num_classes: only for zoo names.
        fuse: fold BatchNorm and RepConvN of models this function creates.
    Raises:
        FileNotFoundError: neither a file nor a zoo name. ValueError / UnsafeCheckpointError: from
        the checkpoint reader (not a checkpoint, corrupt, foreign pickled code).
    """
    from yolov9k.checkpoint import load_model
    from yolov9k.models import MODELS, build_model

    device = torch.device(device)
    if isinstance(model, nn.Module):
        if not hasattr(model, "stride") or not hasattr(model, "nc"):
            raise TypeError(f"expected a yolov9k DetectionModel, got {type(model).__name__}")
        return model.to(device).eval()
    if not isinstance(model, str | os.PathLike):
        raise TypeError(
            f"model must be a DetectionModel, a checkpoint path or a zoo name, got {type(model).__name__}"
        )
    text = str(model)
    if text in MODELS and not Path(text).is_file():
        warnings.warn(f"model {text!r} is a zoo name: random weights (pass a checkpoint file)", stacklevel=3)
        net = build_model(text, num_classes=num_classes).to(device).eval()
        return net.fuse() if fuse else net
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model {text!r} is neither a checkpoint file nor a zoo name ({', '.join(MODELS)})"
        )
    return load_model(path, device=device, fuse=fuse)


def run_dir(
    project: str | os.PathLike | None, task: str, name: str | None = None, exist_ok: bool = False
) -> Path:
    """A new output folder ``project/name`` (``runs/<task>/name`` when ``project`` is None, as the
    official code and ultralytics); ``name2``, ``name3``... when it exists already.

    Args:
        project: root of the runs; None = ``runs/<task>``. task: "train", "val", "predict", ...
        name: run name (default "exp"). exist_ok: reuse ``project/name`` when it exists.
    Raises:
        NotADirectoryError: a file is in the way (one line naming it).
    """
    base = default_project(task) if project is None else Path(project).expanduser()
    stem = name or "exp"
    make_output_dir(base, "project folder")
    if exist_ok:
        return make_output_dir(base / stem, "run folder")
    n = 1
    while True:  # mkdir without exist_ok claims the folder atomically, even against a parallel run
        out = base / (stem if n == 1 else f"{stem}{n}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            n += 1


def default_project(task: str) -> Path:
    """Where runs of ``task`` go when no project is given: ``runs/<task>``."""
    return Path("runs") / task


def to_inference_model(model: nn.Module, fuse: bool = True) -> nn.Module:
    """A copy of ``model`` ready for deployment: PGI branch removed (yolov9-X -> gelan-X), BN and
    RepConvN folded, eval mode, no gradients. The caller's model is not modified.

    Raises:
        NotImplementedError: a PGI (dual-head) model and no ``yolov9k.models.reparameterize`` here.
    """
    import copy

    net = copy.deepcopy(model).eval()
    if getattr(net, "is_dual", False):
        try:
            from yolov9k.models import reparameterize
        except ImportError:
            raise NotImplementedError(
                "this yolov9k has no yolov9k.models.reparameterize: cannot drop the PGI branch"
            ) from None
        net = reparameterize(net).eval()
    if fuse:
        net.fuse()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
