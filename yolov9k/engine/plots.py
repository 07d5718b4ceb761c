"""Training plots: loss/metric curves from ``results.csv`` and mosaics of labelled batch images.

Curves need matplotlib (an optional dependency: without it they are skipped with a log line);
batch mosaics use OpenCV only.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from yolov9k.io.files import atomic_output, save_figure
from yolov9k.io.opencv import cv2_text
from yolov9k.metrics import agg_pyplot

__all__ = ["plot_results", "plot_batch", "read_results_csv"]

LOGGER = logging.getLogger("yolov9k")


def read_results_csv(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a ``results.csv`` as float arrays (non-numeric cells become nan)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = [h.strip() for h in rows[0]]

    def num(s: str) -> float:
        try:
            return float(s)
        except ValueError:
            return math.nan

    data = np.array([[num(c) for c in r] for r in rows[1:] if len(r) == len(header)], dtype=float)
    data = data.reshape(-1, len(header))
    return {h: data[:, i] for i, h in enumerate(header)}


def plot_results(csv_path: str | Path, out: str | Path | None = None) -> Path | None:
    """Plot every column of ``results.csv`` against the epoch into ``results.png`` (beside it).

    Returns the image path, or None when matplotlib is missing or the file has no rows.
    """
    plt = agg_pyplot()
    if plt is None:
        LOGGER.info("matplotlib not installed: results.png skipped")
        return None
    cols = read_results_csv(csv_path)
    if "epoch" not in cols or cols["epoch"].size == 0:
        return None
    x = cols["epoch"]
    keys = [k for k in cols if k != "epoch"]
    ncol = 5
    nrow = max(1, math.ceil(len(keys) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.8 * nrow), tight_layout=True)
    axes = np.atleast_1d(axes).ravel()
    for ax, key in zip(axes, keys):
        y = cols[key]
        ax.plot(x, y, marker=".", linewidth=2, markersize=6)
        if y.size >= 5:  # a light smoothing, as a guide to the eye
            k = max(3, (y.size // 10) | 1)
            pad = np.pad(y, k // 2, mode="edge")
            ax.plot(x, np.convolve(pad, np.ones(k) / k, mode="valid"), ":", linewidth=2)
        ax.set_title(key, fontsize=11)
    for ax in axes[len(keys) :]:
        ax.axis("off")
    out = Path(out) if out is not None else Path(csv_path).with_name("results.png")
    save_figure(fig, out, 150)
    plt.close(fig)
    return out


def _color(cls: int) -> tuple[int, int, int]:
    hue = (int(cls) * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[hue, 220, 230]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def plot_batch(
    imgs: torch.Tensor,
    targets: torch.Tensor,
    path: str | Path,
    names: Mapping[int, str] | Sequence[str] | None = None,
    preds: Sequence[torch.Tensor] | None = None,
    max_images: int = 16,
    max_size: int = 1920,
) -> Path:
    """Save a mosaic of a batch with its boxes (RGB uint8 or float 0-1 images).

    Args:
        imgs: (B, 3, H, W) network inputs, RGB.
        targets: (N, 6) [img_idx, cls, cx, cy, w, h], coordinates normalized to (W, H).
        path: output image (.jpg/.png).
        names: class names for the box labels.
        preds: optional per image (n, 6) [x1, y1, x2, y2, conf, cls] px boxes; when given they are
            drawn instead of ``targets`` (with their confidence).
    """
    imgs = imgs[:max_images].detach().cpu()
    if imgs.dtype.is_floating_point:
        imgs = (imgs.float().clamp(0, 1) * 255).round()
    arr = imgs.to(torch.uint8).permute(0, 2, 3, 1).numpy()  # B, H, W, 3 RGB
    b, h, w = arr.shape[:3]
    ns = math.ceil(math.sqrt(max(b, 1)))
    scale = min(1.0, max_size / (ns * max(h, w)))
    th, tw = math.ceil(h * scale), math.ceil(w * scale)
    canvas = np.full((ns * th, ns * tw, 3), 255, dtype=np.uint8)
    t = targets.detach().cpu().float().reshape(-1, 6)
    for i in range(b):
        x0, y0 = (i % ns) * tw, (i // ns) * th
        tile = cv2.resize(arr[i][..., ::-1], (tw, th)) if scale < 1 else arr[i][..., ::-1].copy()
        if preds is not None:
            p = preds[i].detach().cpu().float().reshape(-1, 6) if i < len(preds) else torch.zeros(0, 6)
            boxes, cls, conf = p[:, :4] * scale, p[:, 5].long(), p[:, 4]
        else:
            ti = t[t[:, 0] == i]
            xywh = ti[:, 2:6] * torch.tensor([tw, th, tw, th])
            boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
            cls, conf = ti[:, 1].long(), None
        for j, box in enumerate(boxes.round().int().tolist()):
            c = int(cls[j])
            if conf is not None and float(conf[j]) < 0.25:
                continue
            color = _color(c)
            cv2.rectangle(tile, (box[0], box[1]), (box[2], box[3]), color, 1, cv2.LINE_AA)
            label = (
                names[c]
                if names is not None and c in (names if isinstance(names, Mapping) else range(len(names)))
                else str(c)
            )
            if conf is not None:
                label = f"{label} {float(conf[j]):.2f}"
            cv2.putText(
                tile,
                cv2_text(label),
                (box[0], max(box[1] - 2, 8)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.3,
                color,
                1,
                cv2.LINE_AA,
            )
        canvas[y0 : y0 + th, x0 : x0 + tw] = tile
        cv2.rectangle(canvas, (x0, y0), (x0 + tw - 1, y0 + th - 1), (255, 255, 255), 2)
    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".jpg", canvas)  # bytes: no path string reaches OpenCV
    if not ok:
        raise ValueError(f"cannot encode {path.name}: OpenCV has no encoder for {path.suffix!r}")
    with atomic_output(path) as tmp:
        tmp.write_bytes(buf.tobytes())
    return path
