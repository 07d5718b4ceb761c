"""Our training / validation loader per batch, with and without its speed levers, side by side.

One thread, no DataLoader workers: a batch fetched and collated as the trainer's DataLoader does
(``__getitems__`` + ``collate_fn``) on a generated COCO-like JPEG folder (``loader_data.py``). Kinds:
``mosaic`` (training sample: mosaic, mixup 0.15, perspective, HSV, flips at the hyp.scratch-high
strengths of ``loader_bench.py``), ``letterbox`` (training after close_mosaic) and ``val``
(rectangular validation batches). Paths: ``levers`` (as shipped) and ``reference`` (the levers off: one
``__getitem__`` per sample, so mosaic partners come from the whole set and every tile is decoded, and
JPEGs decoded at full size). The peers (official, ultralytics) need their own Pythons:
``loader_bench.py`` measures them; ``RESULTS.md`` has both. Quick mode (``YOLOV9K_BENCH_QUICK=1``):
32 images of 160 px at imgsz 160, batches of 8.
"""

from __future__ import annotations

import pytest
from conftest import device_name, pick
from loader_bench import HYP, NC
from loader_data import make_coco_like

IMAGES, LONG_SIDE, IMGSZ, BATCH = pick((256, 640, 640, 16), (32, 160, 160, 8))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from yolov9k.data import scan_dataset

    images = make_coco_like(tmp_path_factory.mktemp("loader"), n=IMAGES, long_side=LONG_SIDE, unique=64)
    found, _ = scan_dataset(sorted(images.glob("*.jpg")), nc=NC, use_cache=False)
    assert len(found) == IMAGES
    return found


@pytest.fixture
def one_thread():
    import cv2
    import torch

    threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    yield
    torch.set_num_threads(threads)
    cv2.setNumThreads(cv_threads)


def _fetcher(samples, kind: str, path: str):
    """A callable that loads and collates the next batch (cycling through the epoch's batches)."""
    import numpy as np

    import yolov9k.data.dataset as dataset_mod
    from yolov9k.data import YoloDataset, collate_fn

    if kind == "val":
        ds = YoloDataset(samples, IMGSZ, augment=False, rect=True, batch_size=BATCH, pad=0.5)
        order = np.arange(len(ds))
    else:
        ds = YoloDataset(samples, IMGSZ, augment=True, hyp=HYP, seed=0)
        if kind == "letterbox":
            ds.close_mosaic()
        order = np.random.default_rng(0).permutation(len(ds))
    batches = [order[k : k + BATCH].tolist() for k in range(0, len(order) - BATCH + 1, BATCH)]
    read = dataset_mod.read_image
    full_decode = path == "reference"
    state = {"k": 0}

    def fetch():
        idx = batches[state["k"] % len(batches)]
        state["k"] += 1
        if full_decode:
            dataset_mod.read_image = lambda f, **kw: read(f, **{**kw, "reduce_to": None})
            try:
                return collate_fn([ds[i] for i in idx])
            finally:
                dataset_mod.read_image = read
        return collate_fn(ds.__getitems__(idx))

    return fetch


@pytest.mark.parametrize("path", ["levers", "reference"])
@pytest.mark.parametrize("kind", ["mosaic", "letterbox", "val"])
def test_loader_batch(benchmark, samples, one_thread, kind, path):
    fetch = _fetcher(samples, kind, path)
    imgs, targets, files, _ = fetch()
    assert imgs.shape[0] == BATCH and imgs.shape[1] == 3
    if kind == "val":  # a rectangle: stride multiples, up to imgsz + the 0.5-stride pad rounded up
        assert all(n % 32 == 0 for n in imgs.shape[2:]) and IMGSZ <= max(imgs.shape[2:]) <= IMGSZ + 32
    else:
        assert tuple(imgs.shape[2:]) == (IMGSZ, IMGSZ)
    assert imgs.is_contiguous() and len(files) == BATCH and targets.shape[1] == 6
    benchmark.group = f"loader batch of {BATCH}: {kind}, {LONG_SIDE} px JPEGs -> {IMGSZ}"
    benchmark.extra_info.update(device=device_name("cpu"), kind=kind, path=path, batch=BATCH)
    benchmark.pedantic(fetch, rounds=pick(12, 2), iterations=1, warmup_rounds=pick(2, 0))
