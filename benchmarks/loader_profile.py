"""Where a training sample's time goes: cProfile of our loader on a generated COCO-like folder.

One thread, no workers, batches of ``--batch`` fetched as the trainer does (``__getitems__`` when the
dataset has it) and collated. Prints the functions with the most own time, and the share of the
total each takes. Example::

    python benchmarks/loader_profile.py --kind mosaic --long-side 640 --batches 20
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loader_bench import HYP, NC  # noqa: E402
from loader_data import make_coco_like  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="mosaic", choices=("mosaic", "letterbox", "val"))
    p.add_argument("--long-side", type=int, default=640)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--cache", default="false", help="ram | disk | false")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch

    from yolov9k.data import YoloDataset, collate_fn, scan_dataset

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="loader-profile-") as tmp:
        images = make_coco_like(tmp, n=1024, long_side=args.long_side, unique=128)
        samples, _ = scan_dataset(sorted(images.glob("*.jpg")), nc=NC, use_cache=False)
        if args.kind == "val":
            ds = YoloDataset(samples, args.imgsz, augment=False, rect=True, batch_size=args.batch, pad=0.5)
        else:
            ds = YoloDataset(samples, args.imgsz, augment=True, hyp=HYP, seed=0)
            if args.kind == "letterbox":
                ds.close_mosaic()
        if args.cache != "false":
            ds.cache_images(args.cache)
        fetch = getattr(ds, "__getitems__", None) or (lambda idx: [ds[i] for i in idx])
        order = np.random.default_rng(0).permutation(len(ds))
        batches = [order[k : k + args.batch].tolist() for k in range(0, len(order), args.batch)]
        collate_fn(fetch(batches[-1]))  # warm-up
        prof = cProfile.Profile()
        prof.enable()
        for idx in batches[: args.batches]:
            collate_fn(fetch(idx))
        prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())
    n = args.batches * args.batch
    head = f"{args.kind}, {args.long_side} px images -> {args.imgsz}"
    print(f"{head}: {n / total:.1f} samples/s ({total:.2f} s)")
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[: args.top]
    for (file, line, name), (_, ncalls, tottime, _, _) in rows:
        where = f"{Path(file).name}:{line}" if line else file
        share, per = 100 * tottime / total, 1e3 * tottime / n
        print(f"{share:5.1f} %  {per:6.3f} ms/sample  {ncalls:6d}  {name}  {where}")


if __name__ == "__main__":
    main()
