"""Image decoding with clear errors: BGR uint8 (H, W, 3), EXIF orientation applied.

``cv2.imdecode`` with ``IMREAD_COLOR`` already applies the EXIF orientation, turns grayscale and
palette images into 3 channels, drops alpha and maps 16-bit samples to 8 bits. What it does not do
is reject truncated files (libjpeg fills the missing part with grey), so JPEG and PNG files are
also checked for their end marker. Files are read, never written.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from yolov9k.errors import InputError

__all__ = ["IMG_FORMATS", "ImageReadError", "read_image", "is_image_file"]

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"
_TAIL = 4096  # bytes searched for an end marker: tolerates padding written after it by some tools


class ImageReadError(InputError):
    """An image file that cannot be used; ``reason`` is a short key for statistics ("truncated", ...)."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is one of ``IMG_FORMATS`` (case-insensitive)."""
    return Path(path).suffix[1:].lower() in IMG_FORMATS


def _check_complete(data: bytes, path: str | Path) -> None:
    """Raise ``ImageReadError("truncated")`` for JPEG / PNG data without its end marker."""
    tail = data[-_TAIL:]
    if data.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise ImageReadError(path, "truncated", "JPEG end-of-image marker missing")
    if data.startswith(_PNG_SIGNATURE) and _PNG_IEND not in tail:
        raise ImageReadError(path, "truncated", "PNG IEND chunk missing")


def read_image(path: str | Path, min_size: int = 2) -> np.ndarray:
    """Decode an image file.

    Args:
        path: image file (any format OpenCV decodes; unicode paths work).
        min_size: smallest accepted height and width in pixels.
    Returns:
        np.ndarray (H, W, 3) uint8, BGR, C-contiguous, EXIF orientation applied.
    Raises:
        ImageReadError: missing, empty, truncated, undecodable or too-small file; ``.reason`` says which.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(path, "missing") from None
    except OSError as e:
        raise ImageReadError(path, "unreadable", str(e)) from None
    if not data:
        raise ImageReadError(path, "empty", "0 bytes")
    _check_complete(data, path)
    try:
        im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise ImageReadError(path, "undecodable", str(e).strip().splitlines()[-1]) from None
    if im is None or im.size == 0:
        raise ImageReadError(path, "undecodable", "OpenCV could not decode the data")
    if im.dtype != np.uint8:  # defensive: IMREAD_COLOR already converts to 8 bits
        im = cv2.convertScaleAbs(im, alpha=255.0 / max(float(im.max()), 1.0))
    if im.shape[0] < min_size or im.shape[1] < min_size:
        raise ImageReadError(path, "too small", f"{im.shape[1]}x{im.shape[0]} pixels")
    return np.ascontiguousarray(im)
