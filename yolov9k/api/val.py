"""``yolov9k.val``: COCO mAP of a model on a dataset split, a per-class table, and COCO-json predictions.

The loop itself is :func:`yolov9k.engine.validate.validate` (the one the trainer runs every epoch).
This module resolves the model and the data, builds the validation loader (rectangular batches, as
the official ``val.py``), prints the results, and for ``save_json`` writes the detections that the
loop hands back for each batch (``on_batch``: post-processed once, in original-image pixels).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolov9k.api.model_source import LOGGER, check_model_arg, resolve_model
from yolov9k.data import (
    DatasetConfig,
    YoloDataset,
    build_dataloader,
    ensure_demo_dataset,
    load_dataset_config,
    read_coco_json,
)
from yolov9k.data.coco import coco_image_id
from yolov9k.data.splits import load_split, round_imgsz
from yolov9k.engine.validate import validate
from yolov9k.errors import ConfigError, InputError
from yolov9k.io.files import atomic_output
from yolov9k.metrics import to_coco_json
from yolov9k.options import check_options
from yolov9k.options.verbs import VAL
from yolov9k.run_setup import one_line_worker_error, run_dir, select_device

__all__ = ["val", "format_table"]


_CocoIds = tuple[dict[str, int | str], list[int] | None]


def _coco_ids(cfg: DatasetConfig, split: str) -> _CocoIds:
    """(image file -> COCO image id, COCO category id per class index) from the split's COCO json, read
    and checked before the run (none: file stems and class indices)."""
    json_file = cfg.coco_json.get(split)
    if json_file is None:
        return {}, None
    coco = read_coco_json(json_file, cfg.given_names())
    cats = coco.category_ids
    if cats and len(cats) != cfg.nc:
        LOGGER.warning(
            "COCO json has %d categories for %d classes: category ids = class ids", len(cats), cfg.nc
        )
        cats = []
    return coco.image_ids(cfg.coco_images.get(split)), cats or None


def _write_predictions(
    out: Path,
    files: Sequence[str],
    dets: Sequence[torch.Tensor],
    ids: _CocoIds,
) -> None:
    """COCO result rows of the detections (original-image pixels) of each image file, written atomically
    (a full disk: one line naming ``out``)."""
    by_file, cats = ids
    rows = to_coco_json(list(dets), [coco_image_id(file, by_file) for file in files], cats)
    with atomic_output(out) as tmp:
        tmp.write_text(json.dumps(rows), encoding="utf-8")


def format_table(metrics: Mapping[str, Any], names: Mapping[int, str]) -> str:
    """The per-class results table (class, images, instances, P, R, mAP50, mAP50-95)."""
    head = f"{'Class':>22}{'Images':>11}{'Instances':>11}{'P':>11}{'R':>11}{'mAP50':>11}{'mAP50-95':>11}"
    rows = [
        head,
        f"{'all':>22}{metrics['num_images']:>11}{metrics['num_targets']:>11}"
        f"{metrics['precision']:>11.3g}{metrics['recall']:>11.3g}{metrics['map50']:>11.3g}{metrics['map50_95']:>11.3g}",
    ]
    for name in (names[i] for i in sorted(names)):
        pc = metrics["per_class"].get(name)
        if pc is None or pc["targets"] == 0:
            continue
        rows.append(
            f"{name:>22}{'':>11}{pc['targets']:>11}{'':>11}{'':>11}{pc['ap50']:>11.3g}{pc['ap50_95']:>11.3g}"
        )
    return "\n".join(rows)


def val(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | dict | None = None,
    imgsz: int = 640,
    batch: int = 32,
    conf: float = 0.001,
    iou: float = 0.7,
    device: str | int | torch.device | None = None,
    half: bool = False,
    save_json: bool = False,
    project: str | os.PathLike | None = None,
    name: str | None = None,
    split: str = "val",
    max_det: int = 300,
    workers: int = 4,
    rect: bool = True,
    plots: bool = True,
    verbose: bool = True,
    cache: str | bool = False,
) -> dict[str, Any]:
    """Validate a model: COCO mAP@0.5:0.95 and mAP@0.5 (equal to pycocotools on the same detections):
    :func:`_prepare` (model, data, loader), the per-batch loop of ``validate``, :func:`_finish`.

    Args:
        model: a DetectionModel, a checkpoint file (official or yolov9k) or a zoo name.
        data: dataset YAML / dict; None = the demo data set. imgsz: image size in pixels (long side;
            rounded up to a multiple of the stride).
        batch: images per batch. workers: dataloader processes. conf, iou, max_det: post-processing
            (the official validation values by default).
        device: "cpu", "cuda", "0", ... (default: CUDA when available). half: fp16 (CUDA only).
        save_json: write ``predictions.json`` in COCO result format (image and category ids from
            the split's COCO json when the dataset has one, else file stems and class indices).
        project, name: output folder ``project/name`` (project None = ``runs/val``).
        split: "val", "test" or "train". rect: rectangular batches (as the official val.py). plots:
            PR curve, confusion matrix. verbose: print the per-class table and speeds.
        cache: "ram", "disk" or False: keep the decoded, resized images (see ``yolov9k.data.image_cache``;
            worth it when the same split is validated again, e.g. the disk cache across runs).
    Returns:
        The metrics of :func:`yolov9k.engine.validate.validate` (``map50_95``, ``map50``, ``map75``,
        ``precision``, ``recall``, ``fitness``, ``per_class``, ``speed`` ms per image, ...) plus
        ``save_dir`` and, with ``save_json``, ``json`` (the file written).
    Raises:
        OptionError: an argument out of its range (``docs/options.md``), before any work.
        FileNotFoundError: model or data not found. ValueError: bad arguments, empty split, a
        dataset whose class count differs from the model's, or (``save_json``) an unusable COCO json.
        OSError(ENOSPC): the disk filled up writing ``predictions.json`` (no partial file is left).
    """
    cache = check_options(VAL, dict(
        data=data, imgsz=imgsz, batch=batch, conf=conf, iou=iou, half=half, save_json=save_json,
        project=project, name=name, split=split, max_det=max_det, workers=workers, rect=rect, plots=plots,
        cache=cache,
    ))["cache"]  # fmt: skip
    run = _prepare(model, data, imgsz, batch, device, half, split, workers, rect, save_json, cache)
    save_dir = run_dir(project, "val", name)
    kept = _Kept()
    try:
        metrics = validate(
            run.net, run.loader, run.names, conf=conf, iou=iou, max_det=max_det, device=run.device,
            half=half, plots_dir=save_dir if plots else None, on_batch=kept.add if save_json else None,
        )  # fmt: skip
    except RuntimeError as e:
        raise one_line_worker_error(e) from e  # a user's error in a worker: one line; a bug: as it was
    return _finish(metrics, save_dir, run, kept if save_json else None, batch, verbose)


@dataclass
class _Run:
    """What :func:`_prepare` resolved: the model, the loader of the split, and the json's ids."""

    net: nn.Module
    device: torch.device
    names: dict[int, str]
    size: int
    loader: Any
    coco_ids: _CocoIds


@dataclass
class _Kept:
    """The per-batch detections ``save_json`` needs (``validate``'s ``on_batch``)."""

    files: list[str] = field(default_factory=list)
    dets: list[torch.Tensor] = field(default_factory=list)

    def add(self, batch_files: Sequence[str], batch_dets: list[torch.Tensor]) -> None:
        self.files.extend(batch_files)
        self.dets.extend(batch_dets)


def _prepare(
    model: nn.Module | str | os.PathLike,
    data: str | os.PathLike | dict | None,
    imgsz: int,
    batch: int,
    device: str | int | torch.device | None,
    half: bool,
    split: str,
    workers: int,
    rect: bool,
    save_json: bool,
    cache: str | bool = False,
) -> _Run:
    """Device, model, data set, split scan and loader; with ``save_json`` the COCO json is read and
    checked now (a bad one fails before the run, not after it)."""
    dev = select_device(device)
    if half and dev.type != "cuda":
        raise ConfigError("half=True (fp16 inference) needs a CUDA device")
    check_model_arg(model)
    cfg = load_dataset_config(data if data is not None else ensure_demo_dataset())
    net = resolve_model(model, dev, num_classes=cfg.nc)
    if int(net.nc) != cfg.nc:
        raise InputError(f"the model has {net.nc} classes but the dataset {data!r} has {cfg.nc}")
    stride = int(max(float(s) for s in net.stride))
    size = round_imgsz(imgsz, stride, LOGGER.warning)
    samples, stats = load_split(cfg, split, f"dataset {data!r}")
    LOGGER.info("%s: %s", split, stats.summary())
    if stats.boxes == 0:  # every metric would be 0 without saying why
        raise InputError(
            f"dataset {data!r}: the {split} split has no boxes at all ({stats.summary()}); mAP needs "
            "labels: labels/ beside images/ (images/x.jpg -> labels/x.txt) or the split's COCO json"
        )
    coco_ids = _coco_ids(cfg, split) if save_json else ({}, None)
    dataset = YoloDataset(
        samples, size, augment=False, rect=rect, batch_size=batch, stride=stride, cache=cache
    )
    loader = build_dataloader(
        dataset, batch, workers, shuffle=False, persistent_workers=False, pin_memory=dev.type == "cuda"
    )
    return _Run(net, dev, dict(cfg.names), size, loader, coco_ids)


def _finish(
    metrics: dict[str, Any], save_dir: Path, run: _Run, kept: _Kept | None, batch: int, verbose: bool
) -> dict[str, Any]:
    """``predictions.json`` (when ``kept``), the table and speeds (``verbose``), the metrics returned."""
    metrics["save_dir"] = save_dir
    if kept is not None:
        metrics["json"] = save_dir / "predictions.json"
        _write_predictions(metrics["json"], kept.files, kept.dets, run.coco_ids)
    if verbose:
        sp = metrics["speed"]
        print(format_table(metrics, run.names))
        print(
            f"Speed: {sp['preprocess']:.1f} ms pre-process, {sp['inference']:.1f} ms inference, "
            f"{sp['postprocess']:.1f} ms NMS per image at shape ({batch}, 3, {run.size}, {run.size})"
        )
        extra = f" (COCO predictions: {metrics['json']})" if kept is not None else ""
        print(f"Results saved to {save_dir}{extra}")
    return metrics
