"""COCO box mAP: yolov9k.metrics.DetectionEvaluator vs pycocotools COCOeval on the same detections.

Both sides start from per-image tensors, as a validation loop has them: pycocotools' time includes
building its COCO objects (createIndex, loadRes), ours includes ``update``. Data: val-like random
detections (jittered gts, 60% right class, scores skewed low), 80 classes, DETS detections per image.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from conftest import device_name, pick

from yolov9k.metrics import DetectionEvaluator

IMAGES = pick(500, 50)
DETS = pick(100, 50)
NC = 80


def make_val_like(n_images: int, dets: int, nc: int = NC, seed: int = 0):
    """(preds, targets, crowds) lists: (dets, 6) xyxy/conf/cls, (m, 5) cls/xyxy, (m,) bool, px."""
    g = np.random.default_rng(seed)
    preds, targets, crowds = [], [], []
    for _ in range(n_images):
        m = int(g.integers(1, 15))
        xy, wh = g.uniform(0, 560, (m, 2)), g.uniform(4, 250, (m, 2))
        gt_boxes, gt_cls = np.c_[xy, xy + wh], g.integers(0, nc, m)
        src = g.integers(0, m, dets)
        boxes = gt_boxes[src] + g.normal(0, 0.15, (dets, 4)) * np.c_[wh[src], wh[src]]
        cls = np.where(g.random(dets) < 0.6, gt_cls[src], g.integers(0, nc, dets))
        preds.append(torch.tensor(np.c_[boxes, g.random(dets) ** 3, cls], dtype=torch.float32))
        targets.append(torch.tensor(np.c_[gt_cls, gt_boxes], dtype=torch.float32))
        crowds.append(torch.tensor(g.random(m) < 0.02))
    return preds, targets, crowds


def ours(preds, targets, crowds) -> float:
    ev = DetectionEvaluator(NC)
    ev.update(preds, targets, crowds)
    return ev.compute()["map50_95"]


def pycocotools_eval(preds, targets, crowds) -> float:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    anns = []
    for i, (t, c) in enumerate(zip(targets, crowds)):
        for row, crowd in zip(t.double().tolist(), c.tolist()):
            box = [row[1], row[2], row[3] - row[1], row[4] - row[2]]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(row[0]) + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(crowd),
                }
            )
    dets = [
        {
            "image_id": i + 1,
            "category_id": int(r[5]) + 1,
            "bbox": [r[0], r[1], r[2] - r[0], r[3] - r[1]],
            "score": r[4],
        }
        for i, p in enumerate(preds)
        for r in p.double().tolist()
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1} for i in range(len(targets))],
            "annotations": anns,
            "categories": [{"id": k + 1} for k in range(NC)],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


@pytest.mark.parametrize("provider", ["yolov9k", "pycocotools"])
def test_bench_coco_map(benchmark, provider: str) -> None:
    if provider == "pycocotools":
        pytest.importorskip("pycocotools")
    data = make_val_like(IMAGES, DETS)
    fn = ours if provider == "yolov9k" else pycocotools_eval
    benchmark.group = f"coco-map {IMAGES} images x {DETS} dets, {NC} classes"
    benchmark.extra_info.update(device=device_name("cpu"), images=IMAGES, dets_per_image=DETS)
    rounds = 3 if provider == "yolov9k" else 1  # pycocotools takes tens of seconds per round
    value = benchmark.pedantic(fn, args=data, rounds=rounds, iterations=1)
    benchmark.extra_info["map50_95"] = value
    assert 0.0 < value < 1.0
