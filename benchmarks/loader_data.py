"""A generated COCO-like JPEG folder for the loader benchmarks (``images/`` + ``labels/``, YOLO format).

Photos are stood in for by smooth colour fields with mid-frequency texture and a few filled shapes,
saved at JPEG quality 90: about 4 bits per pixel, as COCO's photos (a 640x480 COCO image is ~160 KB;
these average ~155 KB at 640 px). Sizes follow COCO's mix of landscape, portrait and square frames
with the long side at ``long_side`` pixels (640 as COCO, 1280 for phone-photo sized sets); 1-12
boxes per image over 80 classes. Deterministic for a seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

__all__ = ["make_coco_like"]

# (h, w) aspect ratios of COCO frames, as fractions of the long side
_FRAMES = ((0.75, 1.0), (1.0, 0.75), (0.667, 1.0), (1.0, 0.667), (1.0, 1.0), (0.5625, 1.0))


def _photo(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured BGR image with 1-12 filled shapes, and their labels (n, 5) normalized xywh."""
    field = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0, 60, (h, w, 3)).astype(np.float32)
    img = np.clip(field + cv2.GaussianBlur(noise, (0, 0), 0.5), 0, 255).astype(np.uint8)
    n = int(rng.integers(1, 13))
    labels = np.zeros((n, 5), np.float32)
    for k in range(n):
        bw, bh = rng.uniform(0.05, 0.5) * w, rng.uniform(0.05, 0.5) * h
        x1, y1 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        p1, p2 = (int(x1), int(y1)), (int(x1 + bw), int(y1 + bh))
        if k % 2:
            cv2.rectangle(img, p1, p2, colour, -1)
        else:
            centre, axes = ((p1[0] + p2[0]) // 2, (p1[1] + p2[1]) // 2), (int(bw / 2), int(bh / 2))
            cv2.ellipse(img, centre, axes, 0, 0, 360, colour, -1)
        labels[k] = (rng.integers(0, 80), (x1 + bw / 2) / w, (y1 + bh / 2) / h, bw / w, bh / h)
    return img, labels


def make_coco_like(
    root: str | Path, n: int = 64, long_side: int = 640, seed: int = 0, unique: int | None = None
) -> Path:
    """Write ``n`` JPEGs and labels under ``root/images`` and ``root/labels``; returns ``root/images``.

    With ``unique`` < n only that many distinct images are encoded and the others are hard links to
    them (a large set for little disk: to a loader every file is its own image). Existing files of the
    same name are overwritten; a complete folder is reused as it is.
    """
    root = Path(root)
    images, labels = root / "images", root / "labels"
    if len(list(images.glob("*.jpg"))) == n and len(list(labels.glob("*.txt"))) == n:
        return images
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    unique = n if unique is None else max(1, min(unique, n))
    for i in range(n):
        f, lf = images / f"{i:06d}.jpg", labels / f"{i:06d}.txt"
        f.unlink(missing_ok=True)
        if i >= unique:
            os.link(images / f"{i % unique:06d}.jpg", f)
            lf.write_text((labels / f"{i % unique:06d}.txt").read_text())
            continue
        fh, fw = _FRAMES[i % len(_FRAMES)]
        img, lab = _photo(rng, round(fh * long_side), round(fw * long_side))
        cv2.imwrite(str(f), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lf.write_text("".join(f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in lab))
    return images
