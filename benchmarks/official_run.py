"""The official trainer (WongKinYiu/yolov9 ``train.py``) on our demo data set and schedule; writes JSON.

The third peer of ``benchmarks/train_run.py`` (ours) and ``benchmarks/ultralytics_run.py``. The
official code is never part of this repository: it runs from a work tree outside it, in its own
virtual environment. Setup (once; /tmp/venv-ul is the ultralytics venv of ultralytics_run.py, whose
torch / torchvision / numpy / opencv the new venv reuses through a ``.pth`` file)::

    git --git-dir=<mirror of WongKinYiu/yolov9> archive 5b1ea9a | tar -x -C /tmp/official-yolov9
    /root/.pyenv/versions/3.11.7/bin/python3 -m venv /tmp/venv-official
    echo /tmp/venv-ul/lib/python3.11/site-packages \\
        > /tmp/venv-official/lib/python3.11/site-packages/zz-venv-ul.pth
    /tmp/venv-official/bin/pip install "setuptools<81" tqdm pandas scipy seaborn ipython tensorboard

(``setuptools<81`` for ``pkg_resources``, which utils/general.py imports; tensorboard because
utils/loggers imports it unconditionally; the rest are top-level imports of the train path.
albumentations, wandb, clearml, comet_ml and pycocotools are not installed: all optional there, and
our trainer has no albumentations step either.) Then, with any Python >= 3.10::

    python benchmarks/official_run.py --official /tmp/official-yolov9 \\
        --python /tmp/venv-official/bin/python --data ~/.cache/yolov9k/demo --out /tmp/official.json
    python benchmarks/summarize_runs.py ours=/tmp/auto.json ul=/tmp/ul.json official=/tmp/official.json

What it does: (a) patches the official work tree in place, idempotently (``PATCHES`` below, each
with its reason); (b) copies the data set's images/ and labels/ to a temporary folder (the official
loader writes ``labels/*.cache`` beside the labels) and writes a data yaml there, plus a hyp yaml:
``data/hyps/hyp.scratch-high.yaml`` with ``warmup_epochs`` replaced (1, as ``--warmup-epochs 1``
of the demo command), everything else unchanged; (c) runs the official ``train.py`` (not
``train_dual.py``: gelan-t has the single ``DDetect`` head that ``train.py``'s ``utils.loss_tal``
loss expects; ``train_dual.py`` is for the yolov9-* models with the PGI auxiliary branch) in a child
process with ``--python``, for ``models/detect/gelan-t.yaml`` from scratch with the demo command's
epochs / imgsz / batch / nbs / workers, ``--device cpu --noplots``, into the temporary folder;
(d) writes the JSON of ``ultralytics_run.py`` (``tool`` = "official"): whole-run wall-clock
(``train.main()``: setup, epochs, final validation of best.pt), per-epoch wall-clock split into
``data`` / ``step`` / ``val_save`` / ``other`` from the official ``Callbacks`` hooks (``val_save``
also split into ``val``: validation of the EMA model, and ``save``: results.csv / TensorBoard
logging and the checkpoints), per-epoch mAP50 read from the run's results.csv, ``setup_s`` (to the
first epoch), ``finish_s`` (last checkpoint to the end: optimizer stripping and the final
validation of best.pt) and that final validation's metrics. ``process_wall_s`` adds the child's
interpreter start and imports.

Environment of the child: ``torch.set_num_threads(--threads)`` (default 2, what torch picks on the
2-core VM and what our runs use). The official code itself sets no torch thread count: its
utils/general.py sets ``OMP_NUM_THREADS=min(8, cpu_count - 1)`` (1 here) and ``cv2.setNumThreads(0)``
at import, but after ``torch`` is imported, so torch keeps its own default (checked: 2 before and
after); the JSON records ``torch.get_num_threads()`` at the end of the run. Loader workers: the
official ``min(cpu_count, batch, --workers)``, 2 here with the default ``--workers 8`` (ours caps
the same 8 to the 2 cores). No network: wandb / clearml / comet are not installed and are also
switched off in ``utils.loggers`` before training; ``check_dataset`` would download Arial.ttf into
its config dir, so ``YOLOV5_CONFIG_DIR`` points to a temporary folder holding matplotlib's
DejaVuSans.ttf under that name (never drawn: ``--noplots``). TensorBoard event files are written
locally each epoch (the official default logger; not switched off).

Patches (applied to the copy only, see ``PATCHES``):
* utils/metrics.py: ``np.trapz`` -> ``np.trapezoid`` (numpy 2.x removed ``trapz``; same integral).
* models/experimental.py (``attempt_load``, final validation of best.pt) and utils/general.py
  (``strip_optimizer``, end of training): ``torch.load(..., weights_only=False)`` (torch >= 2.6
  defaults to ``weights_only=True``, which refuses the official pickled checkpoints).
  ``train.py``'s own two ``torch.load`` calls are only for ``--weights``/``--resume``: not patched.
* train.py: the hard-coded ``nbs = 64`` reads ``YOLOV9_BENCH_NBS`` (default 64) instead, which this
  script sets to ``--nbs`` (16 as in the demo command: an optimizer step every batch of 16 after
  warm-up, and weight decay scaled by ``16 * 1 / 16``, as ours does with ``--nbs 16``).

Schedule left as it is (differences from ``yolov9k train --epochs 10 --imgsz 256 --nbs 16
--warmup-epochs 1`` that the official options cannot remove):
* Mosaic closing: ours turns mosaic/mixup off for the last ``close_mosaic=15`` epochs, i.e. for all
  10; the official closes it only at ``epoch == epochs - close_mosaic``, so ``--close-mosaic`` here
  defaults to ``min(15, epochs)`` (closed from epoch 0, the same augmentation as ours). With any
  ``--close-mosaic`` the official uses a plain ``DataLoader`` (workers forked again every epoch)
  instead of its persistent ``InfiniteDataLoader``; ours keeps persistent workers.
* The official rounds the fresh model to fp16 precision once (``model.half().float()``) before
  training; ours does not.
* Final validation: the official validates ``best.pt`` fused (``attempt_load(fuse=True)``, BN folded
  into the convs) with per-class output; ours validates best.pt unfused. Per-epoch validation is
  the same in both (EMA model, conf 0.001, IoU 0.7, max_det 300, multi-label NMS, val batch 32, rect
  batches with pad 0.5, val losses computed).
* Plots and logging: this run uses ``--noplots``; ``yolov9k train`` plots by default (train batch
  images, results.png, PR curve and confusion matrix after the final validation), so time ours
  with ``benchmarks/train_run.py --no-plots`` for a like-for-like row (or note the difference). The
  official also writes TensorBoard events every epoch and prints per-class metrics at the end, and
  besides ``last.pt``/``best.pt`` (fp16 model, EMA, optimizer) it writes ``*_striped.pt`` copies.
* The same by construction (checked in the code): SGD nesterov with the three groups (biases, decayed
  weights, norm weights), lr0 0.01, lrf 0.01 linear, momentum 0.937, weight decay 5e-4, warm-up
  ``max(round(1 * 15), 100) = 100`` iterations (6.7 epochs of 15 batches in both: the 100-iteration
  floor), warm-up bias LR 0.1 / momentum 0.8, clip-grad 10, EMA 0.9999 / tau 2000, seed 0 and
  deterministic algorithms, hyp.scratch-high augmentation, validation every epoch. Random streams
  differ (data order, augmentation, init), so mAP50 is comparable only in distribution.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ultralytics_run import copy_dataset, format_table  # shared with the other peer (stdlib-only module)

# (file, original text, patched text, why). Applied to the official copy by exact replacement;
# a file that already holds the patched text is left alone, so applying twice is a no-op.
PATCHES: list[tuple[str, str, str, str]] = [
    (
        "utils/metrics.py",
        "ap = np.trapz(np.interp(x, mrec, mpre), x)",
        "ap = (np.trapezoid if hasattr(np, 'trapezoid') else np.trapz)(np.interp(x, mrec, mpre), x)",
        "numpy 2.x removed np.trapz (np.trapezoid is the same integral)",
    ),
    (
        "models/experimental.py",
        "ckpt = torch.load(attempt_download(w), map_location='cpu')",
        "ckpt = torch.load(attempt_download(w), map_location='cpu', weights_only=False)",
        "torch >= 2.6 loads weights_only by default and refuses the official pickled checkpoints "
        "(attempt_load: final validation of best.pt)",
    ),
    (
        "utils/general.py",
        "x = torch.load(f, map_location=torch.device('cpu'))",
        "x = torch.load(f, map_location=torch.device('cpu'), weights_only=False)",
        "same for strip_optimizer at the end of training",
    ),
    (
        "train.py",
        "nbs = 64  # nominal batch size",
        "nbs = int(os.environ.get('YOLOV9_BENCH_NBS', 64))  # nominal batch size (benchmark patch)",
        "nominal batch size hard-coded to 64; the demo command uses --nbs 16",
    ),
]


def apply_patches(official: Path) -> list[str]:
    """Patch the official work tree in place (idempotent); returns one line per patch."""
    done = []
    for rel, old, new, why in PATCHES:
        f = official / rel
        text = f.read_text()
        if new in text:
            state = "already applied"
        elif text.count(old) == 1:
            f.write_text(text.replace(old, new))
            state = "applied"
        else:
            raise RuntimeError(f"patch for {rel} does not apply ({text.count(old)} matches of {old!r})")
        done.append(f"{rel}: {state} ({why})")
    return done


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", required=True, help="work tree of WongKinYiu/yolov9 (patched in place)")
    p.add_argument("--official-commit", default="5b1ea9a", help="recorded in the JSON only")
    p.add_argument("--python", default=sys.executable, help="python of the venv that runs the official code")
    p.add_argument("--data", default="~/.cache/yolov9k/demo", help="demo data folder (or its yaml)")
    p.add_argument("--cfg", default="models/detect/gelan-t.yaml", help="model yaml, relative to --official")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--nbs", type=int, default=16)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--close-mosaic", type=int, default=None, help="default min(15, epochs): as ours")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in the child")
    p.add_argument("--keep", default=None, help="keep the run folder here (default: a deleted temp folder)")
    p.add_argument("--out", default=None, help="write the timing JSON here")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)  # internal: the child's JSON path
    return p.parse_args(argv)


# ---- child: runs in --python, inside the official work tree ---------------------------------------------


def _data_yaml(data: Path) -> Path:
    if data.is_dir():
        ys = sorted(data.glob("*.yaml"))
        if len(ys) != 1:
            raise SystemExit(f"{data}: expected one dataset yaml, found {[y.name for y in ys]}")
        return ys[0]
    return data


class EpochClock:
    """Official ``Callbacks`` hooks that split each epoch's wall-clock (same fields as ultralytics_run)."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []
        self.cur: dict = {}
        self.t_last = self.t_start = self.t_batch = self.t_train_end = self.t_val = self.t_fit_end = 0.0
        self.t_first_epoch = self.t_last_save = self.t_end = None
        self.final_results: list[float] | None = None

    def epoch_start(self) -> None:
        now = time.perf_counter()
        if self.t_first_epoch is None:
            self.t_first_epoch = now
        self.cur = {"epoch": len(self.epochs), "data": 0.0, "step": 0.0, "batches": 0}
        self.t_start = self.t_last = now

    def batch_start(self) -> None:
        now = time.perf_counter()
        self.cur["data"] += now - self.t_last
        self.t_batch = now

    def batch_end(self, *args, **kwargs) -> None:
        now = time.perf_counter()
        self.cur["step"] += now - self.t_batch
        self.cur["batches"] += 1
        self.t_last = now

    def train_epoch_end(self, *args, **kwargs) -> None:
        self.t_train_end = time.perf_counter()
        self.cur["tail"] = self.t_train_end - self.t_last  # loader's StopIteration, scheduler.step

    def val_start(self) -> None:
        self.t_val = time.perf_counter()

    def fit_epoch_end(self, log_vals, epoch, best_fitness, fi) -> None:
        if not self.cur:
            return
        self.t_fit_end = time.perf_counter()
        # on_val_end runs only with plots: ``val`` = validation start to on_fit_epoch_end (+ fitness)
        self.cur["val"] = self.t_fit_end - self.t_val
        # log_vals = 3 train losses + (P, R, mAP50, mAP50-95, 3 val losses) + 3 LRs
        self.cur["map50_cb"] = float(log_vals[5])

    def model_save(self, *args, **kwargs) -> None:  # the end of an epoch: after validation, csv/tb, save
        if not self.cur:
            return
        now = time.perf_counter()
        self.cur["save"] = now - self.t_fit_end
        self.cur["val_save"] = now - self.t_train_end
        self.cur["wall"] = now - self.t_start
        self.cur["other"] = self.cur["wall"] - self.cur["data"] - self.cur["step"] - self.cur["val_save"]
        self.epochs.append(self.cur)
        self.cur = {}
        self.t_last_save = now

    def train_end(self, last, best, epoch, results) -> None:
        self.t_end = time.perf_counter()
        self.final_results = [float(x) for x in results]

    def attach(self, callbacks) -> None:
        for hook, fn in (
            ("on_train_epoch_start", self.epoch_start),
            ("on_train_batch_start", self.batch_start),
            ("on_train_batch_end", self.batch_end),
            ("on_train_epoch_end", self.train_epoch_end),
            ("on_val_start", self.val_start),
            ("on_fit_epoch_end", self.fit_epoch_end),
            ("on_model_save", self.model_save),
            ("on_train_end", self.train_end),
        ):
            callbacks.register_action(hook, name="bench", callback=fn)


def read_results_csv(path: Path) -> list[dict[str, float]]:
    """results.csv of the official Loggers (space-padded header and cells) as a list of dicts."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    keys = [k.strip() for k in lines[0].split(",")]
    rows = []
    for ln in lines[1:]:
        vals = [v.strip() for v in ln.split(",")]
        rows.append({k: float(v) for k, v in zip(keys, vals) if k and v})
    return rows


def child(args: argparse.Namespace) -> None:
    official = Path(args.official).resolve()
    tmp = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="official-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        _child_run(args, official, tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _child_run(args: argparse.Namespace, official: Path, tmp: Path) -> None:
    load_before = os.getloadavg()[0]
    # Config dir with a stand-in Arial.ttf: check_dataset() would otherwise download it (no network).
    import matplotlib

    cfg_dir = tmp / "config"
    cfg_dir.mkdir(exist_ok=True)
    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    shutil.copy(font, cfg_dir / "Arial.ttf")
    os.environ["YOLOV5_CONFIG_DIR"] = str(cfg_dir)
    os.environ["YOLOV9_BENCH_NBS"] = str(args.nbs)
    for k, v in {"WANDB_MODE": "disabled", "COMET_MODE": "disabled", "CLEARML_OFFLINE_MODE": "1"}.items():
        os.environ.setdefault(k, v)
    os.chdir(official)
    sys.path.insert(0, str(official))

    import yaml

    data = copy_dataset(_data_yaml(Path(args.data).expanduser()), tmp / "data")
    hyp = yaml.safe_load((official / "data/hyps/hyp.scratch-high.yaml").read_text())
    hyp["warmup_epochs"] = args.warmup_epochs
    hyp_file = tmp / "hyp.yaml"
    hyp_file.write_text(yaml.safe_dump(hyp, sort_keys=False))
    close_mosaic = min(15, args.epochs) if args.close_mosaic is None else args.close_mosaic

    import torch

    torch.set_num_threads(args.threads)
    import train as official_train  # the official train.py (patched)
    import utils.loggers as official_loggers
    from utils.callbacks import Callbacks

    torch.set_num_threads(args.threads)  # again, in case an import changed it (none does here)
    official_loggers.wandb = official_loggers.clearml = official_loggers.comet_ml = None  # no network
    argv = [
        "--cfg", str(official / args.cfg), "--weights", "", "--data", str(data), "--hyp", str(hyp_file),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch), "--imgsz", str(args.imgsz),
        "--device", "cpu", "--workers", str(args.workers), "--close-mosaic", str(close_mosaic),
        "--project", str(tmp / "runs"), "--name", "bench", "--exist-ok", "--noplots", "--seed", "0",
    ]  # fmt: skip
    sys.argv = ["train.py", *argv]
    opt = official_train.parse_opt()
    callbacks = Callbacks()
    clock = EpochClock()
    clock.attach(callbacks)
    t0 = time.perf_counter()
    official_train.main(opt, callbacks)
    wall = time.perf_counter() - t0

    rows = read_results_csv(tmp / "runs" / "bench" / "results.csv")
    for e, row in zip(clock.epochs, rows):
        e["map50"] = row.get("metrics/mAP_0.5")
        e["map50_95"] = row.get("metrics/mAP_0.5:0.95")
    keys = ("wall", "data", "step", "val_save", "val", "save", "other", "batches")
    total = {k: sum(e[k] for e in clock.epochs) for k in keys}
    maps = [e["map50"] for e in clock.epochs if e.get("map50") is not None]
    fr = clock.final_results
    final = {"precision": fr[0], "recall": fr[1], "map50": fr[2], "map50_95": fr[3]} if fr else {}
    result = {
        "tool": "official",
        "options": {k: v for k, v in vars(args).items() if k != "_child"} | {"close_mosaic": close_mosaic},
        "train_argv": argv,
        "patches": [f"{rel}: {why}" for rel, _, _, why in PATCHES],
        "env": {
            "official_commit": args.official_commit, "torch": torch.__version__,
            "numpy": __import__("numpy").__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_before": load_before,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "wall_s": wall,
        "setup_s": (clock.t_first_epoch - t0) if clock.t_first_epoch else None,
        "finish_s": (clock.t_end - clock.t_last_save) if clock.t_end and clock.t_last_save else None,
        "epochs": clock.epochs,
        "total": total,
        "best_map50": max(maps) if maps else None,
        "final_metrics": final,
    }  # fmt: skip
    Path(args._child).write_text(json.dumps(result, indent=1, default=str))


# ---- parent ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args._child:
        child(args)
        return {}
    official = Path(args.official).resolve()
    for line in apply_patches(official):
        print(f"patch {line}")
    with tempfile.TemporaryDirectory(prefix="official-json-") as tmp:
        raw = Path(tmp) / "child.json"
        cmd = [args.python, str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])]
        cmd += ["--_child", str(raw)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True)
        process_wall = time.perf_counter() - t0
        result = json.loads(raw.read_text())
    result["process_wall_s"] = process_wall  # the child process: interpreter start, imports, run, exit
    print(format_table(result["epochs"], result["total"], result["best_map50"]))
    print(
        f"whole run {result['wall_s']:.1f} s (process {process_wall:.1f} s), setup {result['setup_s']:.1f} s,"
        f" final {result['finish_s']:.1f} s, best mAP50 {result['best_map50']},"
        f" final {result['final_metrics']}"
    )
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
