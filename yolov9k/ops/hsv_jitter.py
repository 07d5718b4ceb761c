"""The ``hsv_jitter`` op, in one home: the HSV colour jitter of the training augmentation, in place.

Every pixel goes RGB (or BGR) -> HSV, each HSV channel through a 256-entry table, and back to RGB:
the YOLO colour augmentation (``yolov9k.data.augment.augment_hsv`` builds the tables from its random
gains). Reference (:func:`hsv_jitter_reference`): OpenCV's ``cvtColor`` + ``LUT`` + ``cvtColor``, as the
official code runs it. Kernel: ``yolov9k::hsv_jitter_`` (schema ``csrc/hsv_jitter.cpp``, CPU kernel
``csrc/cpu/hsv_jitter_kernel.cpp``), one AVX2 pass over the pixels, equal to the reference to the bit.

What "equal" means, precisely: OpenCV converts HSV -> RGB with vector code that truncates to uint8,
and the last pixels of a row that do not fill a vector with scalar code that rounds, so OpenCV's
result for a pixel can depend on where its row ends (off by 1 in about a third of those pixels'
values in a test image). The op's contract is OpenCV's vector arithmetic for every pixel: the
reference converts the pixels as one row padded to a multiple of 64 pixels (no scalar tail on AVX2
or AVX-512 builds), which for an image whose rows are whole 64-pixel multiples (every square
training image at imgsz 640) is exactly what converting the image itself gives. The kernel also
follows OpenCV's AVX2 build in computing ``1 - s*h`` with fused multiply-adds; as that is a property
of the OpenCV build, :func:`hsv_jitter` uses the kernel only once :func:`kernel_matches_opencv` has
checked it against the local OpenCV (once per process).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp
from yolov9k.ops._extension import has_native_kernel

__all__ = ["gain_tables", "hsv_jitter", "hsv_jitter_reference", "kernel_matches_opencv"]

_ROW_MULTIPLE = 64  # pixels: 4 vectors of 16 float32 lanes, OpenCV's widest HSV -> RGB step


def gain_tables(gains: Sequence[float]) -> np.ndarray:
    """The (3, 256) uint8 tables of the YOLO HSV jitter for (hue, saturation, value) gains: hue
    ``x * g % 180`` (OpenCV's 8-bit hue range), the others ``x * g`` clipped to [0, 255], truncated,
    in float64 as the official code computes them."""
    g = np.asarray(gains, dtype=np.float64)
    x = np.arange(256.0)
    return np.stack(((x * g[0]) % 180, np.clip(x * g[1], 0, 255), np.clip(x * g[2], 0, 255))).astype(np.uint8)


# --- reference -----------------------------------------------------------------------------------


def hsv_jitter_reference(img: Tensor, tables: Tensor, blue_index: int = 2) -> None:
    """OpenCV's HSV jitter of ``img`` in place: the reference of ``yolov9k::hsv_jitter_`` and the
    ``torch`` backend of :func:`hsv_jitter` (no argument checks).

    Args:
        img: contiguous uint8 CPU tensor (..., 3), RGB (``blue_index`` 2) or BGR (0).
        tables: uint8 (3, 256): hue (OpenCV's 8-bit hue, [0, 180)), saturation and value tables.
    """
    pixels = img.numpy().reshape(-1, 3)
    n = len(pixels)
    if n == 0:
        return
    row = np.zeros((1, n + (-n % _ROW_MULTIPLE), 3), np.uint8)  # one row: every pixel in a full vector
    row[0, :n] = pixels
    rgb = blue_index == 2
    to_hsv, to_rgb = (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB) if rgb else (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR)
    hsv = cv2.cvtColor(row, to_hsv)
    t = tables.numpy()
    hsv = cv2.merge([cv2.LUT(channel, t[c]) for c, channel in enumerate(cv2.split(hsv))])
    pixels[:] = cv2.cvtColor(hsv, to_rgb)[0, :n]


# --- the native op: fake, registration -----------------------------------------------------------


def _fake(img: Tensor, tables: Tensor, blue_index: int) -> None:
    torch._check(img.shape[-1] == 3, lambda: "img must be (..., 3)")
    torch._check(tuple(tables.shape) == (3, 256), lambda: "tables must be (3, 256)")


def _native(img: Tensor, tables: Tensor, blue_index: int = 2) -> None:
    torch.ops.yolov9k.hsv_jitter_(img, tables, blue_index)


_dispatch.define(
    "hsv_jitter", reference=hsv_jitter_reference, kernel_ops=[KernelOp("yolov9k::hsv_jitter_", fake=_fake)]
)
_dispatch.register("hsv_jitter", "cpp", _native, native_op="hsv_jitter_")


@functools.cache
def kernel_matches_opencv() -> bool:
    """Whether the kernel runs here and gives the reference's pixels (checked once per process on
    random and smooth images, both channel orders, fitted and arbitrary tables): False without the
    extension's kernel, without AVX2 + FMA, or with an OpenCV build that rounds differently."""
    if not has_native_kernel("hsv_jitter_", "CPU"):
        return False
    rng = np.random.default_rng(0)
    fitted = gain_tables((1.01, 1.3, 0.8))
    arbitrary = np.stack((rng.integers(0, 180, 256), rng.integers(0, 256, 256), rng.integers(0, 256, 256)))
    noise = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    for img in (noise, cv2.resize(noise[:8, :8], (128, 128))):
        for tables in (fitted, arbitrary):
            t = torch.from_numpy(tables.astype(np.uint8))  # (arbitrary is int64)
            for blue in (0, 2):
                ref, out = torch.from_numpy(img.copy()), torch.from_numpy(img.copy())
                hsv_jitter_reference(ref, t, blue)
                try:
                    _native(out, t, blue)
                except RuntimeError:  # no AVX2 + FMA on this CPU
                    return False
                if not torch.equal(out, ref):
                    return False
    return True


# --- public function -----------------------------------------------------------------------------


def hsv_jitter(img: Tensor, tables: Tensor, blue_index: int = 2) -> Tensor:
    """HSV colour jitter of ``img`` in place (dispatched: the C++ kernel where it matches the local
    OpenCV, else :func:`hsv_jitter_reference`; both give the same pixels).

    Args:
        img: contiguous uint8 CPU tensor (..., 3), RGB (``blue_index`` 2) or BGR (``blue_index`` 0).
        tables: uint8 (3, 256): each pixel's HSV channels (OpenCV's 8-bit HSV: hue in [0, 180))
            are replaced by ``tables[c][value]`` between the two conversions.
    Returns:
        ``img``.
    Raises:
        ValueError / TypeError: not a contiguous uint8 (..., 3) CPU image, or tables not uint8 (3, 256).
    """
    if img.dtype != torch.uint8 or tables.dtype != torch.uint8:
        raise TypeError(f"hsv_jitter: img and tables must be uint8, got {img.dtype} and {tables.dtype}")
    if img.dim() < 1 or img.shape[-1] != 3 or not img.is_contiguous() or img.device.type != "cpu":
        raise ValueError(f"hsv_jitter: img must be a contiguous (..., 3) CPU tensor, got {tuple(img.shape)}")
    if tuple(tables.shape) != (3, 256):
        raise ValueError(f"hsv_jitter: tables must have shape (3, 256), got {tuple(tables.shape)}")
    if blue_index not in (0, 2):
        raise ValueError(f"hsv_jitter: blue_index must be 0 (BGR) or 2 (RGB), got {blue_index}")
    # module_path: a backend forced for the model's ops (cuda, triton) leaves this CPU op on the reference
    backend, fn = _dispatch.select("hsv_jitter", img.device, module_path=True)
    if backend == "cpp" and not kernel_matches_opencv():
        fn = hsv_jitter_reference
    fn(img, tables.contiguous(), blue_index)
    return img
