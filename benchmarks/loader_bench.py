"""Loader speed per core: ours vs the official ``LoadImagesAndLabels`` and ultralytics' ``YOLODataset``.

Each loader runs in its own process with its own Python (the peers are never dependencies of this
project), one thread each (``OMP_NUM_THREADS=1``, ``cv2.setNumThreads(1)``, ``torch.set_num_threads(1)``),
no DataLoader workers: the figure is samples per second per core. Every loader builds batches as its
trainer does: ``batch`` samples (ours through ``__getitems__``, the peers one ``__getitem__`` each)
and its own ``collate_fn``, so everybody pays for the finished uint8 batch tensor. Rounds alternate
between the loaders (ours, official, ultralytics, ours, ...); the first round of each is a warm-up and
is not counted. Ratios are taken per round (same position in the alternation) and summarised by their
median and range.

Kinds: ``mosaic`` (training sample: mosaic, mixup, random perspective, HSV, flips), ``letterbox``
(training after close_mosaic: letterbox, perspective, HSV, flips) and ``val`` (rectangular validation
batches, no augmentation). Augmentation strengths: the official hyp.scratch-high values for all three
(mosaic 1.0, mixup 0.15, scale 0.9, translate 0.1, degrees / shear / perspective 0, HSV
0.015 / 0.7 / 0.4, fliplr 0.5, flipud 0; ultralytics' copy_paste and cutmix 0 as they have no effect
on box labels; the official copy_paste needs polygons and does nothing here).

Data: a generated COCO-like JPEG folder (``loader_data.make_coco_like``) at each ``--long-sides``
value (640: COCO's sizes; 1280: phone-photo sized), copied per loader so that the label caches the
peers write beside the labels do not meet. Example (the peers' setup: see official_run.py and
ultralytics_run.py)::

    python benchmarks/loader_bench.py --official /tmp/official-yolov9 \\
        --official-python /tmp/venv-official/bin/python --ul-python /tmp/venv-ul/bin/python \\
        --out /tmp/loader.json

A peer whose paths are not given (or do not exist) is skipped with a note. ``--impls`` may add
variants of ours, each a lever switched: ``ours:cache=ram`` (decoded images kept in RAM, ``--cache
ram``), ``ours:pool=0`` (one ``__getitem__`` per sample: mosaic partners from the whole data set,
every tile decoded), ``ours:reduce=0`` (JPEGs always decoded at full size), and ``before`` (ours as
it is in another checkout, run by ``--before-python``: the figure before the speed work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

HYP = {  # the official hyp.scratch-high augmentation values (the training-only keys stay at defaults)
    "hsv_h": 0.015, "hsv_s": 0.7, "hsv_v": 0.4, "degrees": 0.0, "translate": 0.1, "scale": 0.9,
    "shear": 0.0, "perspective": 0.0, "flipud": 0.0, "fliplr": 0.5, "mosaic": 1.0, "mixup": 0.15,
}  # fmt: skip
NC = 80


# ---------------------------------------------------------------------------------------------------------
# the worker side: runs inside the loader's own Python


def _one_thread() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"


def _build_ours(images: Path, kind: str, imgsz: int, batch: int, options: dict):
    import numpy as np

    from yolov9k.data import YoloDataset, collate_fn, scan_dataset

    samples, _ = scan_dataset(sorted(images.glob("*.jpg")), nc=NC, use_cache=False)
    if options.get("reduce") == "0":  # the reduced-size JPEG decoding lever off
        import yolov9k.data.dataset as dataset_mod

        read = dataset_mod.read_image
        dataset_mod.read_image = lambda f, **kw: read(f, **{**kw, "reduce_to": None})
    cache = options.get("cache", "false")
    if kind == "val":
        ds = YoloDataset(samples, imgsz, augment=False, rect=True, batch_size=batch, stride=32, pad=0.5)
    else:
        ds = YoloDataset(samples, imgsz, augment=True, hyp=HYP, seed=0)
        if kind == "letterbox":
            ds.close_mosaic()
    if cache != "false" and hasattr(ds, "cache_images"):
        ds.cache_images(cache)
    fetch = getattr(ds, "__getitems__", None) or (lambda idx: [ds[i] for i in idx])
    if options.get("pool") == "0":  # the batch-pool lever off
        fetch = lambda idx: [ds[i] for i in idx]  # noqa: E731

    def epoch(r: int) -> None:
        ds.set_epoch(r)

    def get_batch(idx: list[int]):
        return collate_fn(fetch(idx))

    return len(ds), epoch, get_batch, np


def _build_official(images: Path, kind: str, imgsz: int, batch: int, options: dict):
    import random

    import numpy as np
    import yaml

    repo = Path(options["repo"])
    sys.path.insert(0, str(repo))
    from utils.dataloaders import LoadImagesAndLabels  # the official repository's module

    hyp = yaml.safe_load((repo / "data/hyps/hyp.scratch-high.yaml").read_text())
    hyp.update(HYP)
    if kind == "letterbox":
        hyp["mosaic"] = 0.0  # close_mosaic: the official train.py sets this probability to 0
    aug = kind != "val"
    ds = LoadImagesAndLabels(
        str(images), img_size=imgsz, batch_size=batch, augment=aug, hyp=hyp, rect=not aug,
        stride=32, pad=0.0 if aug else 0.5, prefix="",
    )  # fmt: skip

    def epoch(r: int) -> None:
        random.seed(r)
        np.random.seed(r)

    def get_batch(idx: list[int]):
        return LoadImagesAndLabels.collate_fn([ds[i] for i in idx])

    return len(ds), epoch, get_batch, np


def _build_ultralytics(images: Path, kind: str, imgsz: int, batch: int, options: dict):
    import random

    import numpy as np

    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    over = {**HYP, "copy_paste": 0.0, "cutmix": 0.0, "imgsz": imgsz, "plots": False}
    cfg = get_cfg(overrides=over)
    aug = kind != "val"
    data = {"names": {i: str(i) for i in range(NC)}, "nc": NC, "channels": 3}
    ds = YOLODataset(
        img_path=str(images), imgsz=imgsz, batch_size=batch, augment=aug, hyp=cfg, rect=not aug,
        cache=False, single_cls=False, stride=32, pad=0.0 if aug else 0.5, prefix="", task="detect",
        classes=None, data=data, fraction=1.0,
    )  # fmt: skip
    if kind == "letterbox":
        ds.close_mosaic(cfg)

    def epoch(r: int) -> None:
        random.seed(r)
        np.random.seed(r)

    def get_batch(idx: list[int]):
        return YOLODataset.collate_fn([ds[i] for i in idx])

    return len(ds), epoch, get_batch, np


def serve(args: argparse.Namespace) -> None:
    """Build one loader, then answer ``run <round> <batches>`` lines with JSON timings."""
    impl, _, opts = args.serve.partition(":")
    options = dict(kv.split("=", 1) for kv in opts.split(",") if kv)
    if args.official:
        options["repo"] = args.official
    build = {
        "ours": _build_ours,
        "before": _build_ours,
        "official": _build_official,
        "ultralytics": _build_ultralytics,
    }[impl]
    n, epoch, get_batch, np = build(Path(args.folder), args.kind, args.imgsz, args.batch, options)
    import cv2
    import torch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    order_of = {}

    def batches(r: int, count: int) -> list[list[int]]:
        if args.kind == "val":  # sequential, in the rectangle order
            order = np.arange(n)
        else:
            order = order_of.setdefault(r, np.random.default_rng(r).permutation(n))
        flat = [int(i) for i in np.resize(order, count * args.batch)]
        return [flat[k : k + args.batch] for k in range(0, len(flat), args.batch)]

    print(json.dumps({"ready": impl, "n": n}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        r, count = int(cmd[1]), int(cmd[2])
        todo = batches(r, count)
        epoch(r)
        t0 = time.perf_counter()
        for idx in todo:
            out = get_batch(idx)
        dt = time.perf_counter() - t0
        imgs = out["img"] if isinstance(out, dict) else out[0]  # ultralytics collates to a dict
        res = {"round": r, "seconds": dt, "samples": count * args.batch, "shape": list(imgs.shape)}
        print(json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------------------
# the driver


class Worker:
    """One loader in its own process, driven through stdin / stdout."""

    def __init__(self, name: str, python: str, images: Path, args: argparse.Namespace, kind: str) -> None:
        cmd = [
            python, str(Path(__file__).resolve()), "--serve", name, "--folder", str(images), "--kind", kind,
            "--imgsz", str(args.imgsz), "--batch", str(args.batch),
        ]  # fmt: skip
        if name.startswith("official"):
            cmd += ["--official", args.official]
        env = dict(os.environ)
        _one_thread_env(env)
        self.name = name
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=args.official if name.startswith("official") else None,
        )  # fmt: skip
        self.info = self._read()

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name}: the worker ended (exit code {self.proc.wait()})")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, r: int, batches: int) -> dict:
        self.proc.stdin.write(f"run {r} {batches}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


def _one_thread_env(env: dict) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = "1"
    env.setdefault("YOLO_OFFLINE", "1")


def _pythons(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for spec in args.impls.split(","):
        impl = spec.partition(":")[0]
        if impl == "ours":
            out[spec] = sys.executable
        elif impl == "before":
            if args.before_python and Path(args.before_python).exists():
                out[spec] = args.before_python
            else:
                print("note: before skipped (--before-python needed)", file=sys.stderr)
        elif impl == "official":
            ok = args.official and args.official_python and Path(args.official, "utils").is_dir()
            if ok and Path(args.official_python).exists():
                out[spec] = args.official_python
            else:
                print("note: official skipped (--official and --official-python needed)", file=sys.stderr)
        elif impl == "ultralytics":
            if args.ul_python and Path(args.ul_python).exists():
                out[spec] = args.ul_python
            else:
                print("note: ultralytics skipped (--ul-python needed)", file=sys.stderr)
        else:
            raise SystemExit(f"unknown loader {spec!r}")
    return out


def _copy(images_root: Path, dest: Path) -> Path:
    """``dest/images`` linking to the shared images, ``dest/labels`` a copy (peers write caches there)."""
    dest.mkdir(parents=True)
    (dest / "images").symlink_to(images_root / "images", target_is_directory=True)
    shutil.copytree(images_root / "labels", dest / "labels")
    return dest / "images"


def measure(args: argparse.Namespace, tmp: Path) -> list[dict]:
    sys.path.insert(0, str(HERE))
    from loader_data import make_coco_like

    pythons = _pythons(args)
    rows = []
    for long_side in [int(s) for s in args.long_sides.split(",")]:
        src = tmp / f"src{long_side}"
        make_coco_like(src, n=args.images, long_side=long_side, unique=args.unique)
        for kind in args.kinds.split(","):
            workers = []
            for name, py in pythons.items():
                workers.append(Worker(name, py, _copy(src, tmp / f"{name}-{long_side}-{kind}"), args, kind))
            try:
                per = {w.name: [] for w in workers}
                for r in range(args.rounds + 1):
                    for w in workers:
                        res = w.run(r, args.batches)
                        if r > 0:  # round 0: warm-up
                            per[w.name].append(res["samples"] / res["seconds"])
            finally:
                for w in workers:
                    w.close()
            row = {"long_side": long_side, "kind": kind, "samples_per_s": per}
            for name in per:
                if name != "ours" and "ours" in per:
                    row[f"ours/{name}"] = [a / b for a, b in zip(per["ours"], per[name])]
            rows.append(row)
            print(_line(row), flush=True)
    return rows


def _fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def _line(row: dict) -> str:
    parts = [f"{row['long_side']} px {row['kind']}:"]
    parts += [f"{k} {_fmt(v)}/s" for k, v in row["samples_per_s"].items()]
    parts += [f"{k} {_fmt(v)}x" for k, v in row.items() if k.startswith("ours/")]
    return "  ".join(parts)


def markdown(rows: list[dict]) -> str:
    names = list(rows[0]["samples_per_s"])
    ratios = [k for k in rows[0] if k.startswith("ours/")]
    head = ["images", "kind", *(f"{n} samples/s" for n in names), *ratios]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [f"{row['long_side']} px", row["kind"], *(_fmt(row["samples_per_s"][n]) for n in names)]
        cells += [_fmt(row[k]) for k in ratios]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", default=None, help="work tree of WongKinYiu/yolov9 (/tmp/official-yolov9)")
    p.add_argument("--official-python", default=None, help="the Python that runs the official code")
    p.add_argument("--ul-python", default=None, help="the Python of an ultralytics venv")
    p.add_argument("--before-python", default=None, help="a Python with an earlier yolov9k installed")
    p.add_argument(
        "--impls", default="ours,official,ultralytics", help="loaders, comma-separated (see the docstring)"
    )
    p.add_argument("--kinds", default="mosaic,letterbox,val")
    p.add_argument("--long-sides", default="640,1280", help="long sides of the generated image sets")
    p.add_argument(
        "--images",
        type=int,
        default=1024,
        help="images per generated set (more than ultralytics "
        "keeps in its buffer, batch x 8, so that its hit rate stays low, as on a real data set)",
    )
    p.add_argument("--unique", type=int, default=128, help="distinct images among them (the rest hard links)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=4, help="batches per round")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per loader (after one warm-up)")
    p.add_argument("--out", default=None, help="write the JSON here")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--kind", default="mosaic", help=argparse.SUPPRESS)
    p.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve:
        _one_thread()
        serve(args)
        return
    with tempfile.TemporaryDirectory(prefix="loader-bench-") as tmp:
        rows = measure(args, Path(tmp))
    print(markdown(rows))
    if args.out:
        meta = {
            "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
            ).stdout.strip(),
            "args": {k: v for k, v in vars(args).items() if k not in ("serve", "kind", "folder")},
        }
        Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
