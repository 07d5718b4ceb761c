"""The embedded demo data set: synthetic shapes on textured backgrounds, YOLO and COCO labels.

Five shape classes (circle, square, triangle, star, cross) in eight colours, 1-6 objects per image,
20-120 px at 320 (scaled with ``imgsz``), rotated, partly overlapping, on noisy textured backgrounds
with faint distractor strokes. Image sizes vary (square, landscape, portrait) so that letterboxing
and rectangular batches are exercised. Every image comes from its own ``numpy`` generator seeded by
(seed, split, index), drawing and encoding are deterministic, so the same seed gives
byte-identical files
(JPEG at a fixed quality: small and fast to write; noisy PNGs were 10x larger and slower).

Layout under ``root``::

    demo.yaml                         path / train / val / names (+ train_json / val_json)
    images/{train,val}/000000.jpg
    labels/{train,val}/000000.txt     cls cx cy w h (normalized)
    annotations/instances_{train,val}.json   COCO boxes (pixels, top-left xywh), category ids 1..5
    .complete                         marker written last (generation parameters)
    .incomplete                       present while a set is being moved in (removed with .complete)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np
import yaml

from yolov9k.errors import NotAFolderError, PathExistsError
from yolov9k.io.files import (
    TEMP_SUFFIX,
    atomic_write_text,
    make_output_dir,
    remove_stale_temp_files,
    temp_prefix,
)
from yolov9k.options import check_options
from yolov9k.options.verbs import DEMO_DATA

__all__ = ["DEMO_NAMES", "generate_demo_dataset", "default_demo_root", "ensure_demo_dataset"]

DEMO_NAMES = ("circle", "square", "triangle", "star", "cross")
DEMO_VERSION = 1
_MARKER = ".complete"
_PARTIAL = ".incomplete"  # written before the old set is removed: the set in root is ours, half moved in
_JPEG_QUALITY = 90  # fixed, so files are byte-identical for a seed (same OpenCV build)
_PALETTE_BGR = (  # saturated colours, distinct from the muted backgrounds
    (40, 40, 220),  # red
    (40, 200, 40),  # green
    (220, 80, 30),  # blue
    (30, 210, 230),  # yellow
    (200, 40, 200),  # magenta
    (220, 210, 40),  # cyan
    (20, 130, 250),  # orange
    (245, 245, 245),  # white
)
_SPLITS = ("train", "val")
_OWNED = ("images", "labels", "annotations", "demo.yaml", _MARKER, _PARTIAL)  # what overwrite may remove


def default_demo_root() -> Path:
    """``$YOLOV9K_HOME/demo`` or ``~/.cache/yolov9k/demo``."""
    home = os.environ.get("YOLOV9K_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "yolov9k") / "demo"


# ---------------------------------------------------------------------------------------------------------
# drawing


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Muted base colour + smooth gradient + low-frequency blobs + pixel noise + faint strokes."""
    base = rng.uniform(60, 190, 3).astype(np.float32)
    gx = np.linspace(0, rng.uniform(-40, 40), w, dtype=np.float32)[None, :, None]
    gy = np.linspace(0, rng.uniform(-40, 40), h, dtype=np.float32)[:, None, None]
    cells = rng.standard_normal((max(2, h // 24), max(2, w // 24), 3), dtype=np.float32)
    blobs = cv2.resize(cells * np.float32(rng.uniform(8, 25)), (w, h), interpolation=cv2.INTER_LINEAR)
    raw = np.frombuffer(rng.bytes(h * w * 3), np.uint8).reshape(h, w, 3)  # uniform, much faster than normal
    noise = (raw.astype(np.float32) - np.float32(127.5)) * np.float32(rng.uniform(3, 12) / 74)
    img = cv2.convertScaleAbs(blobs + noise + gx + gy + base)  # saturating cast to uint8
    for _ in range(int(rng.integers(0, 6))):  # distractor strokes, low contrast
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        shade = tuple(int(v) for v in np.clip(base + rng.uniform(-50, 50, 3), 0, 255))
        cv2.line(img, p1, p2, shade, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _shape_points(cls: int, size: float, angle: float) -> np.ndarray | None:
    """Polygon (k, 2) of a shape of class ``cls`` centred at 0 with outer diameter ``size``; None = circle."""
    r = size / 2
    if cls == 0:
        return None
    if cls == 1:  # square
        t = np.deg2rad(np.array([45, 135, 225, 315]) + angle)
        pts = np.stack((np.cos(t), np.sin(t)), 1) * r
    elif cls == 2:  # equilateral triangle
        t = np.deg2rad(np.array([-90, 30, 150]) + angle)
        pts = np.stack((np.cos(t), np.sin(t)), 1) * r
    elif cls == 3:  # five-pointed star
        t = np.deg2rad(np.arange(10) * 36 - 90 + angle)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.42)
        pts = np.stack((np.cos(t) * rad, np.sin(t) * rad), 1)
    else:  # cross (plus sign), arms a third of the size wide
        a, b = r, r / 3
        base = np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a], [-b, b],
                         [-a, b], [-a, -b], [-b, -b]])  # fmt: skip
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        pts = base @ np.array([[c, s], [-s, c]])
    return pts


def _overlap_ok(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """Accept a new box when it covers at most 40% of any existing box and vice versa."""
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        small = min((box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1]))
        if inter > 0.4 * small:
            return False
    return True


def _draw_image(rng: np.random.Generator, imgsz: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One image and its objects as (cls, xyxy pixels rounded to 0.01)."""
    aspect = rng.choice([1.0, 1.0, 0.75, 1 / 0.75])  # h / w
    h, w = (int(imgsz * aspect), imgsz) if aspect <= 1 else (imgsz, int(imgsz / aspect))
    img = _background(rng, h, w)
    scale = imgsz / 320
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(int(rng.integers(1, 7))):
        for _attempt in range(20):
            cls = int(rng.integers(0, len(DEMO_NAMES)))
            size = rng.uniform(20, 120) * scale
            cx, cy = rng.uniform(size / 2 + 1, w - size / 2 - 1), rng.uniform(size / 2 + 1, h - size / 2 - 1)
            pts = _shape_points(cls, size, rng.uniform(0, 360))
            if pts is None:
                box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            else:
                pts = pts + (cx, cy)
                box = np.array([*pts.min(0), *pts.max(0)])
            box = np.round(np.clip(box, 0, [w, h, w, h]), 2)
            if _overlap_ok(box, [b for _, b in objects]):
                break
        else:
            continue
        colour = _PALETTE_BGR[int(rng.integers(0, len(_PALETTE_BGR)))]
        shift = 4  # sub-pixel precision for anti-aliased drawing
        if pts is None:
            c = (round(cx * (1 << shift)), round(cy * (1 << shift)))
            cv2.circle(img, c, round(size / 2 * (1 << shift)), colour, -1, cv2.LINE_AA, shift)
        else:
            poly = np.round(pts * (1 << shift)).astype(np.int32)
            cv2.fillPoly(img, [poly], colour, cv2.LINE_AA, shift)
        objects.append((cls, box))
    return img, objects


# ---------------------------------------------------------------------------------------------------------
# writing


def _params(num_train: int, num_val: int, imgsz: int, seed: int) -> dict:
    return {"version": DEMO_VERSION, "num_train": num_train, "num_val": num_val, "imgsz": imgsz, "seed": seed}


def _is_complete(root: Path, params: dict) -> bool:
    try:
        return json.loads((root / _MARKER).read_text()) == params and (root / "demo.yaml").is_file()
    except (OSError, ValueError):
        return False


def _write_split(out: Path, split: str, split_id: int, n: int, imgsz: int, seed: int) -> None:
    (out / "images" / split).mkdir(parents=True)
    (out / "labels" / split).mkdir(parents=True)
    categories = [{"id": i + 1, "name": nm, "supercategory": "shape"} for i, nm in enumerate(DEMO_NAMES)]
    coco: dict = {
        "info": {"description": f"yolov9k demo {split}", "version": str(DEMO_VERSION)},
        "images": [],
        "annotations": [],
        "categories": categories,
    }
    for i in range(n):
        rng = np.random.default_rng([seed, split_id, i])
        img, objects = _draw_image(rng, imgsz)
        h, w = img.shape[:2]
        name = f"{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for demo image {name}")
        (out / "images" / split / name).write_bytes(buf.tobytes())
        lines = []
        coco["images"].append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for cls, (x1, y1, x2, y2) in objects:
            bw, bh = x2 - x1, y2 - y1
            lines.append(f"{cls} {(x1 + bw / 2) / w:.6f} {(y1 + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}")
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": [round(float(v), 2) for v in (x1, y1, bw, bh)],
                    "area": round(float(bw * bh), 2),
                    "iscrowd": 0,
                }
            )
        (out / "labels" / split / f"{i:06d}.txt").write_text("".join(f"{ln}\n" for ln in lines))
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def generate_demo_dataset(
    root: str | os.PathLike,
    num_train: int = 240,
    num_val: int = 60,
    imgsz: int = 320,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Generate the demo data set under ``root`` and return the path of its ``demo.yaml``.

    Generation goes to a temporary folder beside ``root`` and is moved in when complete. A run killed
    while generating leaves that folder, which the next run removes (once its process is gone); one
    killed while moving the set in leaves the ``.incomplete`` marker, and the next run replaces that
    partial set without needing ``overwrite``. If ``root`` already holds a complete set made with the
    same parameters, nothing is written.

    Raises:
        FileExistsError: ``root`` holds something else and ``overwrite`` is False.
        NotADirectoryError: ``root`` or a folder above it is a file.
        OptionError (a ValueError): a size or seed out of its range (``docs/options.md``).
    """
    sizes = dict(num_train=num_train, num_val=num_val, imgsz=imgsz, seed=seed, overwrite=overwrite)
    check_options(DEMO_DATA, sizes)
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise NotAFolderError(f"demo data root {root} is a file, not a folder")
    params = _params(num_train, num_val, imgsz, seed)
    if _is_complete(root, params) and not overwrite:
        return root / "demo.yaml"
    present = [p for p in _OWNED if (root / p).exists()]
    if present and not overwrite and not (root / _PARTIAL).is_file():
        raise PathExistsError(f"{root} already holds {present} (another demo set?); pass overwrite=True")
    make_output_dir(root.parent, "demo data folder")
    remove_stale_temp_files(root.parent, legacy=True, target=root.name)  # of killed earlier runs
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(root.name), suffix=TEMP_SUFFIX, dir=root.parent))
    try:
        for split_id, (split, n) in enumerate(zip(_SPLITS, (num_train, num_val))):
            _write_split(tmp, split, split_id, n, imgsz, seed)
        cfg = {
            "path": str(root),
            "train": "images/train",
            "val": "images/val",
            "train_json": "annotations/instances_train.json",
            "val_json": "annotations/instances_val.json",
            "nc": len(DEMO_NAMES),
            "names": dict(enumerate(DEMO_NAMES)),
        }
        (tmp / "demo.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            root / _PARTIAL, json.dumps(params)
        )  # a kill from here on leaves a known partial set
        for p in _OWNED:  # only what a demo set owns; other files in root are left alone
            if p == _PARTIAL:
                continue
            target = root / p
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for p in ("images", "labels", "annotations", "demo.yaml"):
            os.replace(tmp / p, root / p)
        for stale in root.glob("*.cache.json"):  # label caches of an earlier set
            stale.unlink()
        atomic_write_text(root / _MARKER, json.dumps(params))  # marks the set complete
        (root / _PARTIAL).unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / "demo.yaml"


def ensure_demo_dataset(root: str | os.PathLike | None = None, **kwargs) -> Path:
    """The demo set's ``demo.yaml``, generating the set first unless a complete one is there.

    Args:
        root: folder (default ``default_demo_root()``).
        **kwargs: ``generate_demo_dataset`` parameters (num_train, num_val, imgsz, seed).
    """
    root = Path(root).expanduser().resolve() if root is not None else default_demo_root()
    get = kwargs.get
    params = _params(get("num_train", 240), get("num_val", 60), get("imgsz", 320), get("seed", 0))
    if _is_complete(root, params):
        return root / "demo.yaml"
    return generate_demo_dataset(root, overwrite=True, **kwargs)
