"""Training augmentations of the YOLOv9 recipe, on uint8 images and pixel-xyxy labels.

Images are uint8 (H, W, 3) in either channel order (the data set works in RGB; ``augment_hsv`` is
told which). Labels in this module are float32 (n, 5) ``[cls, x1, y1, x2, y2]`` in pixels of the
image they go with, except the flips, which work on normalized ``[cls, cx, cy, w, h]``. Every random
draw comes from the ``numpy.random.Generator`` passed in, so a sample is reproducible from its seed.

Order in the data set (as the official loader): mosaic (4 images on a 2s x 2s canvas) -> random
perspective cropping back to s x s -> mixup with a second mosaic -> HSV -> up-down / left-right flips.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from yolov9k.ops.hsv_jitter import gain_tables, hsv_jitter

__all__ = [
    "mosaic4",
    "random_perspective",
    "tile_rects",
    "content_rect",
    "perspective_matrix",
    "source_roi",
    "warp",
    "box_candidates",
    "mixup",
    "augment_hsv",
    "fliplr",
    "flipud",
]

PAD_VALUE = 114


def mosaic4(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    s: int,
    center: tuple[int, int],
    canvas: np.ndarray | None = None,
    roi: tuple[int, int, int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Tile four images around ``center`` on a (2s, 2s) canvas filled with 114.

    Args:
        images: four (h_i, w_i, 3) uint8 images (already resized so that max side = s).
        labels: four (n_i, 5) ``[cls, cx, cy, w, h]`` normalized to their image.
        s: target image size in pixels.
        center: (xc, yc) mosaic centre in canvas pixels; tiles go top-left, top-right, bottom-left,
            bottom-right of it and are cropped at the canvas edge.
        canvas: optional (2s, 2s, 3) uint8 buffer to draw on (reused between calls: a fresh 2s x 2s
            array costs more in page faults than the drawing itself).
        roi: (x1, y1, x2, y2): draw only this part of the canvas (what the warp that follows reads,
            ``source_roi``); the rest keeps whatever it held. Labels do not depend on it.
    Returns:
        (canvas (2s, 2s, 3) uint8, labels (n, 5) ``[cls, x1, y1, x2, y2]`` canvas pixels clipped to [0, 2s]).
    """
    shape = (2 * s, 2 * s, images[0].shape[2])
    if canvas is None or canvas.shape != shape or canvas.dtype != np.uint8:
        canvas = np.empty(shape, dtype=np.uint8)
    rx1, ry1, rx2, ry2 = roi if roi is not None else (0, 0, 2 * s, 2 * s)
    canvas[ry1:ry2, rx1:rx2] = PAD_VALUE
    out = []
    rects = tile_rects([im.shape[:2] for im in images], s, center)
    for img, lab, (x1a, y1a, x2a, y2a, padw, padh) in zip(images, labels, rects):
        h, w = img.shape[:2]
        cx1, cy1, cx2, cy2 = max(x1a, rx1), max(y1a, ry1), min(x2a, rx2), min(y2a, ry2)  # tile within roi
        if cx1 < cx2 and cy1 < cy2:
            canvas[cy1:cy2, cx1:cx2] = img[cy1 - padh : cy2 - padh, cx1 - padw : cx2 - padw]
        lab = np.asarray(lab, dtype=np.float32).reshape(-1, 5)
        px = np.empty_like(lab)
        px[:, 0] = lab[:, 0]
        px[:, 1] = (lab[:, 1] - lab[:, 3] / 2) * w + padw
        px[:, 2] = (lab[:, 2] - lab[:, 4] / 2) * h + padh
        px[:, 3] = (lab[:, 1] + lab[:, 3] / 2) * w + padw
        px[:, 4] = (lab[:, 2] + lab[:, 4] / 2) * h + padh
        out.append(px)
    merged = np.concatenate(out, 0)
    np.clip(merged[:, 1:], 0, 2 * s, out=merged[:, 1:])
    return canvas, merged


def tile_rects(
    shapes: Sequence[tuple[int, int]], s: int, center: tuple[int, int]
) -> list[tuple[int, int, int, int, int, int]]:
    """Where ``mosaic4`` puts four tiles of ``shapes`` (h, w): per tile its canvas rectangle
    (x1, y1, x2, y2) (cropped at the canvas edge) and the canvas offset (padw, padh) of its pixel (0, 0)."""
    xc, yc = center
    out = []
    for i, (h, w) in enumerate(shapes):
        if i == 0:  # top left: the tile's bottom-right corner sits at the centre
            x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
            x1b, y1b = w - (x2a - x1a), h - (y2a - y1a)
        elif i == 1:  # top right
            x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, 2 * s), yc
            x1b, y1b = 0, h - (y2a - y1a)
        elif i == 2:  # bottom left
            x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(2 * s, yc + h)
            x1b, y1b = w - (x2a - x1a), 0
        else:  # bottom right
            x1a, y1a, x2a, y2a = xc, yc, min(xc + w, 2 * s), min(2 * s, yc + h)
            x1b, y1b = 0, 0
        out.append((x1a, y1a, x2a, y2a, x1a - x1b, y1a - y1b))
    return out


def content_rect(
    m: np.ndarray, src_rect: tuple[int, int, int, int], out_shape: tuple[int, int], margin: int = 2
) -> tuple[int, int, int, int] | None:
    """The output rectangle (x1, y1, x2, y2) outside which warping with affine ``m`` gives only pad.

    ``src_rect``: the input rectangle holding everything that is not ``PAD_VALUE`` (a mosaic's tiles).
    Its corners, widened by ``margin`` input pixels (bilinear reads one pixel on, within the warp's
    fixed-point error), mapped forward; their bounding box, rounded out and clipped to ``out_shape``.
    Output pixels outside it read only pad pixels or the border, which the warp writes as exactly
    ``PAD_VALUE``. None (no bound) for a projective ``m``.
    """
    if m[2, 0] != 0 or m[2, 1] != 0 or m[2, 2] != 1 or not np.isfinite(m).all():
        return None
    (a, b, tx), (c, d, ty) = m[:2].tolist()
    x1, y1, x2, y2 = src_rect
    xs, ys = [], []
    for x, y in (
        (x1 - margin, y1 - margin),
        (x2 + margin, y1 - margin),
        (x1 - margin, y2 + margin),
        (x2 + margin, y2 + margin),
    ):
        xs.append(a * x + b * y + tx)
        ys.append(c * x + d * y + ty)
    h, w = out_shape
    ox1 = min(max(math.floor(min(xs)) - 1, 0), w)
    oy1 = min(max(math.floor(min(ys)) - 1, 0), h)
    ox2 = min(max(math.ceil(max(xs)) + 2, ox1), w)
    oy2 = min(max(math.ceil(max(ys)) + 2, oy1), h)
    return ox1, oy1, ox2, oy2


def box_candidates(
    box1: np.ndarray,
    box2: np.ndarray,
    wh_thr: float = 2,
    ar_thr: float = 100,
    area_thr: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """Which transformed boxes to keep.

    Args:
        box1: (4, n) xyxy pixels before the transform, already multiplied by the scale gain.
        box2: (4, n) xyxy pixels after the transform (and clipping).
    Returns:
        (n,) bool: width and height > ``wh_thr`` pixels, area kept > ``area_thr`` of the scaled
        original, aspect ratio < ``ar_thr``.
    """
    w1, h1 = box1[2] - box1[0], box1[3] - box1[1]
    w2, h2 = box2[2] - box2[0], box2[3] - box2[1]
    ar = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (w2 > wh_thr) & (h2 > wh_thr) & (w2 * h2 / (w1 * h1 + eps) > area_thr) & (ar < ar_thr)


def perspective_matrix(
    rng: np.random.Generator,
    shape: tuple[int, int],
    degrees: float = 10,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The random transform of ``random_perspective`` for an input of ``shape`` (h, w), drawn from ``rng``.

    Returns:
        (m (3, 3) float64 mapping input pixels to output pixels, the scale gain, output (h, w)).
    """
    height = shape[0] + border[0] * 2
    width = shape[1] + border[1] * 2

    centre = np.eye(3)  # move the image centre to the origin
    centre[0, 2] = -shape[1] / 2
    centre[1, 2] = -shape[0] / 2
    persp = np.eye(3)
    persp[2, 0] = rng.uniform(-perspective, perspective)
    persp[2, 1] = rng.uniform(-perspective, perspective)
    rot = np.eye(3)
    angle = rng.uniform(-degrees, degrees)
    gain = rng.uniform(1 - scale, 1 + scale)
    rot[:2] = cv2.getRotationMatrix2D(center=(0, 0), angle=angle, scale=gain)
    shr = np.eye(3)
    shr[0, 1] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    shr[1, 0] = math.tan(rng.uniform(-shear, shear) * math.pi / 180)
    trans = np.eye(3)  # centre of the output +- translate
    trans[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    trans[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height
    return trans @ shr @ rot @ persp @ centre, gain, (height, width)  # right to left


def source_roi(
    m: np.ndarray, out_shape: tuple[int, int], src_shape: tuple[int, int], margin: int = 2
) -> tuple[int, int, int, int] | None:
    """The part of the input that warping with ``m`` to ``out_shape`` (h, w) reads, as (x1, y1, x2, y2).

    The output rectangle's corners mapped back through the inverse affine, their bounding box widened
    by ``margin`` pixels (bilinear reads the pixel after the sample point; the warp's fixed-point
    coordinates are within 1/32 px), clipped to ``src_shape`` (h, w): input pixels outside it are never
    read. None (read everything) for a projective ``m`` or one that cannot be inverted.
    """
    if m[2, 0] != 0 or m[2, 1] != 0 or m[2, 2] != 1 or not np.isfinite(m).all():
        return None
    (a, b, tx), (c, d, ty) = m[:2].tolist()  # plain floats: numpy calls cost more than this arithmetic
    det = a * d - b * c
    if abs(det) < 1e-12:
        return None
    h, w = out_shape
    xs, ys = [], []
    for x, y in ((0, 0), (w - 1, 0), (0, h - 1), (w - 1, h - 1)):  # inverse affine of the corners
        x, y = x - tx, y - ty
        xs.append((d * x - b * y) / det)
        ys.append((a * y - c * x) / det)
    x1 = min(max(math.floor(min(xs)) - margin, 0), src_shape[1])
    y1 = min(max(math.floor(min(ys)) - margin, 0), src_shape[0])
    x2 = min(max(math.ceil(max(xs)) + 1 + margin, x1), src_shape[1])
    y2 = min(max(math.ceil(max(ys)) + 1 + margin, y1), src_shape[0])
    return x1, y1, x2, y2


def warp(
    img: np.ndarray,
    labels: np.ndarray,
    m: np.ndarray,
    gain: float,
    out_shape: tuple[int, int],
    projective: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a ``perspective_matrix`` to an image and its pixel-xyxy labels (see ``random_perspective``)."""
    height, width = out_shape
    if img.shape[0] != height or img.shape[1] != width or (m != np.eye(3)).any():
        fill = (PAD_VALUE,) * 3
        if projective:
            img = cv2.warpPerspective(img, m, dsize=(width, height), borderValue=fill)
        else:
            img = cv2.warpAffine(img, m[:2], dsize=(width, height), borderValue=fill)

    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
    n = len(labels)
    if n:
        corners = np.ones((n * 4, 3))
        corners[:, :2] = labels[:, [1, 2, 3, 4, 1, 4, 3, 2]].reshape(n * 4, 2)  # 4 corners per box
        corners = corners @ m.T
        xy = corners[:, :2] / corners[:, 2:3] if projective else corners[:, :2]
        xy = xy.reshape(n, 8)
        x, y = xy[:, [0, 2, 4, 6]], xy[:, [1, 3, 5, 7]]
        new = np.stack((x.min(1), y.min(1), x.max(1), y.max(1)), 1)
        new[:, [0, 2]] = new[:, [0, 2]].clip(0, width)
        new[:, [1, 3]] = new[:, [1, 3]].clip(0, height)
        keep = box_candidates(box1=labels[:, 1:5].T * gain, box2=new.T, area_thr=0.10)
        labels = labels[keep]
        labels[:, 1:5] = new[keep]
    return img, labels.astype(np.float32)


def random_perspective(
    img: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    degrees: float = 10,
    translate: float = 0.1,
    scale: float = 0.1,
    shear: float = 10,
    perspective: float = 0.0,
    border: tuple[int, int] = (0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """Random rotation, scale, shear, translation and perspective about the image centre.

    Args:
        img: (H, W, 3) uint8.
        labels: (n, 5) ``[cls, x1, y1, x2, y2]`` pixels of ``img``.
        degrees, translate, scale, shear, perspective: ranges as in the hyp (degrees, fractions).
        border: (top/bottom, left/right) pixels added to each side of the output; a mosaic uses
            (-s/2, -s/2) to crop the 2s canvas to s.
    Returns:
        (image (H + 2*border[0], W + 2*border[1], 3) uint8, labels (m, 5) transformed, clipped to the
        output and filtered by ``box_candidates``).
    """
    m, gain, out_shape = perspective_matrix(
        rng, img.shape[:2], degrees, translate, scale, shear, perspective, border
    )
    return warp(img, labels, m, gain, out_shape, projective=bool(perspective))


def mixup(
    img: np.ndarray,
    labels: np.ndarray,
    img2: np.ndarray,
    labels2: np.ndarray,
    rng: np.random.Generator,
    rows: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend two same-size uint8 images with ratio r ~ Beta(32, 32), keeping both label sets (Zhang 2017).

    Pixels are ``uint8(img * r + img2 * (1 - r))`` computed in float64 (truncated, as the official
    code), ``rows`` rows at a time into ``img`` (in place): the same values without the ~10 MB float64
    temporaries of the whole-image expression, about 4x faster.
    """
    r = rng.beta(32.0, 32.0)
    s = 1 - r
    buf = np.empty((2, min(rows, img.shape[0]), *img.shape[1:]), dtype=np.float64)
    for y in range(0, img.shape[0], rows):
        a, b = buf[0, : min(rows, img.shape[0] - y)], buf[1, : min(rows, img.shape[0] - y)]
        np.multiply(img[y : y + rows], r, out=a)
        np.multiply(img2[y : y + rows], s, out=b)
        np.add(a, b, out=a)
        img[y : y + rows] = a  # float64 -> uint8 truncates (values are within [0, 255])
    return img, np.concatenate((labels, labels2), 0)


def augment_hsv(
    img: np.ndarray,
    rng: np.random.Generator,
    hgain: float = 0.5,
    sgain: float = 0.5,
    vgain: float = 0.5,
    rgb: bool = False,
    content: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Random hue / saturation / value gains in [1 - g, 1 + g], applied in place to a uint8 image.

    The conversion is ``yolov9k.ops.hsv_jitter``: OpenCV's RGB <-> HSV arithmetic (its vector path)
    for every pixel, by the C++ kernel where it matches the local OpenCV.
    ``rgb``: the image is RGB (else BGR); the HSV values and the result are the same either way.
    ``content``: (x1, y1, x2, y2): every pixel outside it is ``PAD_VALUE`` gray (``content_rect``): the
    rows above and below it are copies of one converted pad row, the same result for less work.
    """
    if not (hgain or sgain or vgain):
        return img
    tables = gain_tables(rng.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1)
    h, w = img.shape[:2]
    if content is None or (content[1], content[3]) == (0, h):
        return _hsv_tables(img, tables, rgb)
    # whole rows: a contiguous block for the kernel (the conversion itself is per pixel)
    _, y1, _, y2 = content
    gray = _hsv_tables(np.full((1, w, 3), PAD_VALUE, np.uint8), tables, rgb)  # a converted pad row
    img[:y1] = gray
    img[y2:] = gray
    if y1 < y2:
        _hsv_tables(img[y1:y2], tables, rgb)
    return img


def _hsv_tables(img: np.ndarray, tables: np.ndarray, rgb: bool) -> np.ndarray:
    """``img`` -> HSV, ``tables`` (3, 256) one per channel, -> back, in place (``ops.hsv_jitter``)."""
    work = img if img.flags.c_contiguous else np.ascontiguousarray(img)
    hsv_jitter(torch.from_numpy(work), torch.from_numpy(tables), 2 if rgb else 0)
    if work is not img:
        img[...] = work
    return img


def fliplr(img: np.ndarray, labels: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; labels (n, 5) normalized ``[cls, cx, cy, w, h]`` get ``cx -> 1 - cx``.

    ``inplace`` mirrors ``img`` itself (a contiguous image); labels are always copied.
    """
    labels = labels.copy()
    labels[:, 1] = 1 - labels[:, 1]
    return cv2.flip(img, 1, dst=img if inplace else None), labels


def flipud(img: np.ndarray, labels: np.ndarray, inplace: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mirror up-down; labels (n, 5) normalized ``[cls, cx, cy, w, h]`` get ``cy -> 1 - cy``."""
    labels = labels.copy()
    labels[:, 2] = 1 - labels[:, 2]
    return cv2.flip(img, 0, dst=img if inplace else None), labels
