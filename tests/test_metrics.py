"""yolov9k.metrics against pycocotools COCOeval, plus the confusion matrix and COCO json export."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
import torch

from yolov9k.metrics import (
    ConfusionMatrix,
    DetectionEvaluator,
    coco_box_iou,
    fitness,
    plot_pr_curve,
    to_coco_json,
)

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

# Largest |ours - pycocotools| seen over all parity tests of this session (reported at the end).
MAX_DIFF: list[float] = [0.0]


# ---------------------------------------------------------------------------------------------
# pycocotools on the same data
def _xywh(row: np.ndarray) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return [x1, y1, x2 - x1, y2 - y1]


def run_cocoeval(
    preds: list[torch.Tensor], targets: list[torch.Tensor], crowds: list[torch.Tensor], nc: int
) -> COCOeval | None:
    """COCOeval on the same boxes (float32 values widened to float64, as the evaluator does).

    Image ids are 1..N in feed order, category id = class + 1. Returns None when there is no
    detection at all (pycocotools' loadRes cannot take an empty list).
    """
    images = [{"id": i + 1} for i in range(len(targets))]
    anns = []
    for i, (t, c) in enumerate(zip(targets, crowds)):
        for row, is_crowd in zip(t.double().numpy(), c.numpy()):
            box = _xywh(row[1:])
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(row[0]) + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": int(is_crowd),
                }
            )
    dets = [
        {"image_id": i + 1, "category_id": int(row[5]) + 1, "bbox": _xywh(row[:4]), "score": float(row[4])}
        for i, p in enumerate(preds)
        for row in p.double().numpy()
    ]
    if not dets:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": k + 1} for k in range(nc)]}
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def coco_per_class(ev: COCOeval, iou: float | None = None) -> np.ndarray:
    """Per-class AP from COCOeval's precision table (area all, maxDets 100), nan where absent."""
    s = ev.eval["precision"][:, :, :, 0, -1]
    if iou is not None:
        s = s[np.where(iou == ev.params.iouThrs)[0]]
    out = np.full(s.shape[2], np.nan)
    for k in range(s.shape[2]):
        v = s[:, :, k]
        if (v > -1).any():
            out[k] = v[v > -1].mean()
    return out


def assert_parity(ours: dict, ev: COCOeval, area_ranges: bool = False, tol: float = 1e-12) -> float:
    """Compare every summary; return the largest absolute difference."""
    pairs = [("map50_95", 0), ("map50", 1), ("map75", 2)]
    if area_ranges:
        pairs += [("map_small", 3), ("map_medium", 4), ("map_large", 5)]
    diffs = {}
    for key, i in pairs:
        ref = ev.stats[i]
        got = ours[key]
        if ref == -1:  # no gt in that range: COCO prints -1
            assert got == 0.0 or math.isnan(got), f"{key}: {got} where COCO has no gt (-1)"
            continue
        diffs[key] = abs(got - ref)
    for key, iou in (("per_class_ap50_95", None), ("per_class_ap50", 0.5), ("per_class_ap75", 0.75)):
        ref = coco_per_class(ev, iou)
        got = ours[key]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{key}: classes present differ")
        ok = ~np.isnan(ref)
        diffs[key] = float(np.abs(got[ok] - ref[ok]).max()) if ok.any() else 0.0
    worst = max(diffs.values())
    MAX_DIFF[0] = max(MAX_DIFF[0], worst)
    assert worst <= tol, f"differences vs pycocotools above {tol}: " + ", ".join(
        f"{k}={v:.3e}" for k, v in diffs.items() if v > tol
    )
    return worst


# ---------------------------------------------------------------------------------------------
# random data with the awkward cases COCO handles specially
def make_data(
    seed: int,
    n_images: int = 50,
    nc: int = 5,
    integer_boxes: bool = False,
    coarse_scores: bool = False,
    crowd_rate: float = 0.1,
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """(preds, targets, crowds) per image. The last class never has a gt; some images have no gt
    (but detections), some no detection, one image has > 100 detections of one class; detections
    are duplicated, jittered copies of gts plus background noise; scores can be coarse (ties)."""
    g = np.random.default_rng(seed)
    preds, targets, crowds = [], [], []
    for i in range(n_images):
        m = 0 if i % 7 == 3 else int(g.integers(0, 9))
        xy = g.uniform(0, 560, (m, 2))
        wh = g.uniform(2, 200, (m, 2)) * g.choice([0.1, 1.0], (m, 1))  # small and large objects
        gt_boxes = np.concatenate([xy, xy + wh], 1)
        if m >= 2 and i % 5 == 0:
            gt_boxes[1] = gt_boxes[0]  # identical gts: equal IoU for every detection
        gt_cls = g.integers(0, nc - 1, m)
        crowd = g.random(m) < crowd_rate

        rows = []
        if i % 11 != 5:  # else: no detections for this image
            for b, c in zip(gt_boxes, gt_cls):
                for _ in range(int(g.integers(0, 4))):  # 0..3 hits per gt, duplicates included
                    jitter = g.normal(0, 0.08, 4) * np.r_[b[2:] - b[:2], b[2:] - b[:2]]
                    cls = c if g.random() < 0.85 else g.integers(0, nc)
                    rows.append([*(b + jitter), g.random(), cls])
            n_noise = 150 if i == 10 else int(g.integers(0, 12))
            for _ in range(n_noise):
                xy0 = g.uniform(0, 600, 2)
                rows.append(
                    [*xy0, *(xy0 + g.uniform(1, 150, 2)), g.random(), 0 if i == 10 else g.integers(0, nc)]
                )
        p = np.array(rows, dtype=np.float64).reshape(-1, 6)
        if len(p) and i % 9 == 0:
            p = np.concatenate([p, p[: max(1, len(p) // 3)]])  # exact duplicate detections
        if integer_boxes:
            p[:, :4] = np.round(p[:, :4])
            gt_boxes = np.round(gt_boxes)
        if coarse_scores:
            p[:, 4] = np.round(p[:, 4] * 10) / 10  # many tied scores
        preds.append(torch.tensor(p, dtype=torch.float32))
        targets.append(torch.tensor(np.concatenate([gt_cls[:, None], gt_boxes], 1), dtype=torch.float32))
        crowds.append(torch.tensor(crowd))
    return preds, targets, crowds


def evaluate(preds, targets, crowds, nc, batch: int = 8, **kw) -> dict:
    ev = DetectionEvaluator(nc)
    for s in range(0, len(preds), batch):  # several update() calls, as a val loop makes them
        ev.update(preds[s : s + batch], targets[s : s + batch], crowds[s : s + batch])
    return ev.compute(**kw)


@pytest.mark.parametrize(
    "seed,integer_boxes,coarse_scores",
    [
        (0, False, False),
        (1, False, True),
        (2, True, False),
        (3, True, True),
        (4, False, False),
        (5, True, True),
    ],
)
def test_matches_pycocotools(seed: int, integer_boxes: bool, coarse_scores: bool) -> None:
    nc = 5
    preds, targets, crowds = make_data(seed, nc=nc, integer_boxes=integer_boxes, coarse_scores=coarse_scores)
    assert max(len(p) for p in preds) > 100
    ours = evaluate(preds, targets, crowds, nc, area_ranges=True)
    ref = run_cocoeval(preds, targets, crowds, nc)
    assert ref is not None
    assert_parity(ours, ref, area_ranges=True)
    assert 0.05 < ours["map50_95"] < 0.95  # the data is neither trivial nor hopeless
    assert np.isnan(ours["per_class_ap50_95"][nc - 1])  # class without gt
    assert ours["num_images"] == len(targets)
    n_gt = sum(int((~c).sum()) for c in crowds)
    assert ours["num_targets"] == n_gt == int(ours["per_class_targets"].sum())


def test_matches_pycocotools_many_dense_images() -> None:
    """Crowd-heavy, with the max_dets cut biting in many (image, class) groups."""
    preds, targets, crowds = make_data(11, n_images=30, nc=3, crowd_rate=0.4, coarse_scores=True)
    preds = [torch.cat([p, p, p]) if len(p) else p for p in preds]  # triplicates: > 100 per class
    ours = evaluate(preds, targets, crowds, 3, batch=30)
    ref = run_cocoeval(preds, targets, crowds, 3)
    assert_parity(ours, ref)


def test_tie_rules_by_hand() -> None:
    """A detection equally close to two gts takes the later one; a crowd gt absorbs any number of
    detections without making them false positives; a regular gt is preferred to a crowd gt even at
    lower IoU."""
    t = torch.tensor([[0, 0, 0, 10, 10], [0, 0, 0, 10, 10], [0, 100, 100, 200, 200], [0, 0, 0, 20, 20]])
    crowd = torch.tensor([False, False, True, False])
    p = torch.tensor(
        [
            [0, 0, 10, 10, 0.9, 0],  # IoU 1 with gts 0 and 1 -> takes gt 1 (later); IoU .25 with gt 3
            [0, 0, 10, 10, 0.8, 0],  # takes gt 0
            [0, 0, 10, 10, 0.7, 0],  # both taken: false positive
            [100, 100, 150, 150, 0.6, 0],  # inside the crowd box: ignored
            [100, 100, 200, 200, 0.5, 0],  # ignored as well (crowd taken again)
            [0, 0, 19, 19, 0.4, 0],  # gt 3 (IoU .9025)
        ]
    )
    ev = DetectionEvaluator(1)
    ev.update([p], [t], [crowd])
    ours = ev.compute()
    ref = run_cocoeval([p], [t], [crowd], 1)
    assert_parity(ours, ref)
    matched, ignored = ev._match(ev._gather(), ev._gather()["gt_crowd"])
    # stored order is score-descending, the same as the rows above
    assert matched[0].tolist() == [True, True, False, True, True, True]
    assert ignored[0].tolist() == [False, False, False, True, True, False]
    # at IoU .5: precision 1, 1, 2/3, (ignored x2), 3/4 -> recall 1/3, 2/3, 2/3, 1
    # AP50 = (34 * 1 + 33 * 1 + 34 * 0.75) / 101 (recall thresholds 0..1 in 0.01 steps)
    assert ours["map50"] == pytest.approx((34 + 33 + 34 * 0.75) / 101, abs=1e-12)


def test_equal_iou_tie_goes_to_the_later_gt() -> None:
    """Detection A has IoU exactly 0.5 with gt0 and gt1 and takes gt1 (the later one), so the
    weaker detection B can still take gt0 (IoU .95; IoU .345 with gt1). Taking gt0 first would
    turn B into a false positive at IoU 0.5."""
    t = torch.tensor([[0, 0, 0, 10, 20], [0, 0, 0, 20, 10]], dtype=torch.float32)
    p = torch.tensor([[0, 0, 10, 10, 0.9, 0], [0, 0, 10, 19, 0.8, 0]], dtype=torch.float32)
    ev = DetectionEvaluator(1)
    ev.update([p], [t])
    ours = ev.compute()
    assert ours["map50"] == pytest.approx(1.0, abs=1e-12)
    assert_parity(ours, run_cocoeval([p], [t], [torch.zeros(2, dtype=torch.bool)], 1))


def test_perfect_and_empty_cases() -> None:
    boxes = torch.tensor([[1, 10, 10, 50, 60], [0, 100, 100, 300, 220]], dtype=torch.float32)
    perfect = torch.cat([boxes[:, 1:], torch.ones(2, 1), boxes[:, :1]], 1)
    ev = DetectionEvaluator(3)
    ev.update([perfect], [boxes])
    r = ev.compute()
    for key in ("map50_95", "map50", "map75"):
        assert r[key] == pytest.approx(1.0, abs=1e-12)  # tp / (tp + eps): not exactly 1, as in COCO
    assert r["precision"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0)
    assert np.isnan(r["per_class_ap50"][2]) and r["pr_curve"]["precision"].shape == (3, 101)
    assert fitness(r) == pytest.approx(1.0)

    empty = DetectionEvaluator(3).compute()  # no image at all
    assert empty["map50_95"] == empty["map50"] == 0.0 and empty["num_images"] == 0
    assert np.isnan(empty["per_class_ap50_95"]).all() and empty["precision"] == 0.0

    ev = DetectionEvaluator(3)  # images without gts, only false positives
    ev.update([perfect, None], [None, torch.zeros(0, 5)])
    r = ev.compute(area_ranges=True)
    assert r["map50_95"] == 0.0 and math.isnan(r["map_small"]) and r["num_targets"] == 0

    ev = DetectionEvaluator(3)  # gts but no detections: AP 0 for present classes
    ev.update([torch.zeros(0, 6)], [boxes])
    r = ev.compute()
    assert r["map50_95"] == 0.0 and r["recall"] == 0.0
    assert r["per_class_ap50"][:2].tolist() == [0.0, 0.0] and np.isnan(r["per_class_ap50"][2])


def test_max_dets_cut_is_per_image_and_class() -> None:
    """101 low-score false positives of class 0 push the true hit out of the top 100 of its
    (image, class) group; detections of class 1 are not affected."""
    t = torch.tensor([[0, 0, 0, 10, 10], [1, 50, 50, 60, 60]], dtype=torch.float32)
    fps = torch.tensor([[200, 200, 210, 210, 0.9, 0]]).repeat(101, 1)
    hits = torch.tensor([[0, 0, 10, 10, 0.1, 0], [50, 50, 60, 60, 0.1, 1]], dtype=torch.float32)
    ev = DetectionEvaluator(2)
    ev.update([torch.cat([fps, hits])], [t])
    r = ev.compute()
    assert r["per_class_ap50"][0] == 0.0 and r["per_class_ap50"][1] == pytest.approx(1.0, abs=1e-12)
    ev = DetectionEvaluator(2, max_dets=102)
    ev.update([torch.cat([fps, hits])], [t])
    assert ev.compute()["per_class_ap50"][0] > 0


def test_coco_box_iou_matches_pycocotools() -> None:
    from pycocotools import mask as mask_utils

    g = np.random.default_rng(0)
    d = np.c_[g.uniform(0, 50, (40, 2)), g.uniform(-2, 30, (40, 2))]  # some negative sizes
    t = np.c_[g.uniform(0, 50, (30, 2)), g.uniform(0, 30, (30, 2))]
    crowd = g.random(30) < 0.3
    ref = mask_utils.iou(d.tolist(), t.tolist(), crowd.astype(np.uint8).tolist())
    np.testing.assert_array_equal(coco_box_iou(d, t, crowd), ref)


def test_invalid_input_is_rejected() -> None:
    ev = DetectionEvaluator(2)
    good_t = torch.tensor([[0, 0, 0, 5, 5]], dtype=torch.float32)
    with pytest.raises(ValueError, match="NaN"):
        ev.update([torch.tensor([[0, 0, float("nan"), 5, 0.5, 0]])], [good_t])
    with pytest.raises(ValueError, match="class ids"):
        ev.update([None], [torch.tensor([[2, 0, 0, 5, 5]], dtype=torch.float32)])
    with pytest.raises(ValueError, match="shape"):
        ev.update([torch.zeros(3, 5)], [good_t])
    with pytest.raises(ValueError, match="one entry per image"):
        ev.update([None, None], [good_t])
    assert ev.num_images == 0


# ---------------------------------------------------------------------------------------------
def test_confusion_matrix_by_hand() -> None:
    """Three gts (cls 0, 1, 2) and four detections above conf:
    A on gt0 with class 0 (correct), B on gt1 but class 2 (confusion 1 -> predicted 2),
    C on gt1 with lower IoU (gt1 already used: background FP of class 1), D on nothing (FP class 0);
    gt2 is missed (background FN); E is below the confidence threshold and is dropped."""
    labels = torch.tensor(
        [[0, 0, 0, 10, 10], [1, 20, 20, 40, 40], [2, 100, 100, 120, 120]], dtype=torch.float32
    )
    dets = torch.tensor(
        [
            [0, 0, 10, 10, 0.9, 0],  # A
            [20, 20, 40, 40, 0.8, 2],  # B IoU 1
            [20, 20, 40, 36, 0.7, 1],  # C IoU .8
            [300, 300, 310, 310, 0.6, 0],  # D
            [100, 100, 120, 120, 0.2, 2],  # E (conf <= 0.25)
        ]
    )
    cm = ConfusionMatrix(3)
    cm.process_batch(dets, labels)
    expected = np.zeros((4, 4))
    expected[0, 0] = 1  # A
    expected[2, 1] = 1  # B: predicted 2, true 1
    expected[1, 3] = 1  # C: predicted 1, no gt
    expected[0, 3] = 1  # D
    expected[3, 2] = 1  # gt2 missed
    np.testing.assert_array_equal(cm.matrix, expected)
    tp, fp = cm.tp_fp()
    assert tp.tolist() == [1, 0, 0] and fp.tolist() == [1, 1, 1]

    cm.process_batch(None, labels)  # no detections: every gt is a background FN
    assert cm.matrix[3, :3].tolist() == [1, 1, 2]
    cm.process_batch(dets[3:4], labels[:0])  # no gts: the detection is a background FP
    assert cm.matrix[0, 3] == 2
    cm.process_batch(dets[3:4], None)
    assert cm.matrix[0, 3] == 3 and cm.matrix.sum() == 5 + 3 + 1 + 1


def test_to_coco_json_round_trip() -> None:
    """Export -> pycocotools loadRes -> COCOeval gives our numbers (integer boxes and 2-decimal
    scores survive the rounding), and the fields are what COCO expects."""
    preds, targets, crowds = make_data(7, n_images=20, nc=4, integer_boxes=True)
    for p in preds:
        p[:, 4] = torch.round(p[:, 4] * 100) / 100
    js = to_coco_json(preds, image_ids=list(range(1, 21)), category_ids=[1, 2, 3, 4])
    assert len(js) == sum(len(p) for p in preds)
    first = next(i for i, p in enumerate(preds) if len(p))
    x1, y1, x2, y2, conf, cls = preds[first][0].tolist()
    assert js[0] == {
        "image_id": first + 1,
        "category_id": int(cls) + 1,
        "bbox": [x1, y1, x2 - x1, y2 - y1],
        "score": round(conf, 5),
    }
    ours = evaluate(preds, targets, crowds, 4)
    ref = run_cocoeval(preds, targets, crowds, 4)  # built from the tensors
    with contextlib.redirect_stdout(io.StringIO()):
        dt = ref.cocoGt.loadRes(js)  # built from the json
        ev = COCOeval(ref.cocoGt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert_parity(ours, ev)
    assert to_coco_json([None], ["img.jpg"]) == []


def test_plots(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    preds, targets, crowds = make_data(0, n_images=10, nc=3)
    r = evaluate(preds, targets, crowds, 3)
    assert plot_pr_curve(r["pr_curve"], ["a", "b", "c"], tmp_path / "pr.png", dpi=50).stat().st_size > 0
    cm = ConfusionMatrix(3)
    for p, t in zip(preds, targets):
        cm.process_batch(p, t)
    assert cm.plot(tmp_path / "cm.png", ["a", "b", "c"], dpi=50).stat().st_size > 0


def test_report_max_diff() -> None:
    """Runs last in this file: prints the largest difference measured above (pytest -s to see)."""
    print(f"\nmax |ours - pycocotools| over the parity tests: {MAX_DIFF[0]:.3e}")
