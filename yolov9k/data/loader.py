"""DataLoader construction: seeded, reproducible, DDP-aware, with per-epoch sampler/dataset seeding."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, SequentialSampler

from yolov9k.data.dataset import YoloDataset, collate_fn

__all__ = ["YoloDataLoader", "build_dataloader", "seed_worker"]

LOGGER = logging.getLogger("yolov9k.data")


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and ``numpy`` in a worker from torch's per-worker seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class YoloDataLoader(DataLoader):
    """A DataLoader that tells its sampler and dataset which epoch it is on.

    Each ``iter()`` uses ``self.epoch`` (shuffle order = f(seed, epoch); augmentations =
    f(seed, epoch, index)) and then advances it. Call ``set_epoch(e)`` before iterating to pin the
    epoch, e.g. when resuming.
    """

    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        self.epoch += 1
        return super().__iter__()


def build_dataloader(
    dataset: YoloDataset,
    batch_size: int,
    workers: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    rank: int = -1,
    persistent_workers: bool = True,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> YoloDataLoader:
    """Build the loader for ``dataset`` with ``collate_fn``.

    Args:
        batch_size: per-process batch size.
        workers: requested worker processes, capped by CPUs per process and by ``batch_size``;
            0 loads in the main process.
        shuffle: shuffle each epoch (forced off for rectangular datasets, whose batches are ordered).
        seed: shuffle seed (the dataset holds its own augmentation seed).
        rank: DDP rank; >= 0 uses a ``DistributedSampler`` over the initialised process group.
        pin_memory: page-locked batches for non-blocking host -> GPU copies; pass whether the
            batches go to a CUDA device (None: whether CUDA is available).
    """
    if getattr(dataset, "rect", False) and shuffle:
        LOGGER.warning("rect=True is incompatible with shuffle; using shuffle=False")
        shuffle = False
    world = torch.distributed.get_world_size() if rank >= 0 else 1
    nw = max(0, min(workers, (os.cpu_count() or 1) // max(world, 1), batch_size))
    if rank >= 0:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    elif shuffle:  # one replica: a seeded permutation per epoch, no process group needed
        sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=seed)
    else:
        sampler = SequentialSampler(dataset)
    generator = torch.Generator()
    generator.manual_seed(seed + max(rank, 0))
    return YoloDataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=nw,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        collate_fn=collate_fn,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=persistent_workers and nw > 0,
        drop_last=drop_last,
    )
