"""One split of a data set as verified samples, and the network image size a model can take.

Shared by training (``yolov9k.engine.trainer``) and validation (``yolov9k.api.val``), so that both
read a split the same way (YOLO label files or a COCO json, with the same label cache).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from yolov9k.data.coco import load_coco_json
from yolov9k.data.dataset_config import DatasetConfig
from yolov9k.data.labels import Sample, ScanStats, scan_dataset
from yolov9k.errors import InputError

__all__ = ["load_split", "round_imgsz"]


def load_split(
    cfg: DatasetConfig, split: str, where: str, cache_dir: str | os.PathLike | None = None
) -> tuple[list[Sample], ScanStats]:
    """Verified samples of ``split``: its YOLO label files, or the COCO json the split is given as.

    Args:
        cfg: the loaded data set. split: "train", "val" or "test".
        where: names the data set in errors (e.g. "dataset coco.yaml").
        cache_dir: where label caches go when the images' folder is read-only (YOLO labels only).
    Raises:
        ValueError: the split lists no images, or its COCO json is unusable (one line naming it).
    """
    files = cfg.split(split)
    if not files:
        raise InputError(f"{where}: the {split} split has no images")
    if split in cfg.coco_images:
        samples, stats, _ = load_coco_json(
            cfg.coco_json[split], cfg.coco_images[split], cfg.nc, f"{split}: ", cfg.given_names()
        )
        return samples, stats
    return scan_dataset(files, cfg.nc, cache_dir=cache_dir, prefix=f"{split}: ")


def round_imgsz(imgsz: int, stride: int, warn: Callable[[str], object] | None = None) -> int:
    """``imgsz`` rounded up to a multiple of ``stride``; ``warn`` (e.g. a logger's warning) is told
    when that changes it."""
    size = -(-int(imgsz) // int(stride)) * int(stride)
    if size != imgsz and warn is not None:
        warn(f"imgsz={imgsz} is not a multiple of the model stride {stride}: using {size}")
    return size
