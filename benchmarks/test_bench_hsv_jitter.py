"""hsv_jitter: OpenCV as the augmentation ran it before (two ``cvtColor`` + split / ``LUT`` / merge on the
image), the op's reference (the same OpenCV calls on the pixels as one padded row) and the C++ kernel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from conftest import pick

from yolov9k import ops
from yolov9k.ops.hsv_jitter import gain_tables

S = pick(640, 128)


def _inputs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), (S, S))  # smooth, photo-like
    return img, gain_tables((1.01, 1.3, 0.8))


def _opencv_on_the_image(img: np.ndarray, tables: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv = cv2.merge([cv2.LUT(c, tables[i]) for i, c in enumerate(cv2.split(hsv))])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=img)


@pytest.mark.parametrize("impl", ["opencv on the image", "torch", "cpp"])
@pytest.mark.op_bench("hsv_jitter")
def test_hsv_jitter_cpu(benchmark, impl):
    if impl == "cpp" and not ops.hsv_jitter_kernel_matches_opencv():
        pytest.skip("no hsv_jitter kernel here (extension not built, or no AVX2 + FMA)")
    cv2.setNumThreads(1)
    img, tables = _inputs()
    t_img, t_tables = torch.from_numpy(img), torch.from_numpy(tables)
    benchmark.group = f"hsv_jitter cpu {S}x{S}"
    benchmark.extra_info.update(size=S, impl=impl)
    if impl == "opencv on the image":
        out = benchmark(_opencv_on_the_image, img, tables)
    else:
        with ops.use_backend(impl):
            out = benchmark(ops.hsv_jitter, t_img, t_tables).numpy()
    assert out.shape == (S, S, 3) and out.dtype == np.uint8
