"""``ops.hsv_jitter``: the C++ kernel gives its reference's pixels (OpenCV's vector arithmetic per pixel),
the reference equals OpenCV on the image itself wherever OpenCV converts every pixel with vectors, and
the one named change (OpenCV's scalar row tails) is bounded."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest
import torch

from yolov9k.ops import hsv_jitter, use_backend
from yolov9k.ops._extension import has_native_kernel
from yolov9k.ops.hsv_jitter import _native, gain_tables, hsv_jitter_reference, kernel_matches_opencv

needs_kernel = pytest.mark.skipif(
    not (has_native_kernel("hsv_jitter_", "CPU") and kernel_matches_opencv()),
    reason="no hsv_jitter kernel here (extension not built, or no AVX2 + FMA)",
)


def _tables(rng: np.random.Generator, kind: str) -> np.ndarray:
    if kind == "gains":  # the augmentation's (the kernel's multiplier path)
        return gain_tables(rng.uniform(-1, 1, 3) * [0.015, 0.7, 0.4] + 1)
    if kind == "extreme gains":  # hsv_s = hsv_v = 1: gains down to 0 and up to 2
        return gain_tables(rng.choice([0.0, 0.5, 1.0, 2.0], 3))
    # arbitrary tables: no multiplier reproduces them (the kernel's gather path)
    return np.stack((rng.integers(0, 180, 256), rng.integers(0, 256, 256), rng.integers(0, 256, 256))).astype(
        np.uint8
    )


def _image(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    if kind == "noise":
        return rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    if kind == "smooth":
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        flat = cv2.resize(small, (max(1, int(np.prod(shape))), 1)).reshape(*shape, 3)
        return np.ascontiguousarray(flat)
    # special colours: black, white, gray, primaries, ties between channels
    specials = np.array(
        [[0, 0, 0], [255, 255, 255], [114, 114, 114], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
         [0, 255, 255], [255, 0, 255], [1, 0, 0], [254, 255, 255], [128, 128, 127], [10, 200, 200]],
        np.uint8,
    )  # fmt: skip
    idx = rng.integers(0, len(specials), int(np.prod(shape)))
    return specials[idx].reshape(*shape, 3)


SHAPES = [(1,), (7,), (8,), (9,), (17,), (63,), (64,), (65,), (3, 37), (96, 96), (61, 130)]


@pytest.mark.op_parity("hsv_jitter")
@needs_kernel
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("image", ["noise", "smooth", "special"])
@pytest.mark.parametrize("tables", ["gains", "extreme gains", "arbitrary"])
def test_kernel_gives_the_reference_pixels(shape, image, tables):
    rng = np.random.default_rng(zlib.crc32(repr((shape, image, tables)).encode()))
    img = _image(rng, shape, image)
    t = torch.from_numpy(_tables(rng, tables))
    for blue in (0, 2):
        ref, out = torch.from_numpy(img.copy()), torch.from_numpy(img.copy())
        hsv_jitter_reference(ref, t, blue)
        _native(out, t, blue)
        assert torch.equal(out, ref), f"{(out != ref).sum().item()} values differ (blue_index {blue})"


@needs_kernel
def test_kernel_on_an_empty_image_is_a_no_op():
    img = torch.empty((0, 5, 3), dtype=torch.uint8)
    _native(img, torch.from_numpy(gain_tables((1.0, 1.2, 0.9))), 2)
    assert img.shape == (0, 5, 3)


def test_reference_equals_opencv_on_images_of_whole_64_pixel_rows():
    """The contract is OpenCV's own result where OpenCV converts every pixel with vectors: rows of
    whole multiples of 64 pixels (every square training image at imgsz 640, any AVX2 / AVX-512 build)."""
    rng = np.random.default_rng(1)
    for shape in [(640, 640), (33, 128), (5, 64)]:
        img = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        tables = _tables(rng, "gains")
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv = cv2.merge([cv2.LUT(c, tables[i]) for i, c in enumerate(cv2.split(hsv))])
        opencv = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        out = torch.from_numpy(img.copy())
        hsv_jitter_reference(out, torch.from_numpy(tables), 2)
        np.testing.assert_array_equal(out.numpy(), opencv)


def test_the_named_change_is_opencvs_row_tails_only():
    """Rows that do not fill whole vectors: OpenCV rounds their last pixels (scalar code) where its
    vectors truncate; the op truncates everywhere. Differences: by 1 at most, only in the last
    ``width % 64`` columns (the tail on AVX-512 builds; AVX2 builds' ``width % 32`` lie inside it)."""
    rng = np.random.default_rng(2)
    img = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), (5, 5), 0)
    tables = _tables(rng, "gains")
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv = cv2.merge([cv2.LUT(c, tables[i]) for i, c in enumerate(cv2.split(hsv))])
    opencv = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(int)
    out = torch.from_numpy(img.copy())
    hsv_jitter(out, torch.from_numpy(tables), 2)
    diff = np.abs(out.numpy().astype(int) - opencv)
    assert diff.max() <= 1
    assert not diff[:, : 96 - 96 % 64].any()


def test_public_function_checks_its_arguments_and_follows_a_forced_backend():
    tables = torch.from_numpy(gain_tables((1.0, 1.3, 0.8)))
    img = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        hsv_jitter(img.float(), tables)
    with pytest.raises(ValueError, match="contiguous"):
        hsv_jitter(img[:, ::2], tables)
    with pytest.raises(ValueError, match=r"\(3, 256\)"):
        hsv_jitter(img, tables[:2])
    with pytest.raises(ValueError, match="blue_index"):
        hsv_jitter(img, tables, 1)
    ref = img.clone()
    hsv_jitter_reference(ref, tables, 2)
    for backend in ("torch", "cuda"):  # cuda: forced for the model's ops, this CPU op keeps the reference
        with use_backend(backend):
            out = hsv_jitter(img.clone(), tables)
        assert torch.equal(out, ref)


@needs_kernel
def test_native_op_schema_and_fake():
    img = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (8, 9, 3), dtype=np.uint8))
    torch.library.opcheck(
        torch.ops.yolov9k.hsv_jitter_.default,
        (img, torch.from_numpy(gain_tables((1.0, 1.3, 0.8))), 2),
        test_utils=("test_schema", "test_faketensor"),
    )
    with pytest.raises(RuntimeError, match="contiguous uint8"):
        torch.ops.yolov9k.hsv_jitter_(img[:, ::2], torch.zeros((3, 256), dtype=torch.uint8), 2)
