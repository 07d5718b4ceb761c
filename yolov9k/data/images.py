"""Image files to BGR (or RGB) uint8 arrays, with bounded cost and clear errors.

What is read, and what is refused (``ImageReadError`` with a short ``reason``):

* Only regular files: a FIFO, a device (``/dev/zero``) or a folder is refused before a byte is read
  (opened non-blocking, checked with ``fstat``), so none can hang or exhaust memory.
* At most ``MAX_IMAGE_BYTES`` (320 MiB: an uncompressed 8-bit RGB image at the pixel bound fits),
  checked from ``fstat`` before reading.
* A header we can read: JPEG (and MPO), PNG, BMP, WebP, TIFF (and DNG), PFM, told by content, not by
  suffix. The declared width x height must be at most ``MAX_IMAGE_PIXELS`` (89,478,485, PIL's
  ``MAX_IMAGE_PIXELS``): a 1.5 KB file that claims 30000 x 30000 is refused before any decoding.
* Completeness is decided by decoding. JPEG goes through libjpeg-turbo (``simplejpeg``) in strict
  mode: the decoder's own "premature end of data" warnings refuse a truncated file, whatever its
  tail holds (an ``FF D9`` inside a trailing comment proves nothing), while bytes after a complete
  image (phone motion photos append a video) are fine. The other formats go through OpenCV, whose
  decoders fail on truncated data.

Decoded images: 3 channels uint8, EXIF orientation applied (as ``cv2.IMREAD_COLOR`` does),
grayscale / palette expanded, alpha dropped, 16-bit mapped to 8 bits. Files are read, never written.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from yolov9k.errors import InputError

__all__ = [
    "IMG_FORMATS",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "InputFileError",
    "ImageReadError",
    "read_regular_file",
    "image_header",
    "read_image",
    "probe_image",
    "is_image_file",
]

IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
MAX_IMAGE_BYTES = 320 * 2**20  # bytes of one image file
MAX_IMAGE_PIXELS = 89_478_485  # declared width * height (PIL's MAX_IMAGE_PIXELS: 0.25 GiB at 24 bits)

_TRUNCATED = ("premature end",)  # libjpeg warnings: data missing (end of file / of a data segment)
_CORRUPT = ("bad huffman code", "bad arithmetic code", "instead of rst")  # data present but wrong


class InputFileError(InputError):
    """A user file that cannot be used; ``reason`` is a short key for statistics ("truncated", ...)."""

    def __init__(self, path: str | Path, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


class ImageReadError(InputFileError):
    """An image file that cannot be used (missing, not a regular file, too large, truncated, ...)."""


def is_image_file(path: str | Path) -> bool:
    """True when the suffix is one of ``IMG_FORMATS`` (case-insensitive)."""
    return Path(path).suffix[1:].lower() in IMG_FORMATS


def read_regular_file(
    path: str | Path, max_bytes: int, error: type[InputFileError] = InputFileError
) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; else ``error``.

    The file is opened non-blocking (a FIFO without a writer does not hang the open) and checked
    with ``fstat`` on the open descriptor (no race with a swap after a ``stat``), before reading.
    Reasons: "missing", "unreadable", "not a regular file", "too large", "empty".
    """
    flags = os.O_RDONLY
    for name in ("O_NONBLOCK", "O_CLOEXEC", "O_NOCTTY"):
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(path, "missing") from None
    except OSError as e:
        raise error(path, "unreadable", e.strerror or str(e)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO, socket or device"
            raise error(path, "not a regular file", kind)
        if st.st_size > max_bytes:
            raise error(path, "too large", f"{st.st_size:,} bytes > {max_bytes:,}")
        if st.st_size == 0:
            raise error(path, "empty", "0 bytes")
        chunks, left = [], st.st_size  # a file that grows meanwhile is read up to its fstat size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except OSError as e:
        raise error(path, "unreadable", e.strerror or str(e)) from None
    finally:
        os.close(fd)


# ---- headers: format and declared size, from the first bytes ---------------------------------------


def _u16(b: bytes, o: int, be: bool) -> int:
    return struct.unpack_from(">H" if be else "<H", b, o)[0]


def _u32(b: bytes, o: int, be: bool) -> int:
    return struct.unpack_from(">I" if be else "<I", b, o)[0]


def _tiff_size(b: bytes) -> tuple[int, int]:
    """(width, height) from IFD0 of a TIFF or BigTIFF (tags 256 / 257)."""
    be = b[:2] == b"MM"
    big = _u16(b, 2, be) == 43
    if big:
        off = struct.unpack_from(">Q" if be else "<Q", b, 8)[0]
        n = struct.unpack_from(">Q" if be else "<Q", b, off)[0]
        first, step, vo = off + 8, 20, 12
    else:
        off = _u32(b, 4, be)
        n = _u16(b, off, be)
        first, step, vo = off + 2, 12, 8
    size = {}
    for k in range(min(n, 4096)):
        e = first + k * step
        tag, typ = _u16(b, e, be), _u16(b, e + 2, be)
        if tag in (256, 257):
            size[tag] = _u16(b, e + vo, be) if typ == 3 else _u32(b, e + vo, be)
    return size[256], size[257]


def _pfm_size(b: bytes) -> tuple[int, int]:
    tokens = b[2:256].split()
    return int(tokens[0]), int(tokens[1])


def image_header(data: bytes, path: str | Path = "<bytes>") -> tuple[str, int, int]:
    """(format, width, height) as the file's header declares them, without decoding.

    Raises:
        ImageReadError: "unsupported format" (not JPEG/PNG/BMP/WebP/TIFF/PFM by content),
            "undecodable" (a header that cannot be read), "too many pixels" (over ``MAX_IMAGE_PIXELS``).
    """
    try:
        if data[:2] == b"\xff\xd8":
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
            fmt = "jpeg"
        elif data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            fmt, w, h = "png", _u32(data, 16, True), _u32(data, 20, True)
        elif data[:2] == b"BM":
            fmt = "bmp"
            if _u32(data, 14, False) == 12:  # OS/2 core header
                w, h = _u16(data, 18, False), _u16(data, 20, False)
            else:
                w, h = struct.unpack_from("<ii", data, 18)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            fmt, chunk = "webp", data[12:16]
            if chunk == b"VP8 ":
                w, h = _u16(data, 26, False) & 0x3FFF, _u16(data, 28, False) & 0x3FFF
            elif chunk == b"VP8L":
                bits = _u32(data, 21, False)
                w, h = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            elif chunk == b"VP8X":
                w = int.from_bytes(data[24:27], "little") + 1
                h = int.from_bytes(data[27:30], "little") + 1
            else:
                raise ValueError(f"unknown WebP chunk {chunk!r}")
        elif data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            fmt, (w, h) = "tiff", _tiff_size(data)
        elif data[:2] in (b"PF", b"Pf") and data[2:3].isspace():
            fmt, (w, h) = "pfm", _pfm_size(data)
        else:
            raise ImageReadError(path, "unsupported format", "not a JPEG, PNG, BMP, WebP, TIFF or PFM file")
    except ImageReadError:
        raise
    except (ValueError, struct.error, KeyError, IndexError) as e:
        if data[:2] == b"\xff\xd8" and _jpeg_header_truncated(data):
            raise ImageReadError(path, "truncated", "the data ends inside the JPEG header") from None
        raise ImageReadError(path, "undecodable", f"unreadable header: {e}") from None
    w, h = abs(int(w)), abs(int(h))
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageReadError(path, "too many pixels", f"{w}x{h} > {MAX_IMAGE_PIXELS:,} pixels")
    return fmt, w, h


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(marker, offset, length) of the header segments before the first scan; raises struct.error
    when the data ends inside them (a file truncated within its header)."""
    pos, n = 2, len(data)
    while True:
        if pos + 2 > n:
            raise struct.error("end of data inside the JPEG header")
        if data[pos] != 0xFF:
            return  # not a marker: a corrupt header, left to the decoder to report
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image
            return
        length = _u16(data, pos + 2, True)
        if pos + 2 + length > n:
            raise struct.error("end of data inside a JPEG header segment")
        yield marker, pos, length
        pos += 2 + length


def _jpeg_orientation(data: bytes) -> int:
    """EXIF orientation (1-8) of a JPEG from its first APP1 Exif segment; 1 when absent or unreadable."""
    try:
        for marker, pos, length in _jpeg_segments(data):
            if marker == 0xE1 and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
                t = data[pos + 10 : pos + 2 + length]  # the TIFF structure
                be = t[:2] == b"MM"
                ifd = _u32(t, 4, be)
                for k in range(_u16(t, ifd, be)):
                    e = ifd + 2 + 12 * k
                    if _u16(t, e, be) == 0x0112:
                        v = _u16(t, e + 8, be)
                        return v if 1 <= v <= 8 else 1
                return 1
    except struct.error:
        return 1
    return 1


def _jpeg_header_truncated(data: bytes) -> bool:
    """Whether the data ends inside the header segments (before the first scan)."""
    try:
        for _ in _jpeg_segments(data):
            pass
    except struct.error:
        return True
    return False


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF ``orientation`` (2-8) as OpenCV's IMREAD_COLOR does; 1 returns ``img`` unchanged."""
    if orientation in (5, 6, 7, 8):
        img = cv2.transpose(img)
    flip = {2: 1, 3: -1, 4: 0, 6: 1, 7: -1, 8: 0}.get(orientation)
    return img if flip is None else cv2.flip(img, flip)


def _jpeg_decode(data: bytes, path: str | Path, rgb: bool, min_hw: tuple[int, int] | None) -> np.ndarray:
    """Strict libjpeg-turbo decode; warnings that mean missing or wrong data refuse the file."""
    space = "RGB" if rgb else "BGR"
    mh, mw = min_hw if min_hw else (0, 0)
    try:
        return simplejpeg.decode_jpeg(data, colorspace=space, min_height=mh, min_width=mw, strict=True)
    except ValueError as e:
        msg = str(e)
        low = msg.lower()
    if any(k in low for k in _TRUNCATED):
        raise ImageReadError(path, "truncated", msg)
    if any(k in low for k in _CORRUPT):
        raise ImageReadError(path, "corrupt data", msg)
    try:  # a harmless warning (unknown JFIF revision, bad ICC marker, ...): decode without strictness
        return simplejpeg.decode_jpeg(data, colorspace=space, min_height=mh, min_width=mw, strict=False)
    except ValueError as e:
        raise ImageReadError(path, "undecodable", msg if msg == str(e) else f"{msg}; {e}") from None


def _looks_truncated(fmt: str, data: bytes) -> bool:
    """For a file OpenCV failed to decode: does its structure end early? (labels the reason only)"""
    try:
        if fmt == "png":  # walk the chunks: length, type, data, crc
            pos = 8
            while pos + 8 <= len(data):
                length, kind = _u32(data, pos, True), data[pos + 4 : pos + 8]
                pos += 12 + length
                if kind == b"IEND":
                    return pos > len(data)
            return True
        if fmt == "bmp":
            return _u32(data, 2, False) > len(data)
        if fmt == "webp":
            return _u32(data, 4, False) + 8 > len(data)
    except struct.error:
        return True
    return False


def _decode(data: bytes, path: str | Path, rgb: bool, reduce_to: int | None) -> np.ndarray:
    fmt, w, h = image_header(data, path)
    if fmt == "jpeg":
        min_hw = None
        if reduce_to and max(w, h) >= 2 * reduce_to:  # libjpeg DCT scaling: decode at 1/2, 1/4 or 1/8
            r = reduce_to / max(w, h)
            min_hw = (math.ceil(h * r), math.ceil(w * r))
        im = _orient(_jpeg_decode(data, path, rgb, min_hw), _jpeg_orientation(data))
    else:
        try:
            im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as e:
            raise ImageReadError(path, "undecodable", str(e).strip().splitlines()[-1]) from None
        if im is None or im.size == 0:
            reason = "truncated" if _looks_truncated(fmt, data) else "undecodable"
            raise ImageReadError(path, reason, f"OpenCV could not decode the {fmt.upper()} data")
        if im.dtype != np.uint8:  # defensive: IMREAD_COLOR already converts to 8 bits
            im = cv2.convertScaleAbs(im, alpha=255.0 / max(float(im.max()), 1.0))
        if rgb:
            im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    return im


def read_image(
    path: str | Path, min_size: int = 2, rgb: bool = False, reduce_to: int | None = None
) -> np.ndarray:
    """Decode an image file (bounded: see the module docstring).

    Args:
        path: image file (unicode paths work).
        min_size: smallest accepted height and width in pixels.
        rgb: channel order RGB instead of BGR (saves a conversion for callers that want RGB).
        reduce_to: the long side the caller will resize to: a JPEG at least twice as large is decoded
            by libjpeg at 1/2, 1/4 or 1/8 scale, the smallest whose long side is still ``>= reduce_to``
            (several times faster; the caller still resizes to its exact size).
    Returns:
        np.ndarray (H, W, 3) uint8, C-contiguous, EXIF orientation applied.
    Raises:
        ImageReadError: ``.reason`` says why ("missing", "not a regular file", "too large", "empty",
            "unsupported format", "too many pixels", "truncated", "corrupt data", "undecodable",
            "too small", "unreadable").
    """
    data = read_regular_file(path, MAX_IMAGE_BYTES, ImageReadError)
    im = _decode(data, path, rgb, reduce_to)
    if im.shape[0] < min_size or im.shape[1] < min_size:
        raise ImageReadError(path, "too small", f"{im.shape[1]}x{im.shape[0]} pixels")
    return np.ascontiguousarray(im)


def probe_image(path: str | Path, min_size: int = 2) -> tuple[int, int]:
    """(h, w) of an image as ``read_image`` would return it, after the same checks, at lower cost.

    A JPEG is decoded completely (every byte of entropy-coded data, so a truncated file is refused)
    but at 1/8 scale; the other formats are decoded in full.
    """
    data = read_regular_file(path, MAX_IMAGE_BYTES, ImageReadError)
    fmt, w, h = image_header(data, path)
    if fmt == "jpeg":
        _jpeg_decode(data, path, False, (1, 1))
        if _jpeg_orientation(data) >= 5:
            w, h = h, w
    else:
        h, w = _decode(data, path, False, None).shape[:2]
    if h < min_size or w < min_size:
        raise ImageReadError(path, "too small", f"{w}x{h} pixels")
    return h, w
