"""``yolov9k.convert``: any supported checkpoint -> a yolov9k checkpoint readable with ``weights_only=True``.

Official pickled checkpoints are read through the restricted unpickler (nothing from the file runs);
the result holds only tensors and plain types. Optionally the PGI branch is removed (yolov9-X ->
gelan-X, main-branch outputs unchanged) and the weights are stored in fp16 (loaders return fp32).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from yolov9k.api.model_source import LOGGER
from yolov9k.checkpoint import load_model, save_checkpoint
from yolov9k.errors import InputNotFoundError
from yolov9k.io.files import check_not_an_input, check_output_file
from yolov9k.models import reparameterize as drop_pgi
from yolov9k.options import check_options
from yolov9k.options.verbs import CONVERT

__all__ = ["convert"]


def convert(
    source: str | os.PathLike,
    output: str | os.PathLike,
    reparameterize: bool = False,
    half: bool = False,
) -> Path:
    """Convert a checkpoint file.

    Args:
        source: official YOLOv9 checkpoint, yolov9k checkpoint or saved state dict.
        output: the yolov9k checkpoint to write (atomically; never the source file itself).
        reparameterize: drop the PGI branch of yolov9-X models (a gelan-X checkpoint results);
            gelan models are unchanged.
        half: store the weights in fp16 (half the size; ``load_model`` returns fp32 models).
    Returns:
        ``output`` as a Path.
    Raises:
        FileNotFoundError: no source. ValueError / UnsafeCheckpointError: not a loadable checkpoint,
        or ``output`` is the source. IsADirectoryError / NotADirectoryError: ``output`` is a folder, or a
        file is among its folders. OSError(ENOSPC): the disk filled up while writing.
    """
    check_options(CONVERT, dict(source=source, output=output, reparameterize=reparameterize, half=half))
    src = Path(source).expanduser()
    if not src.is_file():
        raise InputNotFoundError(f"checkpoint not found: {src}")
    out = check_not_an_input(check_output_file(Path(output).expanduser(), "convert output"), (src,), "output")
    model = load_model(src)
    was_dual = bool(getattr(model, "is_dual", False))
    if reparameterize and was_dual:
        model = drop_pgi(model)
    if half:
        model = model.half()
    save_checkpoint(out, model, converted_from=src.name, reparameterized=bool(reparameterize and was_dual))
    torch.load(out, map_location="cpu", weights_only=True)  # the promise of this function, checked
    LOGGER.info(
        "converted %s -> %s (%s%s, %.1f MB)",
        src,
        out,
        "gelan (PGI removed)" if reparameterize and was_dual else ("yolov9 (PGI)" if was_dual else "gelan"),
        ", fp16" if half else "",
        out.stat().st_size / 1e6,
    )
    return out
