"""Inputs of the prediction benchmarks: a folder of photo-like JPEGs and a video, deterministic.

Photos: smooth colour fields with textured shapes and sensor-like noise, JPEG quality 90 (so that
decoding costs what a photo's does), in six sizes cycled in file-name order so that neighbours differ
in shape and orientation: 640x480, 480x640, 640x360 (long side 640) and 1280x960, 960x1280, 1280x720
(long side 1280). Video: ``frames`` frames of 1280x720 at 30 fps (OpenCV's ``mp4v``), shapes moving
over a textured background.

    python benchmarks/predict_data.py --out /tmp/predict-bench/data   # photos/ (100) and video.mp4 (200)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

PHOTO_SIZES = ((640, 480), (480, 640), (640, 360), (1280, 960), (960, 1280), (1280, 720))  # (w, h)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour field (bicubic upsampling of a coarse random grid) plus fine texture."""
    coarse = rng.integers(0, 256, (max(h // 64, 2), max(w // 64, 2), 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    fine = cv2.resize(rng.integers(-40, 40, (h // 4, w // 4, 3), dtype=np.int16).astype(np.float32), (w, h))
    return np.clip(img + fine.astype(np.int16), 0, 255).astype(np.uint8)


def _shapes(rng: np.random.Generator, img: np.ndarray, n: int) -> None:
    """Draw ``n`` filled rectangles and ellipses with random colours (in place)."""
    h, w = img.shape[:2]
    for _ in range(n):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        a, b = int(rng.integers(w // 40, w // 6)), int(rng.integers(h // 40, h // 6))
        if rng.random() < 0.5:
            cv2.rectangle(img, (cx - a, cy - b), (cx + a, cy + b), color, -1)
        else:
            cv2.ellipse(img, (cx, cy), (a, b), float(rng.integers(0, 180)), 0, 360, color, -1)


def photo(seed: int, w: int, h: int) -> np.ndarray:
    """One (h, w, 3) uint8 BGR photo-like image."""
    rng = np.random.default_rng(seed)
    img = _background(rng, w, h)
    _shapes(rng, img, int(rng.integers(5, 25)))
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_photos(folder: str | Path, n: int = 100, seed: int = 0) -> Path:
    """Write ``n`` JPEGs ``img_000.jpg``... cycling through ``PHOTO_SIZES``; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w, h = PHOTO_SIZES[i % len(PHOTO_SIZES)]
        path = folder / f"img_{i:03d}.jpg"
        if not path.exists():
            cv2.imwrite(str(path), photo(seed * 100_003 + i, w, h), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return folder


def make_video(path: str | Path, frames: int = 200, w: int = 1280, h: int = 720, seed: int = 0) -> Path:
    """Write a ``frames``-frame mp4v video of shapes moving over a textured background."""
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    bg = photo(seed, w, h)
    objs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-8, 8), rng.uniform(-6, 6)) for _ in range(8)]
    colors = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in objs]
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {tmp}")
    for t in range(frames):
        img = bg.copy()
        for (x, y, vx, vy), c in zip(objs, colors):
            cx, cy = int((x + vx * t) % w), int((y + vy * t) % h)
            cv2.rectangle(img, (cx - 40, cy - 30), (cx + 40, cy + 30), c, -1)
        writer.write(img)
    writer.release()
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for photos/ and video.mp4")
    p.add_argument("--photos", type=int, default=100)
    p.add_argument("--frames", type=int, default=200)
    a = p.parse_args()
    print(make_photos(Path(a.out) / "photos", a.photos), make_video(Path(a.out) / "video.mp4", a.frames))


if __name__ == "__main__":
    main()
