"""The training loop: one :class:`Trainer` for GELAN and YOLOv9 (PGI changes only the model and loss).

Reading order: :func:`train` (the public entry point), then :class:`Trainer` whose methods follow
a run: ``setup`` (device, DDP, data, model, optimizer, resume state) -> ``fit`` (epochs of
``train_epoch`` -> ``validate_epoch`` -> ``save``) -> ``finish`` (final validation of best.pt and
plots). Subclasses override single steps; callbacks (``add_callback``) observe them.

What a run writes, in ``<project>/<name>/`` (``runs/train/<name>/`` by default): ``args.yaml``,
``weights/last.pt`` and ``weights/best.pt`` (atomic, ``torch.load(weights_only=True)``-readable:
model, EMA, optimizer, GradScaler, epoch, best fitness, RNG states and the args), ``results.csv`` (one
row per epoch), and at the end the plots. A run holds ``.lock`` in its folder while it runs: a second run
of the same folder (``--exist-ok``, ``--resume``) is refused in one line; a new run in a reused folder
moves the old ``results.csv`` aside (``results.1.csv``, ...) and starts a fresh one.

A run never saves non-finite numbers: a skipped step whose forward pass left NaN/inf in the BatchNorm
statistics, or weights or buffers that are NaN/inf at the end of an epoch, stop it with one line
(``TrainingDivergedError``) and ``last.pt`` keeps the last good epoch.

Resume is exact: the LR schedule is a pure function of the epoch and the iteration, augmentations are
a function of (seed, epoch, index), and the checkpoint holds every other piece of state, so N epochs
in one go and k epochs + resume give the same weights (deterministic mode, CPU).
"""

from __future__ import annotations

import csv
import datetime
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from yolov9k.checkpoint import load_checkpoint, load_model, non_finite_entries, save_checkpoint
from yolov9k.data import (
    YoloDataset,
    build_dataloader,
    ensure_demo_dataset,
    load_dataset_config,
    require_boxes,
)
from yolov9k.data.splits import load_split, round_imgsz
from yolov9k.engine import distributed as ddp
from yolov9k.engine.ema import ModelEMA
from yolov9k.engine.optim import (
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    lr_factor,
    set_epoch_lr,
    warmup_iterations,
)
from yolov9k.engine.plots import plot_batch, plot_results
from yolov9k.engine.validate import validate
from yolov9k.errors import ConfigError, InputError, InputNotFoundError, TrainingDivergedError
from yolov9k.io.files import atomic_write_text, make_output_dir, remove_stale_temp_files
from yolov9k.loss import DetectionLoss, ddp_normalizer
from yolov9k.models import MODELS, accelerate, build_model
from yolov9k.options import DEFAULTS, PATH_OPTIONS, hyp_from_config, resolve_config
from yolov9k.run_setup import (
    RunFolderLock,
    default_project,
    one_line_worker_error,
    run_dir,
    select_device,
    use_channels_last,
)

__all__ = ["train", "Trainer", "TRAINER_STATE_VERSION", "RESUME_OVERRIDABLE", "find_last_run"]

LOGGER = logging.getLogger("yolov9k")
TRAINER_STATE_VERSION = 1  # layout of the trainer entries in last.pt
RESUME_OVERRIDABLE = frozenset(
    {"epochs", "device", "workers", "verbose", "plots", "val", "val_period", "dist_timeout"}
    | {"max_nan_skips", "save_period"}
)
_EVENTS = (
    "on_pretrain_end",
    "on_train_epoch_start",
    "on_train_batch_end",
    "on_fit_epoch_end",
    "on_model_save",
    "on_train_end",
)
CSV_LOSS = ("box_loss", "cls_loss", "dfl_loss")


def train(
    model: str | os.PathLike = "gelan-t",
    data: str | os.PathLike | dict | None = None,
    epochs: int = 100,
    imgsz: int = 640,
    batch: int = 16,
    device: str | None = None,
    workers: int = 8,
    project: str | os.PathLike | None = None,
    name: str | None = None,
    resume: bool | str | os.PathLike = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a detection model; returns ``{"save_dir", "metrics", "best_fitness", ...}``.

    Args:
        model: zoo name (``yolov9k.MODELS``), model yaml, or a checkpoint to start from.
        data: dataset yaml/dict; None = the generated demo data set (``ensure_demo_dataset()``).
        epochs, imgsz, batch, device, workers, project, name: see ``yolov9k.options.TRAIN_OPTIONS``.
        resume: path to a run's ``last.pt`` (or True for the latest run's) to continue it exactly;
            ``epochs=`` larger than the run's extends a finished run.
        **overrides: any other training option (``yolov9k.options.TRAIN_OPTIONS``, hyperparameters
            included; ``docs/options.md``), e.g. ``lr0=0.02``, ``amp="bf16"``, ``close_mosaic=0``.

    Raises:
        OptionError: an unknown option (with suggestions), a value out of its range or an option with
            no effect in YOLOv9, before any work. Other ``Yolov9kError``: bad data, model or run.

    Example:
        >>> r = train(model="gelan-t", epochs=3, imgsz=320, batch=16)
        >>> r["metrics"]["map50_95"], r["save_dir"]
    """
    given = dict(
        model=model, data=data, epochs=epochs, imgsz=imgsz, batch=batch, device=device,
        workers=workers, project=project, name=name, resume=resume, **overrides,
    )  # fmt: skip
    return Trainer(given).fit()


def find_last_run(project: str | os.PathLike | None = None) -> Path:
    """The most recently written ``<project>/*/weights/last.pt`` (project None = ``runs/train``)."""
    root = default_project("train") if project is None else Path(project).expanduser()
    runs = sorted(root.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise InputNotFoundError(f"resume=True: no {root / '*/weights/last.pt'} to resume")
    return runs[-1]


def _absolute_data_path(data: Any) -> Any:
    """A dataset YAML path made absolute (resume must not depend on the working directory)."""
    if isinstance(data, str) and Path(data).expanduser().is_file():
        return str(Path(data).expanduser().resolve())
    return data


def _same_option(key: str, value: Any, saved: Any) -> bool:
    """Whether an option given on resume equals the run's: paths compare by what they point at."""
    if value == saved:
        return True
    if key in PATH_OPTIONS and isinstance(value, str) and isinstance(saved, str):
        return Path(value).expanduser().resolve() == Path(saved).expanduser().resolve()
    return False


def _is_lost_relative_path(saved: Any) -> bool:
    """A relative data path stored by an older run that does not resolve from this directory."""
    return isinstance(saved, str) and not Path(saved).expanduser().is_absolute() and not Path(saved).exists()


def _plain(value: Any) -> Any:
    """Args as yaml/checkpoint-safe plain values."""
    if isinstance(value, os.PathLike):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": _plain(random.getstate()),
        "numpy": {k: (torch.from_numpy(v.copy()) if isinstance(v, np.ndarray) else v)
                  for k, v in zip(("kind", "keys", "pos", "has_gauss", "cached"), np.random.get_state())},
    }  # fmt: skip
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy(), int(n["pos"]), int(n["has_gauss"]), float(n["cached"]))
    )
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed for the global RNGs of one epoch on one rank (resume re-creates it from the epoch)."""
    return int(np.random.SeedSequence([seed, epoch, max(rank, 0)]).generate_state(1)[0])


def _setup_logging() -> None:
    """Show INFO lines of the ``yolov9k`` logger when the application configured no logging."""
    if not LOGGER.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.INFO)


class Trainer:
    """Trains a DetectionModel per a resolved config (see :func:`train` and ``yolov9k.options``).

    Attributes set by :meth:`setup` (for callbacks and subclasses): ``args`` (flat config dict),
    ``device``, ``dist`` (DistInfo), ``model`` (the training module, maybe DDP/compiled),
    ``net`` (the unwrapped DetectionModel), ``ema``, ``optimizer``, ``scaler``, ``loss_fn``,
    ``train_loader``, ``val_loader``, ``save_dir``, ``epoch``, ``start_epoch``, ``best_fitness``,
    ``nan_skips``, ``channels_last`` (the memory format used, ``"auto"`` resolved), ``metrics`` (last
    validation; empty after an epoch without one), and per batch
    ``mloss`` (the epoch's running mean loss items, a tensor on ``device``).
    """

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        checked = resolve_config(overrides)  # every option checked before anything is read or made
        self.resume_ckpt: dict[str, Any] | None = None
        if checked["resume"]:
            self.args = self._resume_args(checked)
        else:
            self.args = checked
            self.args["data"] = _absolute_data_path(self.args["data"])
        self.callbacks: dict[str, list[Callable[[Trainer], None]]] = {e: [] for e in _EVENTS}
        self.metrics: dict[str, Any] = {}
        self.nan_skips = 0
        self.best_fitness = 0.0
        self.best_epoch = -1
        self.start_epoch = 0
        self.epoch = 0
        self.last_opt_step = -1
        self._is_setup = False
        self._lock: RunFolderLock | None = None

    # ---- configuration -----------------------------------------------------------------------------------
    def _resume_args(self, checked: dict[str, Any]) -> dict[str, Any]:
        """The run's saved args, updated with the options (``checked``: resolved) that resume allows to
        change (others must not)."""
        resume = checked["resume"]
        path = find_last_run(checked["project"]) if resume is True else Path(resume)
        ckpt = load_checkpoint(path)
        if ckpt.get("trainer_version") is None or "optimizer" not in ckpt:
            raise InputError(f"{path} has no trainer state (optimizer, epoch): it cannot be resumed")
        # The run's own args (already resolved when it started: its hyp file is not read again, and
        # entries of older versions that are no options now, such as obj or iou_t, are dropped).
        run_args = {k: v for k, v in ckpt["args"].items() if k in DEFAULTS and k not in ("resume", "hyp")}
        saved = {**resolve_config(run_args), "hyp": ckpt["args"].get("hyp")}
        changed = {}
        for key, value in checked.items():
            # a key counts as given when it differs from both the default and the run's value
            if key == "resume" or value == DEFAULTS[key] or _same_option(key, value, saved[key]):
                continue
            if key == "data" and _is_lost_relative_path(saved[key]):  # a run from before issue 13
                changed[key] = _absolute_data_path(value)
                continue
            if key not in RESUME_OVERRIDABLE:
                raise ConfigError(
                    f"resume: option {key}={value!r} differs from the run's {saved[key]!r}; only "
                    f"{sorted(RESUME_OVERRIDABLE)} can change on resume (start a new run for the rest)"
                )
            changed[key] = value
        args = {**saved, **changed, "resume": str(path)}
        if ckpt["epoch"] + 1 >= args["epochs"]:
            raise ConfigError(
                f"{path}: training to {args['epochs']} epochs is complete (last epoch {ckpt['epoch'] + 1}); "
                f"pass epochs=N > {ckpt['epoch'] + 1} to extend it"
            )
        self.resume_ckpt = ckpt
        self.resume_path = path
        return args

    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` at ``event`` (one of ``_EVENTS``)."""
        if event not in self.callbacks:
            raise ValueError(f"unknown event {event!r}; expected one of {_EVENTS}")
        self.callbacks[event].append(fn)

    def run_callbacks(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)

    @property
    def is_main(self) -> bool:
        return self.dist.is_main

    def log(self, msg: str) -> None:
        if self.is_main and self.args["verbose"]:
            LOGGER.info(msg)

    # ---- setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Device, process group, seeds, data, model, optimizer, EMA, and the resume state."""
        if self._is_setup:
            return
        a = self.args
        if a["verbose"]:
            _setup_logging()
        self.device = select_device(a["device"])
        self.dist = ddp.dist_info()
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        ddp.init_distributed(self.device, a["dist_timeout"])
        if a["batch"] % self.dist.world_size:
            raise ConfigError(f"batch={a['batch']} must be a multiple of WORLD_SIZE={self.dist.world_size}")
        self.batch_local = a["batch"] // self.dist.world_size
        self._setup_determinism()
        _seed_everything(a["seed"])  # the same initial weights on every rank and in a single process
        self.hyp = hyp_from_config(a)
        self._setup_amp()
        self.setup_data_config()
        self.setup_model()
        self.setup_dataloaders()
        self.setup_save_dir()  # after every check of data and model: a failed start leaves no run folder
        self.setup_optimizer()
        reduce = ddp_normalizer if self.dist.enabled else None
        self.loss_fn = DetectionLoss(self.net, self.hyp, tss_reduce=reduce)
        self.val_loss_fn = DetectionLoss(self.net, self.hyp)
        if self.resume_ckpt is not None:
            self.load_resume_state(self.resume_ckpt)
            self.resume_ckpt = None
        self.wrap_model()
        self._is_setup = True
        self.run_callbacks("on_pretrain_end")

    def _setup_determinism(self) -> None:
        self._prev_deterministic = torch.are_deterministic_algorithms_enabled()
        if self.args["deterministic"]:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            if torch.backends.cudnn.is_available():
                torch.backends.cudnn.benchmark = False

    def _setup_amp(self) -> None:
        amp, cuda = self.args["amp"], self.device.type == "cuda"
        if amp == "auto":
            amp = "fp16" if cuda else False
        if amp == "fp16" and not cuda:
            raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' (or False) on CPU")
        self.amp = amp
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp) if amp else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def setup_save_dir(self) -> None:
        a = self.args
        if a["resume"]:
            save_dir = Path(self.resume_path).resolve().parent.parent
        elif self.is_main:
            save_dir = run_dir(a["project"], "train", a["name"], exist_ok=a["exist_ok"]).resolve()
        else:
            save_dir = None
        self.save_dir = Path(str(ddp.broadcast_object(str(save_dir) if save_dir else None)))
        self.weights_dir = self.save_dir / "weights"
        self.last, self.best = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        self.csv = self.save_dir / "results.csv"
        if self.is_main:
            self._lock = RunFolderLock(self.save_dir)  # RunFolderBusy (one line) if another run has it
            if not a["resume"]:
                self._move_old_results_aside()
            make_output_dir(self.weights_dir, "weights folder")
            self._remove_stale_temp_files()
            args = {k: _plain(v) for k, v in a.items()}
            args["save_dir"] = str(self.save_dir)
            atomic_write_text(self.save_dir / "args.yaml", yaml.safe_dump(args, sort_keys=False))

    def _move_old_results_aside(self) -> None:
        """A reused run folder (``exist_ok``) starts a fresh results.csv; the old one becomes
        ``results.<k>.csv`` with the first free k."""
        if not self.csv.exists():
            return
        k = 1
        while (self.save_dir / f"results.{k}.csv").exists():
            k += 1
        aside = self.save_dir / f"results.{k}.csv"
        os.replace(self.csv, aside)
        self.log(f"{self.save_dir} is reused: the earlier run's results.csv is now {aside.name}")

    def setup_data_config(self) -> None:
        data = self.args["data"]
        if data is None:
            data = str(ensure_demo_dataset()) if self.is_main else None
            data = ddp.broadcast_object(data)
            self.args["data"] = data
        self.data_cfg = load_dataset_config(data)
        self.names = dict(self.data_cfg.names)
        self.nc = self.data_cfg.nc

    def setup_model(self) -> None:
        """Build (or load) the model for ``nc`` classes; ``net`` is the plain DetectionModel."""
        a = self.args
        spec, nc = a["model"], self.nc
        if self.resume_ckpt is not None:
            _check_resume_nc(self.resume_path, int(self.resume_ckpt["nc"]), nc, a["data"])
            net = build_model(self.resume_ckpt["cfg"], num_classes=nc)
        elif (
            str(spec) not in MODELS
            and Path(str(spec)).suffix in (".pt", ".pth")
            and Path(str(spec)).is_file()
        ):
            net = load_model(spec, num_classes=nc)
        else:
            net = build_model(spec, num_classes=nc)
        if a["pretrained"] and self.resume_ckpt is None:
            src = load_model(a["pretrained"], num_classes=nc, cfg=net.cfg)
            net.load_state_dict(src.state_dict())
            self.log(f"weights from {a['pretrained']}")
        net.names = dict(self.names)
        net.hyp = self.hyp
        net = net.to(self.device).float().train()
        self.channels_last = use_channels_last(a["channels_last"], self.device)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        # The fused ops where they were measured faster (benchmarks/RESULTS.md, issue 14): the C++
        # BN + SiLU on CPU, the Triton kernels on CUDA. Same parameters and state-dict keys (checkpoints
        # stay the plain model); YOLOV9K_BACKEND=torch runs the plain PyTorch forward.
        self.net = accelerate(net)
        self.grid = max(int(net.stride.max()), 32)
        self.imgsz = round_imgsz(a["imgsz"], self.grid)
        if self.imgsz != a["imgsz"]:
            self.log(
                f"imgsz {a['imgsz']} rounded up to {self.imgsz} (a multiple of the max stride {self.grid})"
            )

    def _samples(self, split: str) -> list:
        where = f"dataset {self.args['data']}"
        samples, stats = load_split(self.data_cfg, split, where, cache_dir=self.args["cache_dir"])
        self.log(f"{split}: {len(samples)} images, {stats.summary()}")
        warning = require_boxes(stats, f"dataset {self.args['data']}: {split}", self.args["background_only"])
        if warning:
            LOGGER.warning(warning)
        return samples

    def setup_dataloaders(self) -> None:
        a = self.args
        if self.dist.enabled and not self.is_main:
            ddp.barrier("label scan of rank 0")  # rank 0 scans first and writes the label cache
        train_samples = self._samples("train")
        val_samples = self._samples("val") if self.is_main else None
        if self.dist.enabled and self.is_main:
            ddp.barrier("label scan of rank 0")
        self.train_set = YoloDataset(
            train_samples, self.imgsz, augment=True, hyp=self.hyp, rect=a["rect"],
            batch_size=self.batch_local, stride=self.grid, pad=0.0, seed=a["seed"], cache=a["cache"],
            cache_dir=a["cache_dir"],
        )  # fmt: skip
        self.train_loader = build_dataloader(
            self.train_set,
            self.batch_local,
            a["workers"],
            shuffle=not a["rect"],
            seed=a["seed"],
            rank=self.dist.rank,
            pin_memory=self.device.type == "cuda",
        )
        self.val_loader = None
        if self.is_main:
            val_set = YoloDataset(
                val_samples, self.imgsz, augment=False, hyp=self.hyp, rect=True,
                batch_size=self.batch_local * 2, stride=self.grid, pad=0.5, seed=a["seed"],
                cache=a["cache"], cache_dir=a["cache_dir"],
            )  # fmt: skip
            self.val_loader = build_dataloader(
                val_set,
                self.batch_local * 2,
                a["workers"],
                shuffle=False,
                rank=-1,
                pin_memory=self.device.type == "cuda",
            )
        self.nb = len(self.train_loader)

    def setup_optimizer(self) -> None:
        a, hyp = self.args, self.hyp
        self.accumulate_nominal = accumulate_steps(a["nbs"], a["batch"])
        self.accumulate = self.accumulate_nominal
        weight_decay = hyp["weight_decay"] * a["batch"] * self.accumulate_nominal / a["nbs"]
        self.optimizer = build_optimizer(self.net, a["optimizer"], hyp["lr0"], hyp["momentum"], weight_decay)
        self.lf = lr_factor(a["epochs"], hyp["lrf"], cosine=a["cos_lr"])
        self.nw = warmup_iterations(hyp["warmup_epochs"], self.nb)
        self.ema = ModelEMA(self.net, decay=a["ema_decay"], tau=a["ema_tau"]) if self.is_main else None

    def load_resume_state(self, ckpt: dict[str, Any]) -> None:
        """Model, EMA, optimizer, scaler, counters and RNG states from a ``last.pt``."""
        self.net.load_state_dict(ckpt["state_dict"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"], ckpt["ema_updates"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.best_fitness = float(ckpt["best_fitness"])
        self.best_epoch = int(ckpt.get("best_epoch", -1))
        self.last_opt_step = int(ckpt["last_opt_step"])
        self.nan_skips = int(ckpt.get("nan_skips", 0))
        if ckpt.get("rng") is not None:
            _set_rng_state(ckpt["rng"])
        self._truncate_csv(self.start_epoch)
        self.log(f"resuming {self.resume_path} from epoch {self.start_epoch} to {self.args['epochs']}")

    def wrap_model(self) -> None:
        """DDP (with optional SyncBN) and torch.compile around ``net``; ``model`` is what is called."""
        a, model = self.args, self.net
        if a["sync_bn"] and not self.dist.enabled and self.is_main:
            LOGGER.warning("sync_bn=True has no effect in a single process (it acts in torchrun DDP runs)")
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            if a["sync_bn"]:
                if self.device.type != "cuda":
                    raise ConfigError("sync_bn=True needs CUDA devices (torch's SyncBatchNorm is CUDA-only)")
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.net = model
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=ids, output_device=ids[0] if ids else None)
        if a["compile"]:
            model = torch.compile(model)
        self.model = model

    # ---- training ----------------------------------------------------------------------------------------
    def preprocess(self, imgs: torch.Tensor) -> torch.Tensor:
        """uint8 (B,3,H,W) -> float 0-1 on the device (NHWC with channels_last)."""
        x = imgs.to(self.device, non_blocking=True).float() / 255
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def compute_loss(self, imgs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward + loss of one batch: (total loss for backward, detached items [box, cls, dfl])."""
        with self.autocast():
            preds = self.model(self.preprocess(imgs))
            loss, items = self.loss_fn(preds, targets)  # CPU targets: the loss makes no device sync
        if self.dist.enabled:
            loss = loss * self.dist.world_size  # DDP averages gradients over ranks
        return loss, items

    def forward_backward(self, imgs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Loss and backward of one batch; a non-finite loss (on any rank) skips the backward.

        Returns (items, finite).
        """
        loss, items = self.compute_loss(imgs, targets)
        # The one host sync a step keeps on purpose: a NaN/inf loss must not reach backward, where its
        # gradients would join those accumulated from the other batches of the optimizer step (and,
        # under DDP, every rank's) and cost all of them; checked here, only this batch is dropped.
        bad = not bool(torch.isfinite(loss).item())
        if self.dist.enabled:
            bad = ddp.any_rank_failed(bad, "loss check")
        if bad:
            self._skip(f"non-finite loss {loss.item()} at epoch {self.epoch}")
            return items, False
        self.scaler.scale(loss).backward()
        return items, True

    def _skip(self, why: str) -> None:
        self.nan_skips += 1
        self.log(f"WARNING: {why}: step skipped ({self.nan_skips} so far)")
        # the forward pass of the skipped batch has already updated the BatchNorm running statistics
        bad = non_finite_entries(dict(self.net.named_buffers()))
        if bad:
            raise TrainingDivergedError(
                self._diverged("NaN/inf BatchNorm statistics after a skipped step", bad)
            )
        if self.nan_skips > self.args["max_nan_skips"]:
            raise TrainingDivergedError(
                f"{self.nan_skips} steps skipped for non-finite losses/gradients (max_nan_skips="
                f"{self.args['max_nan_skips']}); training diverged - lower lr0 or check the data. "
                f"The last complete epoch is in {self.last}"
            )

    def _diverged(self, what: str, names: list[str]) -> str:
        """The one-line message of a run stopped for non-finite numbers."""
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        kept = f"{self.last} keeps the last good epoch" if self.last.is_file() else "nothing was saved"
        return (
            f"training diverged in epoch {self.epoch + 1}: {what} ({', '.join(names[:3])}{more}); {kept}. "
            "Lower lr0 or check the data"
        )

    def check_finite(self) -> None:
        """Stop the run (TrainingDivergedError, one line) when the model or its EMA holds NaN/inf weights
        or buffers: validating or saving them would only spread them."""
        bad = non_finite_entries(self.net) + non_finite_entries(self.ema.ema if self.ema else {}, "ema")
        if bad:
            raise TrainingDivergedError(self._diverged("NaN/inf in the weights or BatchNorm statistics", bad))

    def optimizer_step(self, ni: int) -> bool:
        """Unscale, clip (max norm ``clip_grad``), step, zero grads, update EMA. False when skipped."""
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.args["clip_grad"]
        if clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        stepped = True
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # skips inf/NaN gradients itself (and lowers the scale)
            self.scaler.update()
        elif bool(torch.isfinite(norm)):
            self.optimizer.step()
        else:
            stepped = False
            self._skip(f"non-finite gradient norm at epoch {self.epoch}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None and stepped:
            self.ema.update(self.net)
        self.last_opt_step = ni
        return stepped

    def train_epoch(self, epoch: int) -> list[float]:
        """One pass over the training set; returns the mean [box, cls, dfl] loss items."""
        a = self.args
        self.model.train()
        if a["close_mosaic"] and epoch >= a["epochs"] - a["close_mosaic"] and self.train_set.mosaic:
            self.log("closing dataloader mosaic")
            self.train_set.close_mosaic()
        self.train_loader.set_epoch(epoch)
        s = _epoch_seed(a["seed"], epoch, self.dist.rank)
        _seed_everything(s)
        set_epoch_lr(self.optimizer, self.lf, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        mloss = torch.zeros(3, device=self.device)  # stays on the device: read for progress lines only
        n_ok = pending = 0
        progress = _Progress(self, epoch)
        for i, (imgs, targets, _files, _shapes) in enumerate(self.train_loader):
            ni = i + self.nb * epoch
            if ni <= self.nw:
                self.accumulate = apply_warmup(
                    self.optimizer, ni, self.nw, epoch, self.lf, self.hyp, a["nbs"], a["batch"]
                )
            else:
                self.accumulate = self.accumulate_nominal
            items, ok = self.forward_backward(imgs, targets)
            if ok:
                mloss = (mloss * n_ok + items.float()) / (n_ok + 1)
                n_ok += 1
            pending += int(ok)
            if ni - self.last_opt_step >= self.accumulate and pending:  # nothing to apply after skips only
                self.optimizer_step(ni)
                pending = 0
            if epoch == self.start_epoch and i < 3 and self.is_main and a["plots"]:
                plot_batch(imgs, targets, self.save_dir / f"train_batch{i}.jpg", self.names)
            self.batch_i, self.batch_size_now, self.mloss = i, imgs.shape[0], mloss
            progress.update(i, mloss, targets.shape[0], imgs.shape[-1])
            self.run_callbacks("on_train_batch_end")
        progress.close()
        self.lrs = [g["lr"] for g in self.optimizer.param_groups]
        return mloss.tolist()

    def val_due(self, epoch: int) -> bool:
        """Whether ``epoch`` (0-based) ends with a validation: with ``val``, every ``val_period``-th one."""
        return bool(self.args["val"]) and (epoch + 1) % self.args["val_period"] == 0

    def validate_epoch(self, final: bool) -> dict[str, Any]:
        """Validate the EMA model (rank 0) after the last epoch and when :meth:`val_due`; else ``{}``."""
        if not self.is_main or not (final or self.val_due(self.epoch)):
            return {}
        a = self.args
        return validate(
            self.ema.ema, self.val_loader, self.names, loss_fn=self.val_loss_fn, conf=a["conf"], iou=a["iou"],
            max_det=a["max_det"], device=self.device, half=bool(self.amp), channels_last=self.channels_last,
        )  # fmt: skip

    # ---- saving ------------------------------------------------------------------------------------------
    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        """Trainer entries of last.pt / best.pt (plain types and tensors only)."""
        m = self.metrics
        return {
            "trainer_version": TRAINER_STATE_VERSION,
            "ema": self.ema.ema,
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epoch,
            "best_fitness": float(self.best_fitness),
            "best_epoch": int(self.best_epoch),
            "last_opt_step": int(self.last_opt_step),
            "nan_skips": int(self.nan_skips),
            "rng": _rng_state(),
            "args": {k: _plain(v) for k, v in self.args.items()},
            "metrics": {
                k: float(m[k]) for k in ("map50_95", "map50", "precision", "recall", "fitness") if k in m
            },
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }

    def save(self, epoch: int, improved: bool) -> None:
        state = self.checkpoint_state(epoch)
        save_checkpoint(self.last, self.net, **state)
        if improved:
            save_checkpoint(self.best, self.net, **state)
        period = self.args["save_period"]
        if period > 0 and (epoch + 1) % period == 0:
            save_checkpoint(self.weights_dir / f"epoch{epoch + 1}.pt", self.net, **state)
        self._remove_stale_temp_files()
        self.run_callbacks("on_model_save")

    def _remove_stale_temp_files(self) -> None:
        """Temp files of saves killed midway (``.last.pt.<random>.tmp``): nothing else writes here."""
        for folder in (self.save_dir, self.weights_dir):
            for p in remove_stale_temp_files(folder, legacy=True):
                self.log(f"removed {p.name}, left by an interrupted save")

    def _csv_row(self, epoch: int, tloss: list[float], m: dict[str, Any]) -> dict[str, float]:
        vloss = m.get("loss") or [math.nan] * 3
        row = {"epoch": epoch + 1}
        row.update({f"train/{k}": v for k, v in zip(CSV_LOSS, tloss)})
        row.update({
            "metrics/precision": m.get("precision", math.nan), "metrics/recall": m.get("recall", math.nan),
            "metrics/mAP50": m.get("map50", math.nan), "metrics/mAP50-95": m.get("map50_95", math.nan),
        })  # fmt: skip
        row.update({f"val/{k}": v for k, v in zip(CSV_LOSS, vloss)})
        row.update({f"lr/pg{j}": lr for j, lr in enumerate(self.lrs)})
        row["nan_skips"] = self.nan_skips
        return row

    def write_csv(self, row: dict[str, float]) -> None:
        """Append ``row`` to results.csv (rewritten atomically)."""
        _, rows = _read_csv(self.csv)
        keys = list(row)
        lines = [",".join(keys)] + [",".join(r.get(k) or "" for k in keys) for r in rows]
        lines.append(",".join(_fmt(row[k]) for k in keys))
        atomic_write_text(self.csv, "\n".join(lines) + "\n")

    def _truncate_csv(self, start_epoch: int) -> None:
        """Drop rows of epochs > ``start_epoch`` (written after the checkpoint by a killed run) and rows
        without an epoch number (a damaged file: counted in a warning that names it)."""
        if not self.is_main or not self.csv.is_file():
            return
        keys, rows = _read_csv(self.csv)
        epochs = [_row_epoch(r) for r in rows]
        keep = [r for r, e in zip(rows, epochs) if e is not None and e <= start_epoch]
        damaged = epochs.count(None)
        if damaged:
            LOGGER.warning(f"WARNING: {self.csv}: {damaged} row(s) without an epoch number dropped")
        if len(keep) != len(rows):
            lines = [",".join(keys)] + [",".join(r.get(k) or "" for k in keys) for r in keep]
            atomic_write_text(self.csv, "\n".join(lines) + "\n")

    # ---- the run -----------------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        """Run the whole training; returns the summary dict of :func:`train`."""
        try:
            self.setup()
            return self._fit()
        finally:
            torch.use_deterministic_algorithms(getattr(self, "_prev_deterministic", False))
            ddp.destroy_distributed()
            if self._lock is not None:
                self._lock.release()

    def _fit(self) -> dict[str, Any]:
        a = self.args
        t0 = time.time()
        self.log(
            f"training {a['model']} on {a['data']}: {a['epochs']} epochs, imgsz {self.imgsz}, "
            f"batch {a['batch']} (x{self.accumulate_nominal} accumulation), device {self.device}"
            f"{f', {self.dist.world_size} ranks' if self.dist.enabled else ''}, amp {self.amp}, "
            f"{'channels_last' if self.channels_last else 'NCHW'}; "
            f"results in {self.save_dir}"
        )
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, a["epochs"]):
            self.epoch = epoch
            self.run_callbacks("on_train_epoch_start")
            failed: BaseException | None = None
            try:
                tloss = self.train_epoch(epoch)
                if self.is_main:
                    self.check_finite()
                    final = epoch + 1 == a["epochs"]
                    self.metrics = self.validate_epoch(final)
                    fi = float(self.metrics.get("fitness", 0.0))
                    improved = bool(self.metrics) and (fi > self.best_fitness or self.best_epoch < 0)
                    if improved:
                        self.best_fitness, self.best_epoch = fi, epoch
                    self.write_csv(self._csv_row(epoch, tloss, self.metrics))
                    self.save(epoch, improved)
                    self._log_epoch(epoch)
                    self.run_callbacks("on_fit_epoch_end")
            except BaseException as e:  # noqa: BLE001 - ranks must learn about it before re-raising
                failed = one_line_worker_error(e)  # a worker's traceback as one line
            if self.dist.enabled and ddp.any_rank_failed(failed is not None, f"end of epoch {epoch}"):
                if failed is None:
                    raise ddp.DistributedError(f"rank {self.dist.rank}: another rank failed in epoch {epoch}")
            if failed is not None:
                raise failed
            stop = bool(ddp.broadcast_object(self.out_of_patience(epoch)))
            if stop:
                best = self.best_epoch + 1
                self.log(f"no improvement since epoch {best} (patience {a['patience']}): stopping early")
                break
        return self.finish(epoch, time.time() - t0)

    def out_of_patience(self, epoch: int) -> bool:
        """Early stop after ``epoch``: it was validated and ``patience`` epochs passed since the best one.

        Counted in epochs (``best_epoch`` is in the checkpoint, so resume keeps the count); epochs
        without validation are never an improvement but cannot stop the run on their own.
        """
        p = self.args["patience"]
        return p > 0 and bool(self.metrics) and self.best_epoch >= 0 and epoch - self.best_epoch >= p

    def _log_epoch(self, epoch: int) -> None:
        m = self.metrics
        if m:
            self.log(
                f"{'':>11}{'val':>11}  P {m['precision']:.3f}  R {m['recall']:.3f}  mAP50 {m['map50']:.4f}  "
                f"mAP50-95 {m['map50_95']:.4f}  ({m['speed']['inference']:.1f} ms/img)"
            )

    def finish(self, epoch: int, seconds: float) -> dict[str, Any]:
        """Final validation of best.pt with plots (rank 0) and the summary."""
        a = self.args
        summary: dict[str, Any] = {
            "save_dir": self.save_dir,
            "metrics": {},
            "best_fitness": self.best_fitness,
        }
        if self.is_main:
            done = epoch - self.start_epoch + 1
            self.log(f"{done} epochs completed in {seconds / 3600:.3f} hours ({seconds:.1f} s)")
            metrics = self.metrics
            if self.best_epoch >= 0 and self.best.is_file():  # written by this run (or the one resumed)
                best_model = load_model(self.best, device=self.device)
                best_model.names = dict(self.names)
                metrics = validate(
                    best_model, self.val_loader, self.names, loss_fn=DetectionLoss(best_model, self.hyp),
                    conf=a["conf"], iou=a["iou"], max_det=a["max_det"], device=self.device,
                    plots_dir=self.save_dir if a["plots"] else None,
                )  # fmt: skip
            if a["plots"]:
                plot_results(self.csv)
            summary.update(
                metrics={k: v for k, v in metrics.items() if k not in ("pr_curve", "confusion_matrix")},
                best_epoch=self.best_epoch + 1,
                epochs_completed=epoch + 1,
                last=self.last,
                best=self.best,
                nan_skips=self.nan_skips,
                train_time_s=seconds,
            )
            m = summary["metrics"]
            self.log(
                f"best.pt (epoch {self.best_epoch + 1}): P {m.get('precision', 0):.3f} "
                f"R {m.get('recall', 0):.3f} mAP50 {m.get('map50', 0):.4f} "
                f"mAP50-95 {m.get('map50_95', 0):.4f}; results in {self.save_dir}"
            )
        self.run_callbacks("on_train_end")
        return summary


class _Progress:
    """tqdm bar per epoch on a TTY; otherwise a log line every ~10% of the epoch (and at its end).

    The running mean loss lives on the device: it is read (a host sync) only for a line that is
    shown, i.e. for the log lines, or at most every ``REFRESH_S`` seconds (and at the epoch's end)
    for the bar's description.
    """

    HEADER = ("Epoch", "GPU_mem", "box_loss", "cls_loss", "dfl_loss", "Instances", "Size")
    REFRESH_S = 0.5
    clock = staticmethod(time.monotonic)  # tests replace it

    def __init__(self, trainer: Trainer, epoch: int) -> None:
        self.t = trainer
        self.epoch_text = f"{epoch + 1}/{trainer.args['epochs']}"
        self.nb = trainer.nb
        self.active = trainer.is_main and trainer.args["verbose"]
        self.bar = None
        self.every = max(1, self.nb // 10)
        self.shown_at = -math.inf  # clock() when the bar's description was last set
        if not self.active:
            return
        LOGGER.info(("\n" + "%11s" * 7) % self.HEADER)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.nb, bar_format="{l_bar}{bar:10}{r_bar}", leave=True)

    def update(self, i: int, mloss: torch.Tensor, instances: int, size: int) -> None:
        """Batch ``i`` (0-based) is done; ``mloss`` is read only when a line shows it."""
        if not self.active:
            return
        last = i + 1 == self.nb
        if self.bar is not None:
            now = self.clock()
            if last or now - self.shown_at >= self.REFRESH_S:
                self.bar.set_description(self.text(mloss, instances, size))
                self.shown_at = now
            self.bar.update(1)
        elif (i + 1) % self.every == 0 or last:
            LOGGER.info(f"{self.text(mloss, instances, size)}  {i + 1}/{self.nb}")

    def text(self, mloss: torch.Tensor, instances: int, size: int) -> str:
        """The progress columns of :data:`HEADER` (reads ``mloss`` from the device)."""
        cuda = torch.cuda.is_available() and self.t.device.type == "cuda"
        mem = f"{torch.cuda.memory_reserved(self.t.device) / 1e9 if cuda else 0:.3g}G"
        return ("%11s" * 2 + "%11.4g" * 5) % (self.epoch_text, mem, *mloss.tolist(), instances, size)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str | None]]]:
    """(header, rows) of a results.csv (none when it does not exist); a file that is not UTF-8 csv text
    gives one InputError line naming it."""
    if not path.is_file():
        return [], []
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            return [k for k in reader.fieldnames or [] if k is not None], rows
    except (UnicodeDecodeError, csv.Error) as e:
        reason = " ".join(str(e).split())[:160]
        raise InputError(f"cannot read {path} ({reason}): move the damaged file aside to continue") from None


def _row_epoch(row: dict[str, str | None]) -> int | None:
    """The epoch number of a results.csv row, None when it has none (a damaged row)."""
    try:
        epoch = float(row.get("epoch") or "nan")
    except ValueError:
        return None
    return int(epoch) if math.isfinite(epoch) and epoch == int(epoch) else None


def _check_resume_nc(path: Path, run_nc: int, data_nc: int, data: Any) -> None:
    """Refuse (one line) a resume whose data set has another class count than the run."""
    if run_nc != data_nc:
        raise ConfigError(
            f"resume {path}: nc changed from {run_nc} to {data_nc} (data {data}); the run's weights are "
            f"for {run_nc} classes - start a new run (with --pretrained {path}) for the new classes"
        )
