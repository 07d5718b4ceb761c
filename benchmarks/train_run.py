"""Whole training run with the phase split of ``yolov9k.engine.profile.TimedTrainer``; writes JSON.

The default schedule is the README's demo run (``yolov9k train --epochs 10 --imgsz 256 --nbs 16
--warmup-epochs 1``: gelan-t from scratch on the generated demo set, batch 16), with every other
option at the ``yolov9k train`` default. ``--backend torch`` runs the PyTorch references only (the
in-project baseline: eager, no C++ assigner / NMS).

    python benchmarks/train_run.py --backend auto --out /tmp/auto.json
    python benchmarks/train_run.py --data tiny/demo.yaml --epochs 1 --imgsz 64   # tool check only

Timings are only meaningful on an otherwise idle machine (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("auto", "torch"), default="auto", help="YOLOV9K_BACKEND for the run")
    p.add_argument("--model", default="gelan-t")
    p.add_argument("--data", default=None, help="dataset yaml (default: the demo set)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nbs", type=int, default=16)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the trainer's)")
    p.add_argument("--channels-last", action="store_true", default=None)
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the training model")
    p.add_argument("--no-plots", action="store_true", help="plots=False (default: the trainer's, True)")
    p.add_argument("--no-val", action="store_true", help="val=False: validate after the last epoch only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--cv2-threads", type=int, default=None, help="cv2.setNumThreads before the loaders fork")
    p.add_argument("--project", default=None, help="run folder parent (default: a temporary folder)")
    p.add_argument("--out", default=None, help="write the timing JSON here")
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    os.environ["YOLOV9K_BACKEND"] = args.backend  # before yolov9k is imported
    import tempfile

    import torch

    from yolov9k.engine.profile import TimedTrainer, format_timing

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cv2_threads is not None:
        import cv2

        cv2.setNumThreads(args.cv2_threads)
    overrides: dict = dict(
        model=args.model, data=args.data, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
        nbs=args.nbs, warmup_epochs=args.warmup_epochs, device="cpu", exist_ok=True, name="bench",
        verbose=not args.quiet,
    )  # fmt: skip
    for key, value in (("workers", args.workers), ("channels_last", args.channels_last)):
        if value is not None:
            overrides[key] = value
    if args.compile:
        overrides["compile"] = True
    if args.no_plots:
        overrides["plots"] = False
    if args.no_val:
        overrides["val"] = False
    with tempfile.TemporaryDirectory(prefix="yolov9k-bench-") as tmp:
        overrides["project"] = args.project or tmp
        trainer = TimedTrainer(overrides)
        t0 = time.perf_counter()
        summary = trainer.fit()
        wall = time.perf_counter() - t0
    a = trainer.args
    result = {
        "tool": "yolov9k",
        "backend": args.backend,
        "options": {k: a[k] for k in ("model", "epochs", "imgsz", "batch", "nbs", "workers", "channels_last",
                                      "compile", "plots", "val", "amp", "deterministic", "warmup_epochs")},
        "loader_workers": int(trainer.train_loader.num_workers),
        "env": {
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": _cpu_model(),
            "cv2_threads": args.cv2_threads,
            "cpus": os.cpu_count(), "python": platform.python_version(), "commit": _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "load_before": load_before,
        },
        "wall_s": wall,
        "timing": trainer.timing,
        "best_map50": trainer.timing.get("best_map50"),
        "final_metrics": {k: v for k, v in summary["metrics"].items() if isinstance(v, int | float)},
    }  # fmt: skip
    print(format_timing(trainer.timing, title=f"yolov9k {args.model} backend={args.backend}"))
    print(f"whole run {wall:.1f} s, best mAP50 {result['best_map50']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
