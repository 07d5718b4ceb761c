"""Image files as a hostile user makes them: special files, huge files, decompression bombs, truncated
data disguised by its tail, valid data followed by kilobytes of something else (issue 22, items 2-4, 12).

Each case is a family: every format we read, every kind of special file, cut points across a file.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from yolov9k.data import scan_dataset
from yolov9k.data.images import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageReadError,
    image_header,
    probe_image,
    read_image,
)
from yolov9k.data.labels import MAX_LABEL_BYTES


def _photo(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random BGR image (JPEG-friendly, like a photo)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (7, 7), 0)


def _encode(img: np.ndarray, ext: str, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


def _jpeg(img: np.ndarray, progressive: bool = False, exif_orientation: int | None = None) -> bytes:
    if exif_orientation is None:
        return _encode(
            img, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)
        )
    buf, exif = io.BytesIO(), Image.Exif()
    exif[0x0112] = exif_orientation
    Image.fromarray(img[..., ::-1].copy()).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@contextmanager
def _deadline(seconds: int):
    """Fail (instead of hanging the suite) when the block takes longer than ``seconds``."""

    def fail(*_):
        raise TimeoutError(f"blocked for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---- item 2: only regular files are read -------------------------------------------------------------


def _special_files(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    link = tmp_path / "zero.jpg"
    link.symlink_to("/dev/zero")
    return {"fifo": fifo, "folder": folder, "link to /dev/zero": link, "/dev/zero": Path("/dev/zero")}


def test_special_files_are_refused_without_blocking(tmp_path):
    for kind, path in _special_files(tmp_path).items():
        with _deadline(5):
            for read in (read_image, probe_image):
                with pytest.raises(ImageReadError) as e:
                    read(path)
                assert e.value.reason == "not a regular file", (kind, str(e.value))


def test_special_files_in_a_train_list_are_counted_skips(tmp_path):
    (tmp_path / "images").mkdir()
    good = _write(tmp_path / "images" / "good.jpg", _jpeg(_photo()))
    specials = list(_special_files(tmp_path / "images").values())
    (tmp_path / "labels").mkdir()
    os.mkfifo(tmp_path / "labels" / "good.txt")  # a FIFO as the label file: background, counted
    with _deadline(20):
        samples, stats = scan_dataset([good, *specials], nc=1, use_cache=False)
    assert [s.im_file for s in samples] == [str(good)]
    assert stats.corrupt == {"not a regular file": len(specials)} and stats.bad_label_files == 1


# ---- item 3: sizes are checked before reading -------------------------------------------------------


def test_huge_sparse_files_are_refused_before_reading(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    big = tmp_path / "images" / "big.jpg"
    with open(big, "wb") as f:
        f.truncate(5 * 2**30)  # 5 GiB, sparse: costs no disk
    ok_img = _write(tmp_path / "images" / "ok.jpg", _jpeg(_photo()))
    with open(tmp_path / "labels" / "ok.txt", "wb") as f:
        f.truncate(5 * 2**30)
    before, t0 = _maxrss_mb(), time.perf_counter()
    with pytest.raises(ImageReadError, match="too large") as e:
        read_image(big)
    assert f"{MAX_IMAGE_BYTES:,}" in str(e.value)
    samples, stats = scan_dataset([big, ok_img], nc=1, use_cache=False)
    assert time.perf_counter() - t0 < 5 and _maxrss_mb() - before < 100  # nothing was read
    assert stats.corrupt == {"too large": 1} and stats.bad_label_files == 1 and len(samples) == 1


def test_size_bounds_are_the_documented_figures():
    assert MAX_IMAGE_BYTES == 320 * 2**20 and MAX_LABEL_BYTES == 16 * 2**20
    assert MAX_IMAGE_PIXELS == 89_478_485
    assert MAX_IMAGE_PIXELS * 3 + 1024 < MAX_IMAGE_BYTES  # an uncompressed image at the pixel bound fits


# ---- item 4: declared sizes are checked before decoding ---------------------------------------------


def _with_size(fmt: str, w: int, h: int) -> bytes:
    """A real small file of ``fmt`` whose header is rewritten to declare w x h (its data stays small)."""
    img = _photo(16, 16)
    if fmt == "jpeg":
        b = bytearray(_jpeg(img))
        sof = next(i for i in range(2, len(b)) if b[i] == 0xFF and b[i + 1] in (0xC0, 0xC2))
        struct.pack_into(">HH", b, sof + 5, h, w)
    elif fmt == "png":
        b = bytearray(_encode(img, ".png"))
        struct.pack_into(">II", b, 16, w, h)  # (the IHDR CRC no longer matches: never looked at)
    elif fmt == "bmp":
        b = bytearray(_encode(img, ".bmp"))
        struct.pack_into("<ii", b, 18, w, -h)
    elif fmt == "webp":
        b = bytearray(_encode(img, ".webp", cv2.IMWRITE_WEBP_QUALITY, 101))  # lossless: VP8L
        assert b[12:16] == b"VP8L"
        struct.pack_into("<I", b, 21, (w - 1) | ((h - 1) << 14))
    elif fmt == "tiff":
        b = bytearray(_encode(img, ".tiff"))
        be = b[:2] == b"MM"
        ifd = struct.unpack_from(">I" if be else "<I", b, 4)[0]
        n = struct.unpack_from(">H" if be else "<H", b, ifd)[0]
        for k in range(n):
            e = ifd + 2 + 12 * k
            tag, typ = struct.unpack_from(">HH" if be else "<HH", b, e)
            if tag in (256, 257):
                struct.pack_into((">I" if be else "<I"), b, e + 2, 0)  # rewrite type+count below
                struct.pack_into((">HHII" if be else "<HHII"), b, e, tag, 4, 1, w if tag == 256 else h)
    elif fmt == "pfm":
        b = bytearray(f"PF\n{w} {h}\n-1.0\n".encode() + bytes(16 * 16 * 12))
    else:
        raise AssertionError(fmt)
    return bytes(b)


FORMATS = ("jpeg", "png", "bmp", "webp", "tiff", "pfm")


@pytest.mark.parametrize("fmt", FORMATS)
def test_headers_are_read_for_every_format(fmt):
    assert image_header(_with_size(fmt, 123, 45))[:3] == (fmt, 123, 45)
    img = _photo(45, 123)
    real = {
        "jpeg": _jpeg(img),
        "png": _encode(img, ".png"),
        "bmp": _encode(img, ".bmp"),
        "webp": _encode(img, ".webp"),  # lossy: VP8
        "tiff": _encode(img, ".tiff"),
        "pfm": _encode(img.astype(np.float32) / 255, ".pfm"),
    }[fmt]
    assert image_header(real) == (fmt, 123, 45)


@pytest.mark.parametrize("fmt", FORMATS)
def test_decompression_bombs_are_refused_from_the_header(fmt, tmp_path):
    big = 16383 if fmt == "webp" else 30000  # WebP sides stop at 16383 (268 M pixels)
    f = _write(tmp_path / f"bomb.{fmt}", _with_size(fmt, big, big))
    assert f.stat().st_size < 1_100_000
    before, t0 = _maxrss_mb(), time.perf_counter()
    for read in (read_image, probe_image):
        with pytest.raises(ImageReadError, match=f"{big}x{big}") as e:
            read(f)
        assert e.value.reason == "too many pixels"
    assert time.perf_counter() - t0 < 2 and _maxrss_mb() - before < 100
    side = int(MAX_IMAGE_PIXELS**0.5)  # just under the bound: header accepted (decoding then fails)
    with pytest.raises(ImageReadError) as e:
        read_image(_write(tmp_path / f"under.{fmt}", _with_size(fmt, side, side)))
    assert e.value.reason != "too many pixels"


def test_a_bomb_in_a_train_list_never_becomes_a_sample(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    bomb = _write(tmp_path / "images" / "bomb.jpg", _with_size("jpeg", 30000, 30000))
    (tmp_path / "labels" / "bomb.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    good = _write(tmp_path / "images" / "good.jpg", _jpeg(_photo()))
    samples, stats = scan_dataset([bomb, good], nc=1, use_cache=False)
    assert [s.im_file for s in samples] == [str(good)] and stats.corrupt == {"too many pixels": 1}


def test_content_that_is_no_image_format_we_read_is_refused(tmp_path):
    for name, data in {"gif.jpg": b"GIF89a" + bytes(100), "text.png": b"hello world" * 10}.items():
        with pytest.raises(ImageReadError) as e:
            read_image(_write(tmp_path / name, data))
        assert e.value.reason == "unsupported format", name


# ---- item 12: completeness by decoding ---------------------------------------------------------------


def _sos(data: bytes) -> int:
    return next(i for i in range(2, len(data)) if data[i] == 0xFF and data[i + 1] == 0xDA)


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpegs_are_refused_whatever_their_tail_holds(progressive, tmp_path):
    data = _jpeg(_photo(120, 160), progressive=progressive)
    tails = {
        "nothing": b"",
        "EOI": b"\xff\xd9",
        "comment holding FF D9": b"\xff\xfe\x00\x04\xff\xd9",
        "comment + EOI": b"\xff\xfe\x00\x06abcd\xff\xd9",
        "comment holding FF D9 + 8 KB": b"\xff\xfe\x00\x04\xff\xd9" + bytes(8192),
    }
    scan = _sos(data)
    cuts = np.linspace(scan + 40, len(data) - 4, 6).astype(int)  # inside the entropy-coded data
    for cut in cuts:
        for name, tail in tails.items():
            f = _write(tmp_path / "cut.jpg", data[:cut] + tail)
            for read in (read_image, probe_image):
                with pytest.raises(ImageReadError) as e:
                    read(f)
                assert e.value.reason == "truncated", (int(cut), name, read.__name__, str(e.value))
    with pytest.raises(ImageReadError) as e:  # cut inside the header
        read_image(_write(tmp_path / "head.jpg", data[: scan // 2] + b"\xff\xd9"))
    assert e.value.reason == "truncated"


def test_bytes_after_a_complete_jpeg_are_accepted(tmp_path):
    img = _photo(120, 160)
    data = _jpeg(img)
    expect = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    rng = np.random.default_rng(1)
    tails = {
        "motion photo (64 KB video after the end marker)": b"\x00\x00\x00\x18ftypmp42"
        + rng.integers(0, 256, 65536, dtype=np.uint8).tobytes(),
        "8 KB of zeros": bytes(8192),
        "a second JPEG (MPO)": _jpeg(_photo(60, 80, seed=3)),
    }
    for name, tail in tails.items():
        f = _write(tmp_path / "x.jpg", data + tail)
        np.testing.assert_array_equal(read_image(f), expect, err_msg=name)
        assert probe_image(f) == (120, 160), name


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp", "tiff"])
def test_truncated_files_of_other_formats_are_refused(fmt, tmp_path):
    img = _photo(64, 80)
    data = _encode(img, "." + fmt)
    np.testing.assert_array_equal(read_image(_write(tmp_path / f"ok.{fmt}", data + bytes(8192))), img)
    tail = data[-12:]  # e.g. PNG's IEND chunk: the old end-marker test accepted this
    for cut in np.linspace(64, len(data) - 200, 5).astype(int):  # cut in the image data
        f = _write(tmp_path / f"cut.{fmt}", data[:cut] + tail)
        with pytest.raises(ImageReadError) as e:
            read_image(f)
        assert e.value.reason in ("truncated", "undecodable"), str(e.value)
    f = _write(tmp_path / f"cut.{fmt}", data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(f)
    assert e.value.reason == ("truncated" if fmt in ("png", "bmp", "webp") else "undecodable")


# ---- decoding: same pixels as OpenCV, orientation, RGB, reduced decoding ------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_opencv_applies_it(orientation, tmp_path):
    img = _photo(40, 70)
    data = _jpeg(img, exif_orientation=orientation)
    f = _write(tmp_path / "o.jpg", data)
    expect = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert expect.shape[:2] == ((70, 40) if orientation >= 5 else (40, 70))
    np.testing.assert_array_equal(read_image(f), expect)
    np.testing.assert_array_equal(read_image(f, rgb=True), expect[..., ::-1])
    assert probe_image(f) == expect.shape[:2]


def test_jpeg_pixels_equal_opencv_for_every_kind(tmp_path):
    img = _photo(50, 70)
    cmyk = io.BytesIO()
    Image.fromarray(np.dstack((img, img[..., :1])), "CMYK").save(cmyk, "JPEG")
    kinds = {
        "baseline": _jpeg(img),
        "progressive": _jpeg(img, progressive=True),
        "gray": _encode(img[..., 0], ".jpg"),
        "cmyk": cmyk.getvalue(),
    }
    for name, data in kinds.items():
        expect = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        got = read_image(_write(tmp_path / f"{name}.jpg", data))
        np.testing.assert_array_equal(got, expect, err_msg=name)


def test_reduced_jpeg_decoding_keeps_the_long_side_and_the_content(tmp_path):
    img = cv2.resize(_photo(120, 160), (1280, 960), interpolation=cv2.INTER_CUBIC)
    f = _write(tmp_path / "big.jpg", _jpeg(img))
    full = read_image(f)
    for target, shape in ((640, (480, 640)), (320, (240, 320)), (200, (240, 320)), (100, (120, 160))):
        small = read_image(f, reduce_to=target)
        assert small.shape[:2] == shape, (target, small.shape)
        ref = cv2.resize(full, shape[::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(int) - ref).mean() < 1.5, target  # a box-filtered decode
    assert read_image(f, reduce_to=700).shape == full.shape  # under 2x: full size
