"""``YoloDataset``: verified samples -> network-ready (image, targets) pairs, with the YOLOv9 augmentations.

Randomness: sample ``i`` in epoch ``e`` draws everything from ``numpy.random.default_rng([seed, e, i])``,
so an augmented sample does not depend on worker count, worker order or earlier samples, and a resumed
run sees the same data. The epoch and the mosaic switch live in a shared-memory tensor, so
``set_epoch`` and ``close_mosaic`` reach persistent DataLoader workers too.

Mosaic partners (a sampling change, for speed): the DataLoader fetches a whole batch at once through
``__getitems__``, and the three other tiles of a mosaic (and the mixup partner's four) are drawn
uniformly from that batch instead of from the whole data set; each image of the batch is decoded
once and reused for every tile it appears in. Marginally every tile is still a uniform draw from the
data set (the batch is); what changes is that an image tends to appear in ~4 mosaics of its batch
instead of ~4 mosaics spread over the epoch. The official loader decodes 4.6 images per sample
(4 tiles + 15 % of a 4-tile mixup), ultralytics draws the other tiles from a buffer of the last
batch x 8 images decoded by its worker (which depends on the workers); this keeps ~1 decode per
sample and keeps the contract: same seed, epoch, index and batch -> same sample, whatever the
workers (the batches are a function of the seed, the epoch and the batch size). Batches smaller than
``MIN_POOL`` and a single ``dataset[i]`` draw partners from the whole data set as before.

Reduced decoding (the second named change, training only): a JPEG at least twice ``imgsz`` on its long
side is decoded by libjpeg at 1/2, 1/4 or 1/8 scale and then resized to the same size as before, so
its pixels differ slightly from a full decode + resize (the sizes and labels do not). Validation
samples, smaller images, the other formats and every other step give the same pixels as before
(``tests/test_data_levers.py``).

HSV jitter per pixel (the third named change, ``yolov9k.ops.hsv_jitter``): every pixel gets OpenCV's
vector arithmetic, by a C++ kernel where it matches the local OpenCV. OpenCV itself rounds the last
pixels of each row that do not fill a vector (its scalar code) where its vectors truncate, so for
images whose width is not a multiple of 64 pixels those columns can differ by 1 from converting the
image with OpenCV (which columns depends on the machine's vector width); square training images at
imgsz 640 (any multiple of 64) get exactly OpenCV's pixels (``tests/test_hsv_jitter.py``).

Exact levers (no pixel or label change, tested against the plain path): a mosaic's canvas is drawn
only where the warp reads it (``source_roi``; the transform is drawn first, in the same RNG order),
and the HSV jitter converts only the rows of a warped mosaic that are not all pad (``content_rect``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from yolov9k.data.augment import (
    augment_hsv,
    content_rect,
    fliplr,
    flipud,
    mixup,
    mosaic4,
    perspective_matrix,
    random_perspective,
    source_roi,
    tile_rects,
    warp,
)
from yolov9k.data.geometry import letterbox, resize_long_side, xywhn2xyxy, xyxy2xywhn
from yolov9k.data.hyp import resolve_hyp
from yolov9k.data.image_cache import (
    CACHE_MODES,
    RAM_FRACTION,
    DiskCache,
    available_memory,
    cache_bytes,
    gib,
)
from yolov9k.data.images import read_image
from yolov9k.data.labels import Sample
from yolov9k.errors import OptionError

__all__ = ["YoloDataset", "collate_fn", "MIN_POOL"]

LOGGER = logging.getLogger("yolov9k.data")
MIN_POOL = 8  # a batch needs at least this many samples to be the pool of mosaic partners

# ((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h))), or None for a mosaic
Shapes = tuple[tuple[int, int], tuple[tuple[float, float], tuple[float, float]]] | None


def collate_fn(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor, str, Shapes]],
) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple[Shapes, ...]]:
    """Stack a list of samples.

    Images that are channel-first views of contiguous HWC arrays (what ``YoloDataset`` returns) are
    de-interleaved straight into the batch tensor: one copy from the augmented image to the batch.

    Returns:
        (imgs uint8 (B, 3, H, W) RGB contiguous, targets float32 (N, 6) ``[img_index, cls, cx, cy, w, h]``
        normalized, files, shapes).
    """
    imgs, labels, files, shapes = zip(*batch)
    targets = []
    for i, lb in enumerate(labels):
        lb = lb.clone()
        lb[:, 0] = i
        targets.append(lb)
    return _stack_chw(imgs), torch.cat(targets, 0), files, shapes


def _stack_chw(imgs: Sequence[torch.Tensor]) -> torch.Tensor:
    """(B, C, H, W) contiguous from same-shape (C, H, W) tensors."""
    first = imgs[0]
    hwc_views = all(
        im.dtype == torch.uint8 and im.shape == first.shape and im.permute(1, 2, 0).is_contiguous()
        for im in imgs
    )
    if not hwc_views or first.shape[0] not in (1, 3, 4):
        return torch.stack(imgs, 0)
    out = torch.empty((len(imgs), *first.shape), dtype=torch.uint8)
    dst = out.numpy()
    for i, im in enumerate(imgs):
        cv2.split(im.permute(1, 2, 0).numpy(), list(dst[i]))  # SIMD de-interleave into the planes
    return out


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
        cache: "ram" | "disk" | "false" (or True = "ram", False): keep the decoded, resized images
            (see ``yolov9k.data.image_cache``); filled here, before any DataLoader worker starts.
        cache_dir: folder for the disk cache when the one beside the labels is not writable.

    ``__getitem__(i)`` returns ``(img, labels, im_file, shapes)``:
        img: uint8 (3, H, W) RGB, a channel-first view of a contiguous (H, W, 3) array (``collate_fn``
            copies it once into the batch; ``.contiguous()`` for a standalone CHW tensor).
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
        cache: str | bool = False,
        cache_dir: str | Path | None = None,
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
        self._ram: list[np.ndarray | None] | None = None
        self._disk: DiskCache | None = None
        self._memo: dict[int, tuple[np.ndarray, tuple[int, int]]] | None = None  # images of one batch
        self._canvas: np.ndarray | None = None  # the mosaic canvas, reused
        self.cache_dir = cache_dir
        mode = str(cache) if isinstance(cache, str) else ("ram" if cache else "false")
        if mode not in CACHE_MODES:
            raise OptionError("cache", cache, f"expected one of {', '.join(CACHE_MODES)}")
        self.cache = "false"
        if mode != "false":
            self.cache_images(mode)

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

    # ---- images: decoded once per batch, or from the cache ------------------------------------------------
    def _decode(self, index: int) -> np.ndarray:
        """RGB image of sample ``index`` resized so its long side is ``imgsz`` (from the file)."""
        reduce_to = self.imgsz if self.augment else None  # validation pixels stay those of a full decode
        img = read_image(self.samples[index].im_file, rgb=True, reduce_to=reduce_to)
        return resize_long_side(img, self.imgsz, self.augment, from_shape=self.samples[index].shape)

    def load_image(self, index: int) -> tuple[np.ndarray, tuple[int, int]]:
        """RGB image resized so its long side is ``imgsz``, and its original (h0, w0).

        The array may be shared (cache, the batch's images): callers must not modify it.
        """
        if self._memo is not None and index in self._memo:
            return self._memo[index]
        if self._ram is not None and self._ram[index] is not None:
            img = self._ram[index]
        elif self._disk is not None:
            img = self._disk.load(self.samples[index], lambda: self._decode(index))
        else:
            img = self._decode(index)
        out = img, self.samples[index].shape
        if self._memo is not None:
            self._memo[index] = out
        return out

    def cache_images(self, mode: str = "ram") -> None:
        """Fill the image cache (``mode`` "ram" or "disk"); see ``yolov9k.data.image_cache``.

        Raises:
            ConfigError: one line, when the disk cache would not fit in its folder's free space.
        """
        need, n = cache_bytes(self.samples, self.imgsz), len(self.samples)
        if mode == "ram":
            avail = available_memory()
            if avail is not None and need > RAM_FRACTION * avail:
                LOGGER.warning(
                    "cache=ram needs %s for %d images, %s of memory is available (%d %% usable): "
                    "using cache=disk instead", gib(need), n, gib(avail), round(100 * RAM_FRACTION),
                )  # fmt: skip
                mode = "disk"
        interp = "linear" if self.augment else "area"
        if mode == "disk":
            disk = DiskCache(self.samples, self.imgsz, interp, self.cache_dir)
            disk.check_space(need)
            self._disk = disk
        with ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
            if mode == "ram":
                self._ram = list(pool.map(self._decode, range(n)))
            else:
                list(pool.map(lambda i: self._disk.load(self.samples[i], lambda: self._decode(i)), range(n)))
        self.cache = mode
        LOGGER.info("cached %d images (%s, %s)", n, gib(need), mode)

    def load_mosaic(
        self, index: int, rng: np.random.Generator, pool: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mosaic of ``index`` and 3 random samples (from ``pool``, else the data set), randomly
        transformed to (s, s); pixel-xyxy labels."""
        return self._mosaic(index, rng, pool)[:2]

    def _mosaic(
        self, index: int, rng: np.random.Generator, pool: Sequence[int] | None
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int] | None]:
        """``load_mosaic``, and the output rectangle outside which every pixel is pad (``content_rect``).

        The transform is drawn before the tiles are placed (the draws are in the same order as
        ``random_perspective``'s: placing the tiles draws nothing), so that only the part of the canvas
        the warp reads (``source_roi``) is drawn: the same pixels, ~half the canvas work on average.
        """
        s = self.imgsz
        xc, yc = (int(rng.uniform(-b, 2 * s + b)) for b in self.mosaic_border)
        indices = [index, *self._draw(rng, 3, pool)]
        rng.shuffle(indices)
        h = self.hyp
        m, gain, out_shape = perspective_matrix(
            rng, (2 * s, 2 * s), h["degrees"], h["translate"], h["scale"], h["shear"], h["perspective"],
            self.mosaic_border,
        )  # fmt: skip
        projective = bool(h["perspective"])
        roi = None if projective else source_roi(m, out_shape, (2 * s, 2 * s))
        images = [self.load_image(i)[0] for i in indices]
        if self._canvas is None:
            self._canvas = np.empty((2 * s, 2 * s, 3), np.uint8)
        labels = [self.samples[i].labels for i in indices]
        img, labels = mosaic4(images, labels, s, (xc, yc), self._canvas, roi)
        rects = tile_rects([im.shape[:2] for im in images], s, (xc, yc))
        tiles = (
            min(r[0] for r in rects),
            min(r[1] for r in rects),
            max(r[2] for r in rects),
            max(r[3] for r in rects),
        )
        content = None if projective else content_rect(m, tiles, out_shape)
        return (*warp(img, labels, m, gain, out_shape, projective), content)

    def _draw(self, rng: np.random.Generator, k: int, pool: Sequence[int] | None) -> list[int]:
        """``k`` uniform draws from ``pool`` (a batch), or from the data set without one."""
        if pool is None:
            return rng.integers(0, len(self), k).tolist()
        return [pool[j] for j in rng.integers(0, len(pool), k).tolist()]

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
        return self._item(int(index), None)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor, str, Shapes]]:
        """The samples of one batch (the DataLoader's batched fetch); the batch is the mosaic pool."""
        batch = [int(i) for i in indices]
        pool = batch if len(batch) >= MIN_POOL else None
        self._memo = {}
        try:
            return [self._item(i, pool) for i in batch]
        finally:
            self._memo = None

    def _item(self, index: int, pool: Sequence[int] | None) -> tuple[torch.Tensor, torch.Tensor, str, Shapes]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        hyp = self.hyp
        shapes: Shapes = None
        content = None  # where the image is not all pad (mosaics without mixup only)
        if self.mosaic and rng.random() < hyp["mosaic"]:
            img, labels, content = self._mosaic(index, rng, pool)
            if rng.random() < hyp["mixup"]:
                img2, labels2 = self.load_mosaic(self._draw(rng, 1, pool)[0], rng, pool)
                img, labels = mixup(img, labels, img2, labels2, rng)
                content = None
        else:
            src, (h0, w0) = self.load_image(index)
            h, w = src.shape[:2]
            shape = self.batch_shapes[self.batch_index[index]] if self.rect else self.imgsz
            img, ratio, pad = letterbox(src, shape, auto=False, scaleup=self.augment)
            shapes = ((h0, w0), ((h / h0 * ratio[1], w / w0 * ratio[0]), pad))
            labels = self.samples[index].labels.copy()
            if len(labels):
                labels[:, 1:] = xywhn2xyxy(labels[:, 1:], ratio[0] * w, ratio[1] * h, pad[0], pad[1])
            if self.augment:
                img, labels = self._perspective(img, labels, rng)
            if np.shares_memory(img, src):  # the cached / shared image must stay as it is
                img = img.copy()

        labels = np.asarray(labels, dtype=np.float32).reshape(-1, 5)
        if len(labels):
            labels[:, 1:5] = xyxy2xywhn(labels[:, 1:5], w=img.shape[1], h=img.shape[0], clip=True, eps=1e-3)
        if self.augment:
            gains = hyp["hsv_h"], hyp["hsv_s"], hyp["hsv_v"]
            augment_hsv(img, rng, *gains, rgb=True, content=content)
            if rng.random() < hyp["flipud"]:
                img, labels = flipud(img, labels, inplace=True)
            if rng.random() < hyp["fliplr"]:
                img, labels = fliplr(img, labels, inplace=True)

        out = torch.zeros((len(labels), 6), dtype=torch.float32)
        out[:, 1:] = torch.from_numpy(labels)
        img = np.ascontiguousarray(img)  # (a no-op: every path above yields a contiguous image)
        return torch.from_numpy(img).permute(2, 0, 1), out, self.samples[index].im_file, shapes

    collate_fn = staticmethod(collate_fn)
