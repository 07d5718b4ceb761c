"""Scanning image/label pairs into verified samples, with counted skips and a label cache.

A YOLO label file holds one object per line: ``cls cx cy w h`` normalized to [0, 1] (centre xywh), or a
polygon ``cls x1 y1 x2 y2 ...`` (three or more normalized points), turned into its bounding box. Bad
files never stop a scan: corrupt images are skipped, bad rows dropped, and every case is counted in
``ScanStats`` and logged. Files are only read; the cache goes beside the labels folder when that is
writable, else into the user cache dir.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from yolov9k.data.images import ImageReadError, InputFileError, probe_image, read_regular_file
from yolov9k.errors import InputError
from yolov9k.io.files import atomic_output

__all__ = [
    "Sample",
    "ScanStats",
    "img2label_paths",
    "parse_label_text",
    "scan_dataset",
    "require_boxes",
    "default_cache_dir",
    "CACHE_VERSION",
    "MAX_LABEL_BYTES",
]

LOGGER = logging.getLogger("yolov9k.data")
CACHE_VERSION = 2
MAX_LABEL_BYTES = 16 * 2**20  # bytes of one label file (a file with 100k boxes is about 4 MB)
COORD_TOLERANCE = 0.01  # box corners up to 1% outside the image are clipped; further out, dropped
_MAX_LOGGED = 20  # individual warnings per scan; the rest only counted
T = TypeVar("T")


@dataclass
class Sample:
    """One verified image and its labels.

    Attributes:
        im_file: image path (str).
        shape: (h, w) pixels of the decoded image (EXIF orientation applied).
        labels: float32 (n, 5) ``[cls, cx, cy, w, h]``, coordinates normalized to the image; n may be 0.
    """

    im_file: str
    shape: tuple[int, int]
    labels: np.ndarray


@dataclass
class ScanStats:
    """What a scan found. ``corrupt`` and ``dropped`` count per reason."""

    images: int = 0  # image files looked at
    missing: int = 0  # images without a label file (kept as background)
    empty: int = 0  # empty label files (kept as background)
    corrupt: Counter = field(default_factory=Counter)  # images skipped, per reason
    dropped: Counter = field(default_factory=Counter)  # label rows dropped, per reason
    bad_label_files: int = 0  # unreadable label files (image kept as background)
    crowd: int = 0  # COCO crowd annotations skipped
    boxes: int = 0  # label rows kept

    @property
    def kept(self) -> int:
        """Images that made it into the sample list."""
        return self.images - sum(self.corrupt.values())

    def merge(self, other: ScanStats) -> None:
        """Add ``other``'s counts to this one."""
        for name in ("images", "missing", "empty", "bad_label_files", "crowd", "boxes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.corrupt.update(other.corrupt)
        self.dropped.update(other.dropped)

    def summary(self) -> str:
        """One line, e.g. ``found 240, missing 0, empty 3, corrupt 1 (truncated: 1), rows dropped 0``."""

        def detail(c: Counter) -> str:
            return f" ({', '.join(f'{k}: {v}' for k, v in sorted(c.items()))})" if c else ""

        s = (
            f"found {self.images}, missing {self.missing}, empty {self.empty}, "
            f"corrupt {sum(self.corrupt.values())}{detail(self.corrupt)}, "
            f"rows dropped {sum(self.dropped.values())}{detail(self.dropped)}"
        )
        if self.bad_label_files:
            s += f", unreadable label files {self.bad_label_files}"
        if self.crowd:
            s += f", crowd skipped {self.crowd}"
        return s

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("images", "missing", "empty", "bad_label_files", "crowd", "boxes")}
        d["corrupt"], d["dropped"] = dict(self.corrupt), dict(self.dropped)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ScanStats:
        s = cls(**{k: int(d[k]) for k in ("images", "missing", "empty", "bad_label_files", "crowd", "boxes")})
        s.corrupt, s.dropped = Counter(d["corrupt"]), Counter(d["dropped"])
        return s


def img2label_paths(im_files: Sequence[str | os.PathLike]) -> list[str]:
    """Label file of each image: the last ``/images/`` becomes ``/labels/``, the suffix ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for f in map(str, im_files):
        head, sep, tail = f.rpartition(sa)
        f = head + sb + tail if sep else f
        out.append(str(Path(f).with_suffix(".txt")))
    return out


def default_cache_dir() -> Path:
    """``$YOLOV9K_HOME/cache`` or ``~/.cache/yolov9k/cache``."""
    home = os.environ.get("YOLOV9K_HOME")
    return (Path(home) if home else Path.home() / ".cache" / "yolov9k") / "cache"


# ---------------------------------------------------------------------------------------------------------
# label text


def parse_label_text(text: str, nc: int) -> tuple[np.ndarray, Counter]:
    """Parse YOLO label text, dropping bad rows.

    Args:
        text: label file content.
        nc: number of classes; rows with class >= nc are dropped.
    Returns:
        (labels float32 (n, 5) ``[cls, cx, cy, w, h]`` normalized, Counter of dropped rows per reason).
    """
    dropped: Counter = Counter()
    rows: list[list[float]] = []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5 and (len(parts) < 7 or len(parts) % 2 == 0):
            dropped["columns"] += 1
            continue
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            dropped["not a number"] += 1
            continue
        if not all(math.isfinite(v) for v in vals):
            dropped["nan/inf"] += 1
            continue
        c = vals[0]
        if c != int(c):
            dropped["class not integer"] += 1
            continue
        if c < 0:
            dropped["class<0"] += 1
            continue
        if c >= nc:
            dropped["class>=nc"] += 1
            continue
        if len(vals) == 5:
            cx, cy, w, h = vals[1:]
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
        else:  # polygon -> bounding box
            xs, ys = vals[1::2], vals[2::2]
            x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
        lo, hi = -COORD_TOLERANCE, 1 + COORD_TOLERANCE
        if not all(lo <= v <= hi for v in (x1, y1, x2, y2)):
            dropped["out of range"] += 1
            continue
        x1, y1, x2, y2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            dropped["zero size"] += 1
            continue
        rows.append([c, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    labels = np.array(rows, dtype=np.float32).reshape(-1, 5)
    if len(labels):
        _, first = np.unique(labels, axis=0, return_index=True)
        if len(first) < len(labels):
            dropped["duplicate"] += len(labels) - len(first)
            labels = labels[np.sort(first)]
    return labels, dropped


# ---------------------------------------------------------------------------------------------------------
# scanning


def _read_label_text(lb_file: str) -> str | None:
    """Text of a label file; None when there is none. Raises InputFileError / UnicodeDecodeError."""
    try:
        return read_regular_file(lb_file, MAX_LABEL_BYTES).decode("utf-8")
    except InputFileError as e:
        if e.reason == "missing":
            return None
        if e.reason == "empty":
            return ""
        raise


def _verify_pair(im_file: str, lb_file: str, nc: int) -> tuple[Sample | None, ScanStats, list[str]]:
    """Check one image and its label file; never raises."""
    st, msgs = ScanStats(images=1), []
    try:
        h, w = probe_image(im_file)
    except ImageReadError as e:
        st.corrupt[e.reason] += 1
        return None, st, [f"skipping image: {e}"]
    labels = np.zeros((0, 5), np.float32)
    try:
        text = _read_label_text(lb_file)
    except (InputFileError, UnicodeDecodeError) as e:
        st.bad_label_files = 1
        msgs.append(f"{lb_file}: unreadable label file, image kept as background ({e})")
        text = ""
    else:
        if text is None:
            st.missing = 1
        elif not text.strip():
            st.empty = 1
    if text:
        labels, st.dropped = parse_label_text(text, nc)
        if st.dropped:
            msgs.append(f"{lb_file}: dropped rows {dict(st.dropped)}")
    st.boxes = len(labels)
    return Sample(im_file, (int(h), int(w)), labels), st, msgs


def _num_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def verify_in_threads(
    items: Sequence[T], verify: Callable[[T], tuple[Sample | None, ScanStats, list[str]]], prefix: str
) -> tuple[list[Sample], ScanStats]:
    """``verify`` every item in a thread pool (image decoding releases the GIL): the samples kept, in
    order, and the merged stats; the first ``_MAX_LOGGED`` messages logged, the rest counted. The one
    scan loop of YOLO label folders and COCO jsons."""
    stats, samples, logged = ScanStats(), [], 0
    with ThreadPoolExecutor(_num_threads()) as pool:
        for sample, st, msgs in pool.map(verify, items):
            stats.merge(st)
            if sample is not None:
                samples.append(sample)
            for m in msgs:
                if logged < _MAX_LOGGED:
                    LOGGER.warning("%s%s", prefix, m)
                logged += 1
    if logged > _MAX_LOGGED:
        LOGGER.warning("%s... %d more warnings (counted in the summary)", prefix, logged - _MAX_LOGGED)
    return samples, stats


def _image_key(path: str) -> list:
    """What the cache keys an image on: path, size, mtime and ctime (ns); reading every image is not cheap."""
    try:
        st = os.stat(path)
        return [path, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    except OSError:
        return [path, None, None, None]


def _label_key(path: str) -> str | None:
    """What the cache keys a label file on: its content (a SHA-256), or its absence / unreadability."""
    try:
        text = _read_label_text(path)
    except (InputFileError, UnicodeDecodeError) as e:
        return f"unreadable: {getattr(e, 'reason', type(e).__name__)}"
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def _dataset_hash(im_files: Sequence[str], lb_files: Sequence[str], nc: int) -> str:
    """Key of a scan: nc, then per pair the image's path / size / mtime / ctime and the label content."""
    h = hashlib.sha256(json.dumps([CACHE_VERSION, nc]).encode())
    with ThreadPoolExecutor(_num_threads()) as pool:
        label_keys = list(pool.map(_label_key, lb_files))
    for im, lb, lk in zip(im_files, lb_files, label_keys):
        h.update(json.dumps([*_image_key(im), lb, lk]).encode())
    return h.hexdigest()


def _dir_writable(path: Path) -> bool:
    """Whether cache files may be created in ``path`` (patched in tests: root ignores permissions)."""
    return path.is_dir() and os.access(path, os.W_OK)


def _cache_paths(lb_files: Sequence[str], cache_dir: str | Path | None) -> list[Path]:
    """Candidate cache files, preferred first: beside the labels folder, then in the cache dir."""
    labels_dir = Path(lb_files[0]).parent.resolve()
    fallback_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = hashlib.sha256(str(labels_dir).encode()).hexdigest()[:16]
    fallback = fallback_dir / f"{labels_dir.name}-{tag}.cache.json"
    beside = labels_dir.with_name(labels_dir.name + ".cache.json")
    return [beside, fallback] if _dir_writable(labels_dir.parent) else [fallback]


def _read_cache(path: Path, key: str) -> tuple[list[Sample], ScanStats] | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        if d.get("version") != CACHE_VERSION or d.get("hash") != key:
            return None
        samples = [
            Sample(f, (int(h), int(w)), np.array(lab, dtype=np.float32).reshape(-1, 5))
            for f, h, w, lab in d["samples"]
        ]
        return samples, ScanStats.from_dict(d["stats"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(paths: list[Path], key: str, samples: list[Sample], stats: ScanStats) -> Path | None:
    payload = json.dumps(
        {
            "version": CACHE_VERSION,
            "hash": key,
            "stats": stats.to_dict(),
            "samples": [[s.im_file, s.shape[0], s.shape[1], s.labels.tolist()] for s in samples],
        }
    )
    for path in paths:
        try:
            with atomic_output(path) as tmp:  # atomic: readers never see half a cache
                tmp.write_text(payload, encoding="utf-8")
            return path
        except OSError as e:
            LOGGER.info("cannot write label cache %s (%s)", path, e)
    return None


def scan_dataset(
    image_files: Sequence[str | os.PathLike],
    nc: int,
    cache_dir: str | Path | None = None,
    prefix: str = "",
    use_cache: bool = True,
) -> tuple[list[Sample], ScanStats]:
    """Verify images and read their YOLO labels, with a cache of the result.

    The cache is keyed on ``nc``, each label file's content (SHA-256: an edit is always seen) and
    each image's path, size, mtime and ctime (nanoseconds; images are not read to build the key).

    Args:
        image_files: image paths; labels are found with ``img2label_paths``.
        nc: number of classes.
        cache_dir: fallback cache folder (default ``default_cache_dir()``), used when the folder
            holding the labels folder is not writable.
        prefix: text put before log messages (e.g. "train: ").
        use_cache: read and write the cache.
    Returns:
        (samples in input order without the corrupt images, stats).
    Raises:
        ValueError: no usable image (message has the summary).
    """
    im_files = [str(f) for f in image_files]
    if not im_files:
        raise InputError(f"{prefix}no image files given")
    lb_files = img2label_paths(im_files)
    key = _dataset_hash(im_files, lb_files, nc)
    paths = _cache_paths(lb_files, cache_dir) if use_cache else []
    cached = next((c for c in (_read_cache(p, key) for p in paths) if c is not None), None)
    if cached is not None:
        samples, stats = cached
        LOGGER.info("%sloaded label cache: %s", prefix, stats.summary())
    else:
        pairs = list(zip(im_files, lb_files))
        samples, stats = verify_in_threads(pairs, lambda p: _verify_pair(p[0], p[1], nc), prefix)
        LOGGER.info("%sscanned: %s", prefix, stats.summary())
        if paths:
            _write_cache(paths, key, samples, stats)
    if not samples:
        raise InputError(f"{prefix}no usable images: {stats.summary()}")
    return samples, stats


def require_boxes(stats: ScanStats, what: str, background_only: bool = False) -> str | None:
    """Refuse a split without a single box (labels folder missing or misnamed, json without annotations).

    Args:
        stats: the split's scan. what: names the split in the message (e.g. "dataset d.yaml: train").
        background_only: the split is background images on purpose: return a warning instead.
    Returns:
        None when there are boxes, else (``background_only``) the warning text to log.
    Raises:
        ValueError: no box at all, one line with the counts and the way out.
    """
    if stats.boxes > 0:
        return None
    counts = (
        f"{stats.kept} images: {stats.missing} without labels, {stats.empty} with empty label files, "
        f"{sum(stats.dropped.values())} label rows dropped"
    )
    if background_only:
        return f"WARNING: {what}: no boxes at all ({counts}); training on background only (background_only)"
    raise InputError(
        f"{what}: no boxes at all ({counts}); labels are read from labels/ beside images/ (images/x.jpg -> "
        "labels/x.txt) or the split's COCO json. For background images on purpose: background_only=True "
        "(--background-only)"
    )
