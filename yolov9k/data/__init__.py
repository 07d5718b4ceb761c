"""Data pipeline: dataset YAMLs, label scanning and caching, augmentations, loaders, and the demo set."""

from __future__ import annotations

from yolov9k.data.coco import load_coco_json, read_coco_json
from yolov9k.data.dataset import YoloDataset, collate_fn
from yolov9k.data.dataset_config import DatasetConfig, load_dataset_config
from yolov9k.data.demo import DEMO_NAMES, default_demo_root, ensure_demo_dataset, generate_demo_dataset
from yolov9k.data.geometry import clip_boxes, letterbox, scale_boxes
from yolov9k.data.hyp import HYP_SCRATCH_HIGH, resolve_hyp
from yolov9k.data.images import ImageReadError, read_image
from yolov9k.data.labels import (
    Sample,
    ScanStats,
    img2label_paths,
    require_boxes,
    scan_dataset,
)
from yolov9k.data.loader import YoloDataLoader, build_dataloader

__all__ = [
    "HYP_SCRATCH_HIGH",
    "resolve_hyp",
    "DEMO_NAMES",
    "generate_demo_dataset",
    "default_demo_root",
    "ensure_demo_dataset",
    "DatasetConfig",
    "load_dataset_config",
    "ImageReadError",
    "read_image",
    "Sample",
    "ScanStats",
    "img2label_paths",
    "scan_dataset",
    "load_coco_json",
    "read_coco_json",
    "require_boxes",
    "YoloDataset",
    "collate_fn",
    "letterbox",
    "scale_boxes",
    "clip_boxes",
    "YoloDataLoader",
    "build_dataloader",
]
