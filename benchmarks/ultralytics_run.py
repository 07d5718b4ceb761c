"""The peer of ``benchmarks/train_run.py``: an ultralytics training run on the same data and schedule.

Runs in its own virtual environment (ultralytics is never a dependency of this project)::

    python3 -m venv /tmp/venv-ul && /tmp/venv-ul/bin/pip install torch==2.13.0 ultralytics
    YOLO_OFFLINE=1 /tmp/venv-ul/bin/python benchmarks/ultralytics_run.py \
        --data ~/.cache/yolov9k/demo/demo.yaml --out /tmp/ul.json

``--data`` is a YOLO dataset yaml (``path``, ``train``, ``val``, ``names``), e.g. our demo set
(``yolov9k demo-data``). Its images and labels are copied to a temporary folder first, so that the
label caches ultralytics writes beside the labels never land in the original set. Defaults match
the README's demo run: yolov9t.yaml (ultralytics' GELAN-t, no PGI branch) from scratch, 10 epochs,
256 px, batch 16, nominal batch 16, one warm-up epoch, mosaic closed for the last 10 epochs (as our
``close_mosaic=15`` does over 10 epochs), CPU, no AMP, plots off. Per epoch it reports the wall-clock
(``on_train_epoch_start`` to ``on_fit_epoch_end``) split into ``data`` (between the end of one batch
and the start of the next), ``step`` (preprocess, forward, loss, backward, optimizer/EMA) and
``val_save`` (validation and checkpoint saving), and mAP50 of the per-epoch validation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="YOLO dataset yaml (e.g. ~/.cache/yolov9k/demo/demo.yaml)")
    p.add_argument("--model", default="yolov9t.yaml")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nbs", type=int, default=16)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out", default=None, help="write the timing JSON here")
    return p.parse_args(argv)


def copy_dataset(yaml_path: Path, dest: Path) -> Path:
    """Copy images/ and labels/ of a YOLO dataset to ``dest`` (without label caches); returns the new
    yaml (absolute path). Also used by ``official_run.py``."""
    import yaml

    cfg = yaml.safe_load(yaml_path.read_text())
    root = Path(cfg.get("path") or yaml_path.parent)
    if not root.is_absolute():
        root = (yaml_path.parent / root).resolve()
    for sub in ("images", "labels"):
        shutil.copytree(root / sub, dest / sub, ignore=shutil.ignore_patterns("*.cache", "*.cache.json"))
    names = cfg["names"]  # a list or an {index: name} dict; both trainers read the dict
    names = dict(enumerate(names)) if isinstance(names, list) else names
    out = {"path": str(dest), "train": cfg["train"], "val": cfg["val"], "names": names}
    new = dest / "data.yaml"
    new.write_text(yaml.safe_dump(out, sort_keys=False))
    return new


class EpochClock:
    """Ultralytics trainer callbacks that split each epoch's wall-clock."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.cur: dict = {}
        self.t_last = self.t_start = self.t_batch = self.t_train_end = 0.0

    def epoch_start(self, trainer) -> None:
        now = time.perf_counter()
        self.cur = {"epoch": int(trainer.epoch), "data": 0.0, "step": 0.0, "batches": 0}
        self.t_start = self.t_last = now

    def batch_start(self, trainer) -> None:
        now = time.perf_counter()
        self.cur["data"] += now - self.t_last
        self.t_batch = now

    def batch_end(self, trainer) -> None:
        now = time.perf_counter()
        self.cur["step"] += now - self.t_batch
        self.cur["batches"] += 1
        self.t_last = now

    def train_epoch_end(self, trainer) -> None:
        self.t_train_end = time.perf_counter()
        self.cur["tail"] = self.t_train_end - self.t_last  # the loader's StopIteration, epoch bookkeeping

    def fit_epoch_end(self, trainer) -> None:
        if not self.cur:  # ultralytics calls it again after the final validation of best.pt
            return
        now = time.perf_counter()
        self.cur["val_save"] = now - self.t_train_end
        self.cur["wall"] = now - self.t_start
        self.cur["other"] = self.cur["wall"] - self.cur["data"] - self.cur["step"] - self.cur["val_save"]
        metrics = getattr(trainer, "metrics", None) or {}
        m = metrics.get("metrics/mAP50(B)")
        self.cur["map50"] = float(m) if m is not None else None
        self.epochs.append(self.cur)
        self.cur = {}

    def attach(self, model) -> None:
        for event, fn in (
            ("on_train_epoch_start", self.epoch_start),
            ("on_train_batch_start", self.batch_start),
            ("on_train_batch_end", self.batch_end),
            ("on_train_epoch_end", self.train_epoch_end),
            ("on_fit_epoch_end", self.fit_epoch_end),
        ):
            model.add_callback(event, fn)


def format_table(epochs: list[dict], total: dict, best: float | None) -> str:
    cols = ("wall", "data", "step", "val_save", "other")
    lines = ["| epoch | " + " | ".join(cols) + " | mAP50 |", "| --- |" + " ---: |" * (len(cols) + 1)]
    for e in [*epochs, {**total, "epoch": "total", "map50": best}]:
        label = e["epoch"] + 1 if isinstance(e["epoch"], int) else f"**{e['epoch']}**"
        m = "" if e.get("map50") is None else f"{e['map50']:.3f}"
        lines.append(f"| {label} | " + " | ".join(f"{e[c]:.2f}" for c in cols) + f" | {m} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import torch
    import ultralytics
    from ultralytics import YOLO

    if args.threads:
        torch.set_num_threads(args.threads)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="ul-bench-") as tmp:
        data = copy_dataset(Path(args.data).expanduser(), Path(tmp) / "data")
        model = YOLO(args.model)
        clock.attach(model)
        t0 = time.perf_counter()
        results = model.train(
            data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=args.nbs,
            warmup_epochs=args.warmup_epochs, close_mosaic=args.close_mosaic, workers=args.workers,
            device="cpu", amp=False, plots=False, project=str(Path(tmp) / "runs"), name="bench",
            exist_ok=True, seed=0, deterministic=True, verbose=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    total = {
        k: sum(e[k] for e in clock.epochs) for k in ("wall", "data", "step", "val_save", "other", "batches")
    }
    maps = [e["map50"] for e in clock.epochs if e["map50"] is not None]
    best = max(maps) if maps else None
    final = {}
    box = getattr(results, "box", None)
    if box is not None:
        final = {"map50": float(box.map50), "map50_95": float(box.map)}
    result = {
        "tool": "ultralytics",
        "options": vars(args),
        "env": {
            "ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "load_before": load_before,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "wall_s": wall,
        "epochs": clock.epochs,
        "total": total,
        "best_map50": best,
        "final_metrics": final,
    }  # fmt: skip
    print(format_table(clock.epochs, total, best))
    print(f"whole run {wall:.1f} s, best mAP50 {best}, final {final}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
