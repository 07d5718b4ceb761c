"""Train-step wall-clock of three paths, alternating round by round (noise on a shared VM hits all
three alike; pytest-benchmark runs one case after the other).

Paths: ``auto`` (the fused ops: C++ BN + SiLU on CPU), ``torch`` (PyTorch references only) and
``old-ref`` (``torch`` with ATen's ``avg_pool2d`` in ADown / AConv: the eager path before the
depthwise pool), each on NCHW tensors; ``auto-cl`` and ``torch-cl`` are ``auto`` and ``torch`` on
channels_last model and input. Step = ``profile_step.make_step`` (forward + loss + backward + clip +
SGD). Ratios are against ``torch`` and, when run, ``old-ref``.

    python benchmarks/interleaved_step.py --model gelan-t --batch 8 --imgsz 320 --rounds 6
    python benchmarks/interleaved_step.py --paths auto,torch,auto-cl,torch-cl
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from profile_step import make_step

import yolov9k.models.blocks as blocks
from yolov9k.ops import use_backend


def _aten_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 2, 1, 0, False, True)


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gelan-t")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paths", default="auto,torch,old-ref", help="comma-separated, torch included")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pool = blocks.avg_pool_2x2
    known = {  # path: (backend, 2x2 pool, channels_last)
        "auto": ("auto", pool, False),
        "torch": ("torch", pool, False),
        "old-ref": ("torch", _aten_pool, False),
        "auto-cl": ("auto", pool, True),
        "torch-cl": ("torch", pool, True),
    }
    names = args.paths.split(",")
    if "torch" not in names or not set(names) <= set(known):
        p.error(f"--paths: a comma-separated subset of {', '.join(known)} with torch in it")
    paths = {k: known[k] for k in names}
    steps = {k: make_step(args.model, args.batch, args.imgsz, cl)[0] for k, (_, _, cl) in paths.items()}
    ms: dict[str, list[float]] = {k: [] for k in paths}
    try:
        for r in range(args.rounds + 1):  # round 0 warms up
            for k, (backend, pool_fn, _) in paths.items():
                blocks.avg_pool_2x2 = pool_fn
                with use_backend(backend):
                    t0 = time.perf_counter()
                    steps[k]()
                    if r:
                        ms[k].append((time.perf_counter() - t0) * 1000)
    finally:
        blocks.avg_pool_2x2 = pool
    med = {k: sorted(v)[len(v) // 2] for k, v in ms.items()}
    head = f"{args.model} B={args.batch} {args.imgsz}px, {args.threads} threads, {args.rounds} rounds"
    print(head)
    bases = [b for b in ("torch", "old-ref") if b in med]
    print("| path | median ms | rounds | " + " | ".join(f"{b} / path" for b in bases) + " |")
    print("| --- | ---: | --- |" + " ---: |" * len(bases))
    for k, v in ms.items():
        rounds = ", ".join(f"{x:.0f}" for x in v)
        ratios = " | ".join(f"{med[b] / med[k]:.3f}" for b in bases)
        print(f"| {k} | {med[k]:.1f} | {rounds} | {ratios} |")
    return ms


if __name__ == "__main__":
    main()
