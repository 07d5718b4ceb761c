"""Prediction inputs: images, folders, globs, videos, list files and in-memory arrays, read lazily.

``collect_sources`` resolves what a user passes into a flat list of items; ``iter_frames`` decodes
them one frame at a time, turning an unreadable file into a ``Frame`` with ``error`` set (the caller
counts and reports it) instead of raising.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from yolov9k.data.images import ImageReadError, is_image_file, read_image
from yolov9k.errors import InputNotFoundError

__all__ = ["VIDEO_FORMATS", "SourceItem", "Frame", "collect_sources", "iter_frames", "is_video_file"]

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
    """One decoded image or video frame.

    Attributes:
        path: file it came from (a made-up "array<i>" name for in-memory images).
        image: (H, W, 3) uint8 BGR, or None when it could not be read.
        error: why it could not be read, starting with the path (None when ``image`` is set).
        frame: index of the frame in its video (None for images).
        fps: frames per second of its video (None for images).
    """

    path: str
    image: np.ndarray | None
    error: str | None = None
    frame: int | None = None
    fps: float | None = None


def _is_media(path: str | os.PathLike) -> bool:
    return is_image_file(path) or is_video_file(path)


def _file_item(path: Path) -> SourceItem:
    return SourceItem(str(path), "video" if is_video_file(path) else "image")


def _from_path(text: str) -> list[SourceItem]:
    path = Path(text).expanduser()
    if any(c in text for c in "*?["):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        return [_file_item(Path(m)) for m in matches if Path(m).is_file() and _is_media(m)]
    if path.is_dir():
        return [_file_item(p) for p in sorted(path.iterdir()) if p.is_file() and _is_media(p)]
    if path.suffix.lower() == ".txt" and path.is_file():  # a list of image / video paths, one a line
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        return [_file_item(path.parent / ln) for ln in lines if ln]  # absolute lines stay absolute
    if path.is_file():
        return [_file_item(path)]
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


def _check_array(item: SourceItem) -> Frame:
    a = item.array
    if a is None or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or min(a.shape[:2]) < 2:
        desc = "None" if a is None else f"{a.dtype} {tuple(a.shape)}"
        return Frame(item.path, None, f"{item.path}: not an (H, W, 3) uint8 BGR image: {desc}")
    return Frame(item.path, np.ascontiguousarray(a))


def _video_frames(item: SourceItem) -> Iterator[Frame]:
    cap = cv2.VideoCapture(item.path)
    try:
        if not cap.isOpened():
            reason = "missing" if not Path(item.path).exists() else "video cannot be opened"
            yield Frame(item.path, None, f"{item.path}: {reason}")
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 30.0
        n = 0
        while True:
            ok, img = cap.read()
            if not ok or img is None:
                break
            yield Frame(item.path, img, frame=n, fps=fps)
            n += 1
        if n == 0:
            yield Frame(item.path, None, f"{item.path}: video has no readable frames")
    finally:
        cap.release()


def iter_frames(items: Sequence[SourceItem]) -> Iterator[Frame]:
    """Decode the items in order, one frame at a time (videos lazily, frame by frame)."""
    for item in items:
        if item.kind == "array":
            yield _check_array(item)
        elif item.kind == "video":
            yield from _video_frames(item)
        else:
            try:
                yield Frame(item.path, read_image(item.path))
            except ImageReadError as e:
                yield Frame(item.path, None, str(e))
