"""DataLoader: reproducible batches with workers, epoch handling, close_mosaic reaching persistent workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov9k.data import YoloDataset, build_dataloader
from yolov9k.data.labels import Sample


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> list[Sample]:
    import cv2

    d = tmp_path_factory.mktemp("loader") / "images"
    d.mkdir()
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        f = d / f"{i}.png"
        cv2.imwrite(str(f), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        out.append(Sample(str(f), (48, 64), np.array([[i % 2, 0.5, 0.5, 0.5, 0.5]], np.float32)))
    return out


def _epoch(loader) -> list[tuple[torch.Tensor, torch.Tensor, tuple]]:
    return [(imgs, targets, files) for imgs, targets, files, _ in loader]


def _same(a, b) -> bool:
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and x[2] == y[2] for x, y in zip(a, b))


def test_two_workers_reproducible(samples):
    runs = []
    for _ in range(2):
        ds = YoloDataset(samples, imgsz=64, augment=True, seed=1)
        loader = build_dataloader(ds, batch_size=3, workers=2, shuffle=True, seed=7)
        assert loader.num_workers == 2
        runs.append((_epoch(loader), _epoch(loader)))
    (a0, a1), (b0, b1) = runs
    assert len(a0) == 3 and a0[0][0].shape == (3, 3, 64, 64)
    assert _same(a0, b0) and _same(a1, b1)
    assert not _same(a0, a1)  # a new epoch: new order and augmentations
    assert sorted(f for batch in a0 for f in batch[2]) == sorted(s.im_file for s in samples)


def test_workers_do_not_change_the_data(samples):
    ds = YoloDataset(samples, imgsz=64, augment=True, seed=3)
    with_workers = _epoch(build_dataloader(ds, batch_size=4, workers=2, seed=0, persistent_workers=False))
    ds2 = YoloDataset(samples, imgsz=64, augment=True, seed=3)
    in_process = _epoch(build_dataloader(ds2, batch_size=4, workers=0, seed=0))
    assert _same(with_workers, in_process)


def test_set_epoch_and_close_mosaic_reach_persistent_workers(samples):
    ds = YoloDataset(samples, imgsz=64, augment=True, seed=0)
    loader = build_dataloader(ds, batch_size=4, workers=2, seed=0)
    assert loader.persistent_workers
    first = _epoch(loader)
    loader.set_epoch(0)
    assert _same(first, _epoch(loader))  # resuming epoch 0 replays it
    ds.close_mosaic()
    shapes = [s for *_, batch_shapes in loader for s in batch_shapes]
    assert all(s is not None for s in shapes)  # letterboxed singles, not mosaics, in the workers


def test_rect_disables_shuffle_and_worker_cap(samples):
    ds = YoloDataset(samples, imgsz=64, rect=True, batch_size=4)
    loader = build_dataloader(ds, batch_size=4, workers=64, shuffle=True)
    files = [f for *_, batch_files, _ in loader for f in batch_files]
    assert files == ds.im_files  # sequential, in the rect order
    assert loader.num_workers <= 4


def test_batches_are_pinned_only_for_a_cuda_device(samples, monkeypatch):
    """Pinning follows where the batches go (the trainer passes its device), not whether CUDA exists."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ds = YoloDataset(samples, imgsz=64)
    assert build_dataloader(ds, batch_size=4, workers=0).pin_memory  # default: CUDA is there
    assert not build_dataloader(ds, batch_size=4, workers=0, pin_memory=False).pin_memory


def test_trainer_and_val_pin_for_cuda_only():
    """The trainer's and val's loaders are built with ``pin_memory`` = their device is CUDA."""
    import ast
    import importlib
    import inspect

    for name in ("yolov9k.engine.trainer", "yolov9k.api.val"):
        module = importlib.import_module(name)
        calls = [
            node
            for node in ast.walk(ast.parse(inspect.getsource(module)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "build_dataloader"
        ]
        assert calls, name
        for call in calls:
            pin = {k.arg: ast.unparse(k.value) for k in call.keywords}.get("pin_memory", "")
            assert pin.endswith(".type == 'cuda'"), (name, pin)
