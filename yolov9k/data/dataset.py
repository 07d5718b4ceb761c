"""``YoloDataset``: verified samples -> network-ready (image, targets) pairs, with the YOLOv9 augmentations.

Randomness: sample ``i`` in epoch ``e`` draws everything from ``numpy.random.default_rng([seed, e, i])``,
so an augmented sample does not depend on worker count, worker order or earlier samples, and a resumed
run sees the same data. The epoch and the mosaic switch live in a shared-memory tensor, so
``set_epoch`` and ``close_mosaic`` reach persistent DataLoader workers too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from yolov9k.data.augment import augment_hsv, fliplr, flipud, mixup, mosaic4, random_perspective
from yolov9k.data.geometry import letterbox, resize_long_side, xywhn2xyxy, xyxy2xywhn
from yolov9k.data.hyp import resolve_hyp
from yolov9k.data.images import read_image
from yolov9k.data.labels import Sample

__all__ = ["YoloDataset", "collate_fn"]

# ((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h))), or None for a mosaic
Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]] | None


def collate_fn(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, Shapes]],
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[Shapes, ...]]:
    """Stack a list of samples.

    Returns:
        (imgs uint8 (B, 3, H, W) RGB, targets float32 (N, 6) ``[img_index, cls, cx, cy, w, h]``
        normalized, files, shapes).
    """
    imgs, labels, files, shapes = zip(*batch)
    targets = []
    for i, lb in enumerate(labels):
        lb = lb.clone()
        lb[:, 0] = i
        targets.append(lb)
    return torch.stack(imgs, 0), torch.cat(targets, 0), files, shapes


class YoloDataset(Dataset):
    """Detection samples for training and validation.

    Args:
        samples: verified samples (``scan_dataset`` / ``load_coco_json``).
        imgsz: output size s in pixels (square s x s, or the batch's rectangle with ``rect``).
        augment: training augmentations (mosaic, mixup, perspective, HSV, flips per ``hyp``).
        hyp: hyperparameters; missing keys default to ``HYP_SCRATCH_HIGH``.
        rect: rectangular batches (samples reordered by aspect ratio; use with an unshuffled loader).
            Disables mosaic.
        batch_size: batch size the rectangles are computed for (``rect`` only).
        stride: rectangles are multiples of this.
        pad: extra stride fraction added to each rectangle side (0.5 for validation, as official).
        seed: augmentation seed.

    ``__getitem__(i)`` returns ``(img, labels, im_file, shapes)``:
        img: uint8 (3, H, W) RGB contiguous.
        labels: float32 (n, 6) ``[0, cls, cx, cy, w, h]`` normalized to ``img`` (column 0 is filled
            with the batch index by ``collate_fn``).
        shapes: ``((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h)))``: original size, the total gain and
            the left/top padding from original pixels to ``img`` pixels (for ``scale_boxes``); None
            for a mosaic, which has no single original.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        imgsz: int = 640,
        augment: bool = False,
        hyp: Mapping[str, Any] | None = None,
        rect: bool = False,
        batch_size: int = 16,
        stride: int = 32,
        pad: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not samples:
            raise ValueError("YoloDataset needs at least one sample")
        self.samples = list(samples)
        self.imgsz = int(imgsz)
        self.augment = augment
        self.hyp = resolve_hyp(hyp, strict=False)
        self.rect = rect
        self.stride = stride
        self.seed = int(seed)
        self.mosaic_border = (-self.imgsz // 2, -self.imgsz // 2)
        self._state = torch.zeros(2, dtype=torch.int64).share_memory_()  # [mosaic on, epoch]
        self._state[0] = int(augment and not rect)
        self.batch_shapes: np.ndarray | None = None
        self.batch_index: np.ndarray | None = None
        if rect:
            self._init_rect(batch_size, stride, pad)

    # ---- state shared with workers ----------------------------------------------------------------------
    @property
    def mosaic(self) -> bool:
        """Whether mosaic is on (augment and not rect, until ``close_mosaic``)."""
        return bool(self._state[0])

    def close_mosaic(self) -> None:
        """Turn mosaic (and with it mixup) off, e.g. for the last ``close_mosaic`` epochs."""
        self._state[0] = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random augmentations ``__getitem__`` draws."""
        self._state[1] = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self._state[1])

    # ---- convenience views ------------------------------------------------------------------------------
    @property
    def im_files(self) -> list[str]:
        return [s.im_file for s in self.samples]

    @property
    def labels(self) -> list[np.ndarray]:
        """Per image float32 (n, 5) ``[cls, cx, cy, w, h]`` normalized (original labels)."""
        return [s.labels for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    # ---- loading ----------------------------------------------------------------------------------------
    def _init_rect(self, batch_size: int, stride: int, pad: float) -> None:
        """Sort samples by aspect ratio h/w and give each batch the smallest stride-multiple rectangle."""
        hw = np.array([s.shape for s in self.samples], dtype=np.float64)
        ar = hw[:, 0] / hw[:, 1]
        order = ar.argsort(kind="stable")
        self.samples = [self.samples[i] for i in order]
        ar = ar[order]
        bi = np.arange(len(ar)) // batch_size
        shapes = np.ones((bi[-1] + 1, 2))  # (h, w) as fractions of imgsz
        for b in range(len(shapes)):
            ari = ar[bi == b]
            if ari.max() < 1:
                shapes[b] = [ari.max(), 1]
            elif ari.min() > 1:
                shapes[b] = [1, 1 / ari.min()]
        self.batch_shapes = (np.ceil(shapes * self.imgsz / stride + pad).astype(int) * stride).astype(int)
        self.batch_index = bi

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """BGR image resized so its long side is ``imgsz``, and its original (h0, w0)."""
        img = read_image(self.samples[index].im_file)
        return resize_long_side(img, self.imgsz, self.augment), img.shape[:2]

    def load_mosaic(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mosaic of ``index`` and 3 random samples, randomly transformed to (s, s); pixel-xyxy labels."""
        s = self.imgsz
        xc, yc = (int(rng.uniform(-b, 2 * s + b)) for b in self.mosaic_border)
        indices = [index, *rng.integers(0, len(self), 3).tolist()]
        rng.shuffle(indices)
        images = [self.load_image(i)[0] for i in indices]
        img, labels = mosaic4(images, [self.samples[i].labels for i in indices], s, (xc, yc))
        return self._perspective(img, labels, rng, self.mosaic_border)

    def _perspective(
        self, img: np.ndarray, labels: np.ndarray, rng: np.random.Generator, border: tuple[int, int] = (0, 0)
    ) -> tuple[np.ndarray, np.ndarray]:
        h = self.hyp
        return random_perspective(
            img,
            labels,
            rng,
            degrees=h["degrees"],
            translate=h["translate"],
            scale=h["scale"],
            shear=h["shear"],
            perspective=h["perspective"],
            border=border,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str, Shapes]:
        index = int(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        hyp = self.hyp
        shapes: Shapes = None
        if self.mosaic and rng.random() < hyp["mosaic"]:
            img, labels = self.load_mosaic(index, rng)
            if rng.random() < hyp["mixup"]:
                img2, labels2 = self.load_mosaic(int(rng.integers(0, len(self))), rng)
                img, labels = mixup(img, labels, img2, labels2, rng)
        else:
            img, (h0, w0) = self.load_image(index)
            h, w = img.shape[:2]
            shape = self.batch_shapes[self.batch_index[index]] if self.rect else self.imgsz
            img, ratio, pad = letterbox(img, shape, auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h / h0 * ratio[1], w / w0 * ratio[0]), pad))
            labels = self.samples[index].labels.copy()
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, pad[0], pad[1])
            if self.augment:
                img, labels = self._perspective(img, labels, rng)

        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        if len(labels):
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            augment_hsv(img, rng, hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"])
            if rng.random() < hyp["flipud"]:
                img, labels = flipud(img, labels)
            if rng.random() < hyp["fliplr"]:
                img, labels = fliplr(img, labels)

        out = torch.zeros((len(labels), 6), dtype=torch.float32)
        out[:, 1:] = torch.from_numpy(labels)
        chw = np.ascontiguousarray(img.transpose(2, 0, 1)[::-1])  # HWC BGR -> CHW RGB
        return torch.from_numpy(chw), out, self.samples[index].im_file, shapes

    collate_fn = staticmethod(collate_fn)
