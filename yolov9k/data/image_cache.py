"""``cache=ram|disk``: decoded, resized images kept for the next epochs.

* The figure first: the bytes a split needs are known before decoding anything (each sample's size is
  in the label scan), ``h * w * 3`` at the resized size. ``ram`` is used when that is at most
  ``RAM_FRACTION`` of the memory the system reports available (``MemAvailable``); otherwise one
  warning names both figures and the disk cache is used instead. ``disk`` refuses in one line when
  its folder has less free space than it needs.
* RAM: the arrays are filled in the main process before the DataLoader starts its workers, which
  share them (fork, copy-on-write: their pages are never written).
* Disk: one ``.npy`` per image in ``<labels folder>.npy-<imgsz>/`` beside the label cache, or in the
  cache dir when that folder is not writable (user data is never modified). A file is named after a
  hash of the image's path, size, mtime and ctime (nanoseconds) and of how it was resized, so an
  image that changes gets a new file. Files are written to a temp name and renamed (never half
  seen); a file whose header, dtype, shape or length is wrong is rebuilt from the image, not trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from yolov9k.data.labels import Sample, _dir_writable, default_cache_dir, img2label_paths
from yolov9k.errors import ConfigError
from yolov9k.io.files import atomic_output

__all__ = ["CACHE_MODES", "RAM_FRACTION", "resized_shape", "cache_bytes", "available_memory", "DiskCache"]

LOGGER = logging.getLogger("yolov9k.data")
CACHE_MODES = ("ram", "disk", "false")
RAM_FRACTION = 0.7  # of MemAvailable a RAM cache may take


def resized_shape(shape: tuple[int, int], imgsz: int) -> tuple[int, int]:
    """(h, w) of an image of ``shape`` after ``resize_long_side(img, imgsz)``."""
    h0, w0 = shape
    r = imgsz / max(h0, w0)
    return (h0, w0) if r == 1 else (max(1, int(h0 * r)), max(1, int(w0 * r)))


def cache_bytes(samples: Sequence[Sample], imgsz: int) -> int:
    """Bytes of all resized uint8 RGB images of ``samples``."""
    return sum(h * w * 3 for h, w in (resized_shape(s.shape, imgsz) for s in samples))


def available_memory() -> int | None:
    """``MemAvailable`` of /proc/meminfo in bytes (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class DiskCache:
    """The ``.npy`` files of one split at one image size and resize mode.

    Args:
        samples: the split. imgsz: long side of the cached images. mode: how they were resized
            ("linear" for training, "area" for validation), part of the file key.
        cache_dir: fallback folder when the one beside the labels is not writable.
    """

    def __init__(
        self, samples: Sequence[Sample], imgsz: int, mode: str, cache_dir: str | Path | None = None
    ) -> None:
        self.imgsz, self.mode = int(imgsz), mode
        labels_dir = Path(img2label_paths([samples[0].im_file])[0]).parent.resolve()
        name = f"{labels_dir.name}.npy-{self.imgsz}"
        if _dir_writable(labels_dir.parent):
            self.folder = labels_dir.with_name(name)
        else:
            tag = hashlib.sha256(str(labels_dir).encode()).hexdigest()[:16]
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self.folder = root / f"{name}-{tag}"
        self.rebuilt = 0

    def path(self, im_file: str) -> Path:
        """The cache file of ``im_file`` as it is now (its stat is part of the name)."""
        try:
            st = os.stat(im_file)
            key = f"{os.path.abspath(im_file)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
        except OSError:
            key = os.path.abspath(im_file)
        key += f"|{self.imgsz}|{self.mode}"
        return self.folder / f"{Path(im_file).stem}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"

    def check_space(self, need: int) -> None:
        """Refuse (ConfigError, one line) when the folder's disk has less free space than ``need``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.folder).free
        if need > free:
            raise ConfigError(f"cache=disk needs {gib(need)} in {self.folder}, {gib(free)} free there")

    def load(self, sample: Sample, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The cached image of ``sample``; decoded with ``decode()`` and written when absent or bad."""
        f = self.path(sample.im_file)
        expect = (*resized_shape(sample.shape, self.imgsz), 3)
        try:
            img = np.load(f, allow_pickle=False)
            if img.dtype == np.uint8 and img.shape == expect and img.flags.c_contiguous:
                return img
            why = f"dtype {img.dtype}, shape {img.shape}, expected uint8 {expect}"
        except FileNotFoundError:
            why = None
        except (OSError, ValueError, EOFError) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
        if why is not None:
            self.rebuilt += 1
            if self.rebuilt <= 5:
                LOGGER.warning("image cache file %s is damaged (%s): rebuilt from the image", f, why)
        img = decode()
        self.write(f, img)
        return img

    def write(self, f: Path, img: np.ndarray) -> None:
        """Write ``img`` to ``f`` through the atomic writer; a failure only costs the cache entry."""
        try:
            with atomic_output(f) as tmp, open(tmp, "wb") as fh:
                np.save(fh, img, allow_pickle=False)
        except OSError as e:
            LOGGER.info("cannot write image cache file %s (%s)", f, e)
