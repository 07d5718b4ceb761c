"""Detection metrics: a vectorised COCO box evaluator, the val-style confusion matrix, plots and COCO json.

``DetectionEvaluator`` reproduces pycocotools ``COCOeval(iouType="bbox")`` (evaluate + accumulate +
summarize) on the same detections, to float64 rounding. The COCO rules it follows:

* IoU of ``xywh`` boxes in float64 as pycocotools' C ``bbIou``: ``w = min(x_d + w_d, x_g + w_g) -
  max(x_d, x_g)`` (no +1), zero unless both overlaps are > 0, and for crowd gts the union is the
  detection's area alone. ``yolov9k.ops.box_iou`` is not used here: it works in float32 on xyxy
  corners and would move IoUs that sit exactly on a threshold.
* Per image and class only the ``max_dets`` highest-scoring detections count (stable sort on -score,
  so equal scores keep input order).
* Greedy matching per IoU threshold in score order: a detection takes, among the gts of its image
  and class with IoU >= threshold that are not yet taken (crowd gts can be taken many times), a
  non-ignored gt before an ignored one, then the highest IoU, then (on equal IoU) the later gt.
  Detections matched to ignored gts (crowd, area out of range) are ignored; unmatched detections
  whose area is out of range are ignored too.
* Per class, detections of all images are stably sorted on -score (ties: earlier image first);
  precision is made monotone from the right and read at the 101 recall thresholds with
  ``searchsorted(side="left")`` (0 beyond the last recall reached). Classes without a non-ignored gt
  are left out of the means.

The matching is vectorised over all images, classes and the 10 IoU thresholds at once: the only
Python loop runs over the detection rank inside its (image, class) group, at most ``max_dets``
steps, and visits only (detection, gt) pairs with IoU >= 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from yolov9k.io.files import save_figure
from yolov9k.ops.box_iou import box_iou_reference

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "AREA_RANGES",
    "coco_box_iou",
    "DetectionEvaluator",
    "ConfusionMatrix",
    "plot_pr_curve",
    "to_coco_json",
    "fitness",
]

# Built exactly as pycocotools builds them: the AP at .5 and .75 is looked up by equality.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
# Box area ranges in px^2, inclusive at both ends as in COCOeval.
AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
_EPS = float(np.spacing(1))  # COCOeval's guard in tp / (tp + fp + eps)


def _to_numpy(x: Tensor | np.ndarray | None, cols: int, what: str) -> np.ndarray:
    """(n, cols) float64 array from a tensor/array; ``None`` or an empty input -> (0, cols)."""
    if x is None:
        return np.zeros((0, cols))
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, cols))
    if a.ndim != 2 or a.shape[1] != cols:
        raise ValueError(f"{what}: expected shape (n, {cols}), got {tuple(a.shape)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or inf ({int((~np.isfinite(a)).any(1).sum())} rows)")
    return a


def _classes(values: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """Class column -> int64, checked to be whole numbers in [0, num_classes)."""
    cls = values.astype(np.int64)
    bad = (cls != values) | (cls < 0) | (cls >= num_classes)
    if bad.any():
        raise ValueError(
            f"{what}: class ids must be integers in [0, {num_classes}), got {values[bad][:5].tolist()}"
        )
    return cls


def coco_box_iou(dt_xywh: np.ndarray, gt_xywh: np.ndarray, gt_crowd: np.ndarray) -> np.ndarray:
    """IoU exactly as pycocotools (``maskUtils.iou`` on boxes), float64.

    Args:
        dt_xywh: (n, 4) detections, (x_left, y_top, w, h) px.
        gt_xywh: (m, 4) ground truths, same format.
        gt_crowd: (m,) bool; for crowd gts the union is the detection's area.
    Returns:
        (n, m) IoU, 0 where the boxes do not overlap with positive width and height.
    """
    dx, dy, dw, dh = (v[:, None] for v in dt_xywh.T)
    gx, gy, gw, gh = gt_xywh.T
    w = np.minimum(dx + dw, gx + gw) - np.maximum(dx, gx)
    h = np.minimum(dy + dh, gy + gh) - np.maximum(dy, gy)
    overlap = (w > 0) & (h > 0)
    inter = w * h
    d_area = dw * dh
    union = np.where(gt_crowd[None, :], d_area, d_area + gw * gh - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


def _xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """(n, 4) corners -> (x_left, y_top, w, h), float64 (exact for float32 input)."""
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


class DetectionEvaluator:
    """COCO-style box mAP, equal to pycocotools ``COCOeval`` on the same detections.

    Feed one batch at a time with :meth:`update`, then call :meth:`compute`. Images are numbered in
    the order they are fed (this order breaks score ties between images, as COCO's image ids do).
    Ground-truth areas for the small/medium/large ranges are box areas (w*h px^2); COCO json data
    sets store mask areas there, so only the "all" numbers are comparable on such data.

    Args:
        num_classes: number of classes; class ids are 0..num_classes-1.
        max_dets: detections kept per image and class (COCO's ``maxDets[-1]``).

    Example:
        >>> ev = DetectionEvaluator(num_classes=80)
        >>> ev.update(preds, targets)  # per image: (n,6) [x1,y1,x2,y2,conf,cls], (m,5) [cls,x1,y1,x2,y2]
        >>> ev.compute()["map50_95"]
    """

    def __init__(self, num_classes: int, max_dets: int = 100) -> None:
        if num_classes < 1 or max_dets < 1:
            raise ValueError(f"num_classes and max_dets must be >= 1, got {num_classes}, {max_dets}")
        self.num_classes = int(num_classes)
        self.max_dets = int(max_dets)
        self.reset()

    def reset(self) -> None:
        """Forget every image fed so far."""
        self.num_images = 0
        self._n_det = 0
        self._n_gt = 0
        # per image: det (cls, score, area, rank), gt (cls, crowd, area), pairs (det, gt, iou)
        self._det: list[tuple[np.ndarray, ...]] = []
        self._gt: list[tuple[np.ndarray, ...]] = []
        self._pairs: list[tuple[np.ndarray, ...]] = []

    def update(
        self,
        preds: Sequence[Tensor | np.ndarray | None],
        targets: Sequence[Tensor | np.ndarray | None],
        crowd: Sequence[Tensor | np.ndarray | None] | None = None,
    ) -> None:
        """Add a batch of images.

        Args:
            preds: per image (n, 6) [x1, y1, x2, y2, conf, cls], xyxy px (``None``/empty: no detections).
            targets: per image (m, 5) [cls, x1, y1, x2, y2], xyxy px, same scale as ``preds``.
            crowd: per image (m,) bool, True for crowd (``iscrowd``) gts; default all False.
        Raises:
            ValueError: on mismatched lengths, wrong shapes, NaN/inf or class ids out of range.
        """
        if len(preds) != len(targets) or (crowd is not None and len(crowd) != len(targets)):
            raise ValueError(
                f"one entry per image expected: {len(preds)} preds, {len(targets)} targets"
                + ("" if crowd is None else f", {len(crowd)} crowd flags")
            )
        for i in range(len(preds)):
            self._add_image(preds[i], targets[i], None if crowd is None else crowd[i])

    def _add_image(
        self, pred: Tensor | np.ndarray | None, target: Tensor | np.ndarray | None, crowd: Any
    ) -> None:
        img = self.num_images
        p = _to_numpy(pred, 6, f"preds[{img}]")
        t = _to_numpy(target, 5, f"targets[{img}]")
        if crowd is None:
            is_crowd = np.zeros(len(t), dtype=bool)
        else:
            c = crowd.detach().cpu().numpy() if isinstance(crowd, Tensor) else np.asarray(crowd)
            is_crowd = c.astype(bool).reshape(-1)
            if is_crowd.shape[0] != len(t):
                raise ValueError(f"crowd[{img}]: {is_crowd.shape[0]} flags for {len(t)} targets")
        det_cls = _classes(p[:, 5], self.num_classes, f"preds[{img}] class column")
        gt_cls = _classes(t[:, 0], self.num_classes, f"targets[{img}] class column")

        # group by class, score-descending inside a class, input order on ties; keep the top max_dets
        order = np.lexsort((-p[:, 4], det_cls))
        p, det_cls = p[order], det_cls[order]
        first = np.r_[True, det_cls[1:] != det_cls[:-1]] if len(p) else np.zeros(0, bool)
        idx = np.arange(len(p))
        rank = idx - np.maximum.accumulate(np.where(first, idx, 0)) if len(p) else idx
        keep = rank < self.max_dets
        p, det_cls, rank = p[keep], det_cls[keep], rank[keep]

        dt_xywh, gt_xywh = _xyxy_to_xywh(p[:, :4]), _xyxy_to_xywh(t[:, 1:])
        iou = coco_box_iou(dt_xywh, gt_xywh, is_crowd)
        d, g = np.nonzero((iou >= IOU_THRESHOLDS[0]) & (det_cls[:, None] == gt_cls[None, :]))

        self._det.append((det_cls, p[:, 4], dt_xywh[:, 2] * dt_xywh[:, 3], rank))
        self._gt.append((gt_cls, is_crowd, gt_xywh[:, 2] * gt_xywh[:, 3]))
        self._pairs.append((d + self._n_det, g + self._n_gt, iou[d, g]))
        self._n_det += len(p)
        self._n_gt += len(t)
        self.num_images += 1

    # ------------------------------------------------------------------------------------------
    def _gather(self) -> dict[str, np.ndarray]:
        def cat(rows: list[tuple[np.ndarray, ...]], k: int, dtype: Any) -> np.ndarray:
            return np.concatenate([r[k] for r in rows]).astype(dtype) if rows else np.zeros(0, dtype)

        return {
            "det_cls": cat(self._det, 0, np.int64),
            "det_score": cat(self._det, 1, np.float64),
            "det_area": cat(self._det, 2, np.float64),
            "det_rank": cat(self._det, 3, np.int64),
            "gt_cls": cat(self._gt, 0, np.int64),
            "gt_crowd": cat(self._gt, 1, bool),
            "gt_area": cat(self._gt, 2, np.float64),
            "pair_det": cat(self._pairs, 0, np.int64),
            "pair_gt": cat(self._pairs, 1, np.int64),
            "pair_iou": cat(self._pairs, 2, np.float64),
        }

    @staticmethod
    def _match(data: dict[str, np.ndarray], gt_ignore: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """COCO greedy matching at every IoU threshold.

        Returns:
            (matched, ignored), both (T, n_det) bool: detection matched to some gt / matched to an
            ignored gt.
        """
        n_thr, n_det = len(IOU_THRESHOLDS), len(data["det_cls"])
        matched = np.zeros((n_thr, n_det), dtype=bool)
        ignored = np.zeros((n_thr, n_det), dtype=bool)
        pd, pg, piou = data["pair_det"], data["pair_gt"], data["pair_iou"]
        if len(pd) == 0:
            return matched, ignored
        regular = ~gt_ignore[pg]
        prank = data["det_rank"][pd]
        # by rank, then detection, then preference: non-ignored gt, IoU, later gt (COCO's ``<`` test)
        order = np.lexsort((pg, piou, regular, pd, prank))
        pd, pg, piou, regular, prank = pd[order], pg[order], piou[order], regular[order], prank[order]
        crowd = data["gt_crowd"][pg]
        thr = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[:, None]
        taken = np.zeros((n_thr, len(data["gt_cls"])), dtype=bool)
        bounds = np.searchsorted(prank, np.arange(int(prank[-1]) + 2))
        # Detections of equal rank belong to different (image, class) groups and so never compete
        # for a gt: one rank is one vectorised step.
        for s, e in zip(bounds[:-1], bounds[1:]):
            if s == e:
                continue
            d, g = pd[s:e], pg[s:e]
            eligible = (piou[s:e] >= thr) & (crowd[s:e] | ~taken[:, g])
            pos = np.where(eligible, np.arange(e - s), -1)
            starts = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
            best = np.maximum.reduceat(pos, starts, axis=1)  # (T, detections at this rank)
            ti, di = np.nonzero(best >= 0)
            b = best[ti, di]
            taken[ti, g[b]] = True
            matched[ti, d[b]] = True
            ignored[ti, d[b]] = ~regular[s:e][b]
        return matched, ignored

    def _accumulate(
        self,
        data: dict[str, np.ndarray],
        matched: np.ndarray,
        ignored: np.ndarray,
        n_pos: np.ndarray,
        order: np.ndarray,
        bounds: np.ndarray,
    ) -> np.ndarray:
        """(T, R, K) interpolated precision as COCOeval's ``eval["precision"]``; -1 for classes
        without a non-ignored gt."""
        n_thr, n_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
        precision = -np.ones((n_thr, n_rec, self.num_classes))
        tps = (matched & ~ignored)[:, order]
        fps = (~matched & ~ignored)[:, order]
        for k in np.flatnonzero(n_pos > 0):
            s, e = bounds[k], bounds[k + 1]
            nd = e - s
            precision[:, :, k] = 0.0
            if nd == 0:
                continue
            tp = np.cumsum(tps[:, s:e], axis=1).astype(float)
            fp = np.cumsum(fps[:, s:e], axis=1).astype(float)
            rc = tp / n_pos[k]
            pr = tp / (fp + tp + _EPS)
            pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
            for t in range(n_thr):
                inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
                ok = inds < nd
                precision[t, ok, k] = pr[t, inds[ok]]
        return precision

    def _p_r_at_max_f1(
        self,
        data: dict[str, np.ndarray],
        matched: np.ndarray,
        ignored: np.ndarray,
        n_pos: np.ndarray,
        order: np.ndarray,
        bounds: np.ndarray,
    ) -> tuple[float, float]:
        """Mean precision and recall over classes with gts at IoU 0.5, at the confidence where the
        smoothed class-mean F1 peaks (what yolov5/yolov9 val prints as P and R)."""
        classes = np.flatnonzero(n_pos > 0)
        if len(classes) == 0:
            return 0.0, 0.0
        conf_grid = np.linspace(0, 1, 1000)
        p_curve = np.zeros((len(classes), len(conf_grid)))
        r_curve = np.zeros_like(p_curve)
        score = data["det_score"][order]
        tp_all, ig_all = matched[0, order], ignored[0, order]
        for row, k in enumerate(classes):
            s, e = bounds[k], bounds[k + 1]
            keep = ~ig_all[s:e]
            if not keep.any():
                continue
            conf, tp = score[s:e][keep], tp_all[s:e][keep]
            tpc = np.cumsum(tp)
            fpc = np.cumsum(~tp)
            # conf is descending: interpolate on -conf so the x axis increases
            r_curve[row] = np.interp(-conf_grid, -conf, tpc / (n_pos[k] + 1e-16), left=0)
            p_curve[row] = np.interp(-conf_grid, -conf, tpc / (tpc + fpc), left=1)
        f1 = 2 * p_curve * r_curve / (p_curve + r_curve + 1e-16)
        i = int(_box_smooth(f1.mean(0), 0.1).argmax())
        return float(p_curve[:, i].mean()), float(r_curve[:, i].mean())

    def compute(self, area_ranges: bool = False) -> dict[str, Any]:
        """Metrics over every image fed so far.

        Args:
            area_ranges: also evaluate the small/medium/large ranges (one more matching pass each).
        Returns:
            dict with
              ``map50_95``, ``map50``, ``map75``: floats, COCOeval ``stats[0..2]`` (0.0 when no class
              has a non-crowd gt, where COCO prints -1);
              ``per_class_ap50_95``, ``per_class_ap50``, ``per_class_ap75``: (nc,) float64, nan for
              classes without a non-crowd gt;
              ``precision``, ``recall``: floats, class means at the max-F1 confidence, IoU 0.5;
              ``num_images``, ``num_targets`` (non-crowd gts), ``per_class_targets`` ((nc,) int64);
              ``pr_curve``: {"recall": (101,), "precision": (nc, 101) at IoU 0.5, nan rows for classes
              without gt, "ap50": (nc,)};
              with ``area_ranges``: ``map_small``, ``map_medium``, ``map_large`` (COCO ``stats[3..5]``,
              nan where a range has no gt).
        """
        data = self._gather()
        n_pos = np.bincount(data["gt_cls"][~data["gt_crowd"]], minlength=self.num_classes)
        # per class, score-descending; the stable sort keeps image order on ties, as COCOeval does
        order = np.lexsort((-data["det_score"], data["det_cls"]))
        bounds = np.searchsorted(data["det_cls"][order], np.arange(self.num_classes + 1))

        out: dict[str, Any] = {}
        ranges = AREA_RANGES if area_ranges else {"all": AREA_RANGES["all"]}
        for name, (lo, hi) in ranges.items():
            gt_ignore = data["gt_crowd"] | (data["gt_area"] < lo) | (data["gt_area"] > hi)
            det_out = (data["det_area"] < lo) | (data["det_area"] > hi)
            matched, ignored = self._match(data, gt_ignore)
            ignored |= ~matched & det_out[None, :]
            n_pos_r = np.bincount(data["gt_cls"][~gt_ignore], minlength=self.num_classes)
            precision = self._accumulate(data, matched, ignored, n_pos_r, order, bounds)
            if name == "all":
                out.update(self._summaries(precision))
                p, r = self._p_r_at_max_f1(data, matched, ignored, n_pos, order, bounds)
                out["precision"], out["recall"] = p, r
            else:
                out[f"map_{name}"] = _mean_valid(precision, default=math.nan)
        out["num_images"] = self.num_images
        out["num_targets"] = int(n_pos.sum())
        out["per_class_targets"] = n_pos
        return out

    def _summaries(self, precision: np.ndarray) -> dict[str, Any]:
        valid = precision > -1
        present = valid.all(axis=(0, 1))
        with np.errstate(invalid="ignore"):
            per_class = np.where(present, np.where(valid, precision, 0).mean(axis=(0, 1)), np.nan)
        out: dict[str, Any] = {"map50_95": _mean_valid(precision), "per_class_ap50_95": per_class}
        for key, iou in (("50", 0.5), ("75", 0.75)):
            t = np.where(iou == IOU_THRESHOLDS)[0]  # equality lookup, as COCOeval.summarize
            s = precision[t]
            out[f"map{key}"] = _mean_valid(s)
            out[f"per_class_ap{key}"] = np.where(present, np.where(s > -1, s, 0).mean(axis=(0, 1)), np.nan)
        out["pr_curve"] = {
            "recall": RECALL_THRESHOLDS.copy(),
            "precision": np.where(present[:, None], precision[0].T, np.nan),
            "ap50": out["per_class_ap50"],
        }
        return out


def _mean_valid(s: np.ndarray, default: float = 0.0) -> float:
    """Mean of the entries > -1 (COCOeval.summarize: the same flattening, so the same float)."""
    v = s[s > -1]
    return float(np.mean(v)) if v.size else default


def _box_smooth(y: np.ndarray, fraction: float) -> np.ndarray:
    """Box filter over ``fraction`` of the curve (odd width), edges padded with the end values."""
    width = round(len(y) * fraction * 2) // 2 + 1
    pad = width // 2
    padded = np.concatenate([np.full(pad, y[0]), y, np.full(pad, y[-1])])
    return np.convolve(padded, np.ones(width) / width, mode="valid")


# ----------------------------------------------------------------------------------------------
class ConfusionMatrix:
    """Detection confusion matrix of yolov5/yolov9 val.

    ``matrix[pred, true]`` is (nc+1, nc+1) counts; index ``nc`` is background: ``matrix[nc, c]``
    counts missed gts of class c, ``matrix[c, nc]`` detections of class c that match no gt.
    Detections with conf <= ``conf`` are dropped; a gt and a detection match (whatever their
    classes) when IoU > ``iou_thres``, each one used once, highest IoU first.

    One deliberate difference from the official code: unmatched detections are counted as
    background even when the image has no match at all (the official code skips them then).
    """

    def __init__(self, nc: int, conf: float = 0.25, iou_thres: float = 0.45) -> None:
        self.nc = int(nc)
        self.conf = float(conf)
        self.iou_thres = float(iou_thres)
        self.matrix = np.zeros((self.nc + 1, self.nc + 1))

    def process_batch(self, detections: Tensor | None, labels: Tensor | None) -> None:
        """Add one image.

        Args:
            detections: (n, 6) [x1, y1, x2, y2, conf, cls] xyxy px, or ``None`` for no detections.
            labels: (m, 5) [cls, x1, y1, x2, y2] xyxy px, or ``None`` for no labels.
        """
        if labels is None:
            labels = torch.zeros((0, 5))
        lab = labels.detach().cpu() if isinstance(labels, Tensor) else torch.as_tensor(labels)
        lab = lab.reshape(-1, 5).float()
        det = torch.zeros((0, 6)) if detections is None else detections.detach().cpu().float().reshape(-1, 6)
        det = det[det[:, 4] > self.conf]
        gt_cls = lab[:, 0].long().numpy()
        det_cls = det[:, 5].long().numpy()
        if ((gt_cls < 0) | (gt_cls >= self.nc)).any() or ((det_cls < 0) | (det_cls >= self.nc)).any():
            raise ValueError(f"class ids must be in [0, {self.nc})")

        iou = box_iou_reference(lab[:, 1:], det[:, :4]).numpy()  # (m, n)
        gi, di = np.nonzero(iou > self.iou_thres)
        v = iou[gi, di]
        # highest IoU first; keep one match per detection, then one per gt
        o = np.argsort(-v, kind="stable")
        gi, di, v = gi[o], di[o], v[o]
        _, first = np.unique(di, return_index=True)
        first.sort()
        gi, di = gi[first], di[first]
        _, first = np.unique(gi, return_index=True)
        gi, di = gi[first], di[first]

        np.add.at(self.matrix, (det_cls[di], gt_cls[gi]), 1)  # matched: predicted class vs true class
        missed = np.ones(len(gt_cls), dtype=bool)
        missed[gi] = False
        np.add.at(self.matrix, (self.nc, gt_cls[missed]), 1)
        unmatched = np.ones(len(det_cls), dtype=bool)
        unmatched[di] = False
        np.add.at(self.matrix, (det_cls[unmatched], self.nc), 1)

    def tp_fp(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-class true positives (diagonal) and false positives (row sum - diagonal), (nc,) each."""
        tp = self.matrix.diagonal()
        fp = self.matrix.sum(1) - tp
        return tp[:-1], fp[:-1]

    def plot(
        self, path: str | Path, names: Sequence[str] = (), normalize: bool = True, dpi: int = 250
    ) -> Path | None:
        """Save the matrix as an image (columns normalised to sum 1 by default).

        Returns the path written, or ``None`` when matplotlib is not installed.
        """
        plt = agg_pyplot()
        if plt is None:
            return None
        array = self.matrix / (self.matrix.sum(0, keepdims=True) + 1e-9) if normalize else self.matrix.copy()
        array[array < 0.005] = np.nan  # blank instead of 0.00
        labels = list(names) + ["background"] if 0 < len(names) == self.nc < 99 else None
        fig, ax = plt.subplots(1, 1, figsize=(12, 9), tight_layout=True)
        im = ax.imshow(array, cmap="Blues", vmin=0.0)
        fig.colorbar(im, ax=ax)
        if self.nc < 30:
            for (r, c), value in np.ndenumerate(array):
                if not np.isnan(value):
                    text = f"{value:.2f}" if normalize else f"{value:.0f}"
                    ax.text(c, r, text, ha="center", va="center", fontsize=8)
        if labels is not None:
            ticks = np.arange(self.nc + 1)
            ax.set_xticks(ticks, labels, rotation=90)
            ax.set_yticks(ticks, labels)
        ax.set_xlabel("True")
        ax.set_ylabel("Predicted")
        ax.set_title("Confusion Matrix")
        path = save_figure(fig, path, dpi)
        plt.close(fig)
        return path


def agg_pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None when matplotlib (optional) is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_pr_curve(
    pr_curve: dict[str, np.ndarray], names: Sequence[str], path: str | Path, dpi: int = 250
) -> Path | None:
    """Plot per-class precision vs recall at IoU 0.5 (``compute()["pr_curve"]``) and their mean.

    Classes without gt (nan rows) are skipped. Returns the path written, or ``None`` when matplotlib
    is not installed.
    """
    plt = agg_pyplot()
    if plt is None:
        return None
    recall, precision, ap50 = pr_curve["recall"], pr_curve["precision"], pr_curve["ap50"]
    present = ~np.isnan(precision).any(axis=1)
    fig, ax = plt.subplots(1, 1, figsize=(9, 6), tight_layout=True)
    legend = 0 < present.sum() < 21
    for k in np.flatnonzero(present):
        name = names[k] if k < len(names) else str(k)
        style = {"label": f"{name} {ap50[k]:.3f}"} if legend else {"color": "grey"}
        ax.plot(recall, precision[k], linewidth=1, **style)
    if present.any():
        label = f"all classes {np.nanmean(ap50):.3f} mAP@0.5"
        ax.plot(recall, precision[present].mean(0), linewidth=3, color="blue", label=label)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(bbox_to_anchor=(1.04, 1), loc="upper left")
    ax.set_title("Precision-Recall Curve")
    path = save_figure(fig, path, dpi)
    plt.close(fig)
    return path


def to_coco_json(
    preds: Sequence[Tensor | np.ndarray | None],
    image_ids: Sequence[int | str],
    category_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Detections -> COCO result dicts (what ``val --save-json`` writes).

    Args:
        preds: per image (n, 6) [x1, y1, x2, y2, conf, cls], xyxy px in the original image.
        image_ids: COCO ``image_id`` of each image.
        category_ids: COCO category id of each class index (e.g. the 80 -> 91 COCO map); default:
            the class index itself.
    Returns:
        list of ``{"image_id", "category_id", "bbox": [x_left, y_top, w, h] px rounded to 3
        decimals, "score": rounded to 5 decimals}``, images in order, detections in input order.
    """
    if len(preds) != len(image_ids):
        raise ValueError(f"{len(preds)} prediction tensors for {len(image_ids)} image ids")
    out: list[dict[str, Any]] = []
    for pred, image_id in zip(preds, image_ids):
        p = _to_numpy(pred, 6, f"preds for image {image_id!r}")
        xywh = _xyxy_to_xywh(p[:, :4]).tolist()
        for box, score, cls in zip(xywh, p[:, 4].tolist(), p[:, 5].astype(np.int64).tolist()):
            out.append(
                {
                    "image_id": image_id,
                    "category_id": int(category_ids[cls]) if category_ids is not None else cls,
                    "bbox": [round(v, 3) for v in box],
                    "score": round(score, 5),
                }
            )
    return out


def fitness(metrics: dict[str, Any]) -> float:
    """Model selection score of yolov5/yolov9 training: 0.1 * mAP@0.5 + 0.9 * mAP@0.5:0.95."""
    return 0.1 * float(metrics["map50"]) + 0.9 * float(metrics["map50_95"])
