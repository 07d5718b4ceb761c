"""Prediction inputs: images, folders, globs, videos, list files and in-memory arrays, read lazily.

``collect_sources`` resolves what a user passes into a flat list of items; ``iter_frames`` walks them
in order, one frame at a time: video frames decoded (a video is read sequentially), images left for
:func:`load` so that the prediction workers decode them in parallel. Nothing raises for a bad input:
a ``Frame`` with ``error`` set says why (the caller counts and reports it). Only regular files are
opened: a FIFO or a device named ``x.jpg`` / ``x.mp4`` is a skip, never a read that hangs or never ends.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolov9k.data.images import ImageReadError, is_image_file, read_image
from yolov9k.errors import InputNotFoundError
from yolov9k.io.opencv import cv2_path

__all__ = [
    "VIDEO_FORMATS",
    "SourceItem",
    "Frame",
    "collect_sources",
    "iter_frames",
    "load",
    "is_video_file",
]

VIDEO_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "webm", "wmv")


def is_video_file(path: str | os.PathLike) -> bool:
    """True when the suffix is one of ``VIDEO_FORMATS`` (case-insensitive)."""
    return Path(path).suffix[1:].lower() in VIDEO_FORMATS


@dataclass
class SourceItem:
    """One input: ``kind`` is "image", "video" or "array" (then ``array`` holds a BGR image)."""

    path: str
    kind: str
    array: np.ndarray | None = None


@dataclass
class Frame:
    """One image or video frame.

    Attributes:
        path: file it came from (a made-up "array<i>" name for in-memory images).
        image: (H, W, 3) uint8 BGR; None when it could not be read (``error`` says why) or, for an
            image file, until :func:`load` decodes it.
        error: why it could not be read, starting with the path (None when fine so far).
        frame: index of the frame in its video (None for images).
        fps: frames per second of the frames read from its video: the video's rate / ``vid_stride``
            (None for images).
        item: index of its source item, 0-based (progress: item + 1 of ``items``).
        items: number of source items of the run.
        frames: frames in its video as the container declares them (None: images, or unknown).
        kind: "image", "video" or "array" (the item's kind).
    """

    path: str
    image: np.ndarray | None
    error: str | None = None
    frame: int | None = None
    fps: float | None = None
    item: int = 0
    items: int = 1
    frames: int | None = None
    kind: str = "image"


def _is_media(path: str | os.PathLike) -> bool:
    return is_image_file(path) or is_video_file(path)


def _file_item(path: Path) -> SourceItem:
    return SourceItem(str(path), "video" if is_video_file(path) else "image")


def _listed(paths: Sequence[str | Path]) -> list[SourceItem]:
    """Items of the media files among ``paths``; anything but a folder counts (FIFOs and devices are
    skipped later, with a reason, rather than silently left out)."""
    return [_file_item(Path(p)) for p in paths if _is_media(p) and not Path(p).is_dir()]


def _from_path(text: str) -> list[SourceItem]:
    path = Path(text).expanduser()
    if any(c in text for c in "*?["):
        return _listed(sorted(glob.glob(os.path.expanduser(text), recursive=True)))
    if path.is_dir():
        return _listed(sorted(path.iterdir()))
    if path.suffix.lower() == ".txt" and path.is_file():  # a list of image / video paths, one a line
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return [_file_item(path.parent / ln) for ln in lines if ln]  # absolute lines stay absolute
    if os.path.lexists(path):
        return [_file_item(path)]  # a file, or a FIFO / device: skipped with its reason when read
    raise InputNotFoundError(f"source not found: {text!r} (not a file, folder or glob pattern)")


def collect_sources(source: Any) -> list[SourceItem]:
    """Resolve a prediction source into items.

    Args:
        source: an image or video file, a folder (its image and video files, sorted, not
            recursive), a glob pattern ("data/**/*.jpg"), a .txt file listing paths, an (H, W, 3)
            uint8 BGR array, or a list of any of these.
    Raises:
        FileNotFoundError: a path that does not exist (top level), or nothing to predict on.
        TypeError: an unsupported source type.
    """
    items: list[SourceItem] = []
    if isinstance(source, str | os.PathLike):
        items = _from_path(str(source))
    elif isinstance(source, np.ndarray):
        items = [SourceItem("array0", "array", source)]
    elif isinstance(source, Sequence):
        for i, s in enumerate(source):
            if isinstance(s, np.ndarray):
                items.append(SourceItem(f"array{i}", "array", s))
            elif isinstance(s, str | os.PathLike):
                p = Path(s).expanduser()
                # a missing file inside a list is reported and skipped later, like an unreadable one
                many = p.is_dir() or any(c in str(s) for c in "*?[")
                items.extend(_from_path(str(s)) if many else [_file_item(p)])
            else:
                raise TypeError(f"source[{i}] is a {type(s).__name__}; expected a path or an image array")
    else:
        raise TypeError(
            f"source must be a path, a glob, an image array or a list of them, got {type(source).__name__}"
        )
    if not items:
        raise InputNotFoundError(f"no images or videos found in {source!r}")
    return items


def _check_array(item: SourceItem, frame: Frame) -> Frame:
    a = item.array
    if a is None or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 2:
        desc = "None" if a is None else f"{a.dtype} {tuple(a.shape)}"
        return replace(frame, error=f"{item.path}: not an (H, W, 3) uint8 BGR image: {desc}")
    return replace(frame, image=np.ascontiguousarray(a))


def _not_regular(path: str) -> str | None:
    """Why ``path`` cannot be opened as a media file (missing, a FIFO, a device, ...), or None."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else ""
    return "not a regular file" + (f" ({kind})" if kind else "")


def _video_frames(item: SourceItem, first: Frame, stride: int) -> Iterator[Frame]:
    """The frames 0, stride, 2 * stride, ... of a video (the others are grabbed, not decoded)."""
    why = _not_regular(item.path)
    if why is not None:
        yield replace(first, error=f"{item.path}: {why}")
        return
    with cv2_path(item.path) as opencv_path:
        cap = cv2.VideoCapture(opencv_path)
        try:
            if not cap.isOpened():
                yield replace(first, error=f"{item.path}: video cannot be opened")
                return
            fps = cap.get(cv2.CAP_PROP_FPS)
            fps = (float(fps) if fps and np.isfinite(fps) and fps > 0 else 30.0) / stride
            count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
            frames = int(count) if count and np.isfinite(count) and count > 0 else None
            n = read = 0
            while True:
                ok, img = cap.read()
                if not ok or img is None:
                    break
                yield replace(first, image=img, frame=n, fps=fps, frames=frames)
                read += 1
                n += 1
                for _ in range(stride - 1):
                    if not cap.grab():
                        break
                    n += 1
            if read == 0:
                yield replace(first, error=f"{item.path}: video has no readable frames")
        finally:
            cap.release()


def iter_frames(items: Sequence[SourceItem], vid_stride: int = 1) -> Iterator[Frame]:
    """The items' frames in order: in-memory arrays checked, videos decoded frame by frame (every
    ``vid_stride``-th frame), image files left undecoded (``image`` None: see :func:`load`)."""
    for i, item in enumerate(items):
        first = Frame(item.path, None, item=i, items=len(items), kind=item.kind)
        if item.kind == "array":
            yield _check_array(item, first)
        elif item.kind == "video":
            yield from _video_frames(item, first, vid_stride)
        else:
            yield first


def load(frame: Frame) -> Frame:
    """``frame`` with its image decoded (image files; others are returned as they are).

    Only regular files are read (a FIFO would block the read forever, a device never end it);
    decoding is :func:`yolov9k.data.images.read_image`'s. An unreadable file gives the frame an
    ``error`` instead of raising.
    """
    if frame.image is not None or frame.error is not None or frame.kind != "image":
        return frame
    why = _not_regular(frame.path)
    if why is not None:
        return replace(frame, error=f"{frame.path}: {why}")
    try:
        return replace(frame, image=read_image(frame.path))
    except ImageReadError as e:
        return replace(frame, error=str(e))
