"""The whole loader: batches per second of the training DataLoader with 0, 1, 2 workers, as the trainer
builds it (``yolov9k.data.build_dataloader``: ``__getitems__`` batches, ``collate_fn``, persistent
workers, a seeded shuffle; ``pin_memory`` only where CUDA is available, so not on a CPU machine).

Data: a generated COCO-like JPEG folder (``loader_data.make_coco_like``, 640 px long side), the
training sample of ``loader_bench.py`` (mosaic, mixup 0.15, hyp.scratch-high strengths), imgsz 640,
batch 16. One loader per worker count is built, then rounds alternate between them (0, 1, 2, 0, ...):
a round is one whole epoch (``--images`` / batch batches, every prefetched batch consumed, so nothing
runs in the background of the next loader's round); the first round of each (worker start-up) is not
counted. The main process only receives the batches (the trainer's GPU step is not simulated): with
workers, the figure is what the workers deliver; with 0 workers, what one process does. Example::

    python benchmarks/loader_workers.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader_bench import HYP, NC  # noqa: E402
from loader_data import make_coco_like  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="0,1,2", help="worker counts, comma-separated")
    p.add_argument("--images", type=int, default=512, help="images in the generated set (one epoch)")
    p.add_argument("--unique", type=int, default=128, help="distinct images among them")
    p.add_argument("--long-side", type=int, default=640)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per loader (after one warm-up)")
    args = p.parse_args(argv)

    import cv2
    import torch

    from yolov9k.data import YoloDataset, build_dataloader, scan_dataset

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="loader-workers-") as tmp:
        images = make_coco_like(tmp, n=args.images, long_side=args.long_side, unique=args.unique)
        samples, _ = scan_dataset(sorted(images.glob("*.jpg")), nc=NC, use_cache=False)
        loaders = {}
        for w in counts:
            ds = YoloDataset(samples, args.imgsz, augment=True, hyp=HYP, seed=0)
            loaders[w] = build_dataloader(ds, args.batch, workers=w, shuffle=True, seed=0)
        per: dict[int, list[float]] = {w: [] for w in counts}
        for r in range(args.rounds + 1):
            for w, loader in loaders.items():
                t0 = time.perf_counter()
                n = sum(1 for _ in loader)
                dt = time.perf_counter() - t0
                if r:
                    per[w].append(n / dt)
        actual = {w: loader.num_workers for w, loader in loaders.items()}
        del loaders
    cpu = os.cpu_count()
    print(f"batches of {args.batch} at {args.imgsz} px, {args.images} images per epoch, {cpu} CPUs")
    print("| workers | batches/s | samples/s |")
    print("| --- | --- | --- |")
    for w, xs in per.items():
        med = statistics.median(xs)
        span = f"{min(xs):.2f}-{max(xs):.2f}"
        print(f"| {actual[w]} | {med:.2f} ({span}) | {med * args.batch:.1f} |")


if __name__ == "__main__":
    main()
