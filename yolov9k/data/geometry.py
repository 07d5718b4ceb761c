"""Resizing, letterboxing and box mapping between the original and the network image.

Boxes here are numpy float32 arrays or torch tensors (n, 4). ``xyxy`` = corners, ``xywh`` = centre and
size; "pixels" are absolute, "normalized" are fractions of the image width / height.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from yolov9k.ops.boxes import xywh2xyxy, xyxy2xywh

__all__ = [
    "letterbox",
    "resize_long_side",
    "scale_boxes",
    "clip_boxes",
    "xywhn2xyxy",
    "xyxy2xywhn",
]


def resize_long_side(
    img: np.ndarray, size: int, augment: bool = False, from_shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Resize so that the longer side is ``size`` pixels, keeping the aspect ratio.

    INTER_AREA when shrinking for evaluation, INTER_LINEAR otherwise (as the official loader). The new
    sides are ``int(side * r)`` with ``r = size / max(h, w)``, at least 1 pixel, computed from
    ``from_shape`` (h, w) when given: the original size of an image that was decoded at reduced scale,
    so that the result has the size a full decode would give.
    """
    h0, w0 = from_shape if from_shape is not None else img.shape[:2]
    r = size / max(h0, w0)
    new = (max(1, int(w0 * r)), max(1, int(h0 * r))) if r != 1 else (w0, h0)
    h, w = img.shape[:2]
    if (w, h) == new:
        return img
    interp = cv2.INTER_LINEAR if (augment or new[0] > w) else cv2.INTER_AREA
    return cv2.resize(img, new, interpolation=interp)


def letterbox(
    img: np.ndarray,
    new_shape: int | tuple[int, int] = 640,
    color: tuple[int, int, int] = (114, 114, 114),
    auto: bool = False,
    scaleup: bool = True,
    stride: int = 32,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Resize keeping the aspect ratio, then pad equally on both sides to ``new_shape``.

    Args:
        img: (H, W, C) image.
        new_shape: output (height, width) in pixels, or one int for a square.
        auto: pad only to the next multiple of ``stride`` (minimum rectangle) instead of ``new_shape``.
        scaleup: allow enlarging; False only shrinks (better mAP on validation).
    Returns:
        (image, (ratio_w, ratio_h), (dw, dh)): the gain applied (equal on both axes) and the padding
        added on the left (``dw``) and top (``dh``) sides in pixels: a pixel point (x, y) of the input
        maps to ``(x * ratio_w + dw, y * ratio_h + dh)``.
    """
    shape = img.shape[:2]
    if isinstance(new_shape, int):
        new_shape = (new_shape, new_shape)
    r = min(new_shape[0] / shape[0], new_shape[1] / shape[1])
    if not scaleup:
        r = min(r, 1.0)
    new_unpad = (round(shape[1] * r), round(shape[0] * r))  # (w, h)
    dw, dh = new_shape[1] - new_unpad[0], new_shape[0] - new_unpad[1]
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    if (shape[1], shape[0]) != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    return img, (r, r), (dw, dh)


def clip_boxes(boxes: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> np.ndarray | torch.Tensor:
    """Clip pixel xyxy boxes (n, >=4) in place to an image of ``shape`` (h, w); returns ``boxes``."""
    h, w = shape[:2]
    if isinstance(boxes, torch.Tensor):
        boxes[..., 0].clamp_(0, w)
        boxes[..., 1].clamp_(0, h)
        boxes[..., 2].clamp_(0, w)
        boxes[..., 3].clamp_(0, h)
    else:
        boxes[..., [0, 2]] = boxes[..., [0, 2]].clip(0, w)
        boxes[..., [1, 3]] = boxes[..., [1, 3]].clip(0, h)
    return boxes


def scale_boxes(
    img1_shape: tuple[int, int],
    boxes: np.ndarray | torch.Tensor,
    img0_shape: tuple[int, int],
    ratio_pad: tuple[tuple[float, float], tuple[float, float]] | None = None,
) -> np.ndarray | torch.Tensor:
    """Map pixel xyxy boxes from the network image back to the original image, in place, clipped.

    Args:
        img1_shape: (h, w) of the network input the boxes refer to.
        boxes: (n, >=4) xyxy pixels; columns beyond 4 are left alone.
        img0_shape: (h, w) of the original image.
        ratio_pad: ((ratio_h, ratio_w), (pad_w, pad_h)) as returned in a dataset sample's ``shapes``;
            None recomputes the centred letterbox of ``img0_shape`` into ``img1_shape``.
    Returns:
        ``boxes`` (modified in place).
    """
    if ratio_pad is None:
        gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
        # padding as ``letterbox`` made it (from the rounded resized size), so the mapping is exact
        pad = (
            (img1_shape[1] - round(img0_shape[1] * gain)) / 2,
            (img1_shape[0] - round(img0_shape[0] * gain)) / 2,
        )
        gain_h = gain_w = gain
    else:
        (gain_h, gain_w), pad = ratio_pad
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., [0, 2]] /= gain_w
    boxes[..., [1, 3]] /= gain_h
    return clip_boxes(boxes, img0_shape)


def xywhn2xyxy(x: np.ndarray, w: float, h: float, padw: float = 0.0, padh: float = 0.0) -> np.ndarray:
    """Normalized xywh (n, 4) -> pixel xyxy (n, 4) in an image of ``w`` x ``h`` shifted by the pads."""
    y = xywh2xyxy(np.asarray(x, dtype=np.float32))
    y[:, [0, 2]] = y[:, [0, 2]] * w + padw
    y[:, [1, 3]] = y[:, [1, 3]] * h + padh
    return y


def xyxy2xywhn(x: np.ndarray, w: float, h: float, clip: bool = False, eps: float = 0.0) -> np.ndarray:
    """Pixel xyxy (n, 4) -> normalized xywh (n, 4); ``clip`` first clips to (w - eps, h - eps)."""
    x = np.array(x, dtype=np.float32)
    if clip:
        clip_boxes(x, (h - eps, w - eps))
    y = xyxy2xywh(x)
    y[:, [0, 2]] /= w
    y[:, [1, 3]] /= h
    return y
