"""Drawing detections on BGR images with OpenCV: a box and a filled label per detection.

Label text goes through :func:`yolov9k.io.opencv.cv2_text` (OpenCV's fonts draw ASCII only, and a
class name with a lone surrogate would crash ``cv2.putText``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from yolov9k.io.opencv import cv2_text

__all__ = ["class_color", "class_name", "draw_detections"]

# Twenty well-separated BGR colours; class i gets colour i mod 20.
_PALETTE_BGR: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
    (23, 204, 146),
    (134, 219, 61),
    (52, 147, 26),
    (187, 212, 0),
    (168, 153, 44),
    (255, 194, 0),
    (147, 69, 52),
    (255, 115, 100),
    (236, 24, 0),
    (255, 56, 132),
    (133, 0, 82),
    (255, 56, 203),
    (200, 149, 255),
    (199, 55, 255),
)


def class_color(cls: int) -> tuple[int, int, int]:
    """BGR colour of a class index."""
    return _PALETTE_BGR[int(cls) % len(_PALETTE_BGR)]


def class_name(names: Mapping[int, str] | Sequence[str] | None, cls: int) -> str:
    """``names[cls]``, or the id as text when ``names`` has no entry for it."""
    if isinstance(names, Mapping):
        return str(names.get(cls, cls))
    if names is not None and 0 <= cls < len(names):
        return str(names[cls])
    return str(cls)


def _text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``bg`` (BGR)."""
    b, g, r = bg
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def draw_detections(
    img: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    names: Mapping[int, str] | Sequence[str] | None = None,
    line_width: int | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """Draw boxes and "name score" labels on a copy of ``img`` (on ``img`` itself with ``inplace``).

    Args:
        img: (H, W, 3) uint8 BGR image (not modified).
        boxes: (n, 4) xyxy pixels in ``img``. scores: (n,). classes: (n,) integer class ids.
        names: class id -> label text (default: the id).
        line_width: box line width in pixels (default: scaled with the image size).
        inplace: draw on ``img`` (C-contiguous) instead of a copy.
    Returns:
        The annotated (H, W, 3) uint8 image.
    """
    out = img if inplace and img.flags.c_contiguous else np.ascontiguousarray(img.copy())
    h, w = out.shape[:2]
    lw = line_width or max(round((h + w) / 2 * 0.003), 1)
    font_scale = max(lw / 3, 0.35)
    thickness = max(lw - 1, 1)
    for box, score, cls in zip(np.asarray(boxes, dtype=np.float64), np.asarray(scores), np.asarray(classes)):
        if not np.isfinite(box).all():
            continue
        cls = int(cls)
        color = class_color(cls)
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness=lw, lineType=cv2.LINE_AA)
        label = cv2_text(f"{class_name(names, cls)} {float(score):.2f}")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        above = y1 - th - base - 2 >= 0  # label above the box when it fits, else inside it
        top = y1 - th - base - 2 if above else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + base + 2), color, -1, cv2.LINE_AA)
        cv2.putText(
            out,
            label,
            (x1 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            _text_color(color),
            thickness,
            cv2.LINE_AA,
        )
    return out
