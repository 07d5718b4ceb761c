"""Where a training run's wall-clock goes: :class:`TimedTrainer`, a :class:`Trainer` that splits each epoch.

Per epoch (seconds of wall-clock, ``time.perf_counter``; CUDA is synchronised at phase edges):

* ``data``: the step blocked on the training loader (``iter()`` and each ``next()``);
* ``forward_backward``: :meth:`Trainer.forward_backward` less the loss call (so: forward, backward,
  the finite-loss check);
* ``loss``: the ``DetectionLoss`` call (assigner included; its backward is in ``forward_backward``);
* ``optimizer``: :meth:`Trainer.optimizer_step` (unscale, clip, step, zero_grad, EMA update);
* ``validation``: :meth:`Trainer.validate_epoch`, split into ``val_data`` (blocked on the val loader),
  ``val_model`` (input conversion and the model forward, val loss included), ``val_postprocess``
  (NMS) and ``val_metrics`` (the rest: matching, the evaluator, mAP);
* ``save``: :meth:`Trainer.save` (last.pt / best.pt, results.csv);
* ``other``: the epoch's wall-clock less all of the above (progress lines, batch plots, callbacks).

``wall`` runs from ``on_train_epoch_start`` to ``on_fit_epoch_end``; the run also reports ``setup_s``
(data scan, model, optimizer), ``finish_s`` (final validation of best.pt, plots), ``run_s``
(the whole :meth:`fit`) and ``other_s`` (``run_s`` less setup, epochs and finish: the start line,
the early-stop check between epochs). Single process only (DDP ranks other than 0 never reach
``on_fit_epoch_end``). ``yolov9k bench train`` (``yolov9k.api.bench_train``) runs it from the command
line and writes the timing as JSON.

Example:
    >>> t = TimedTrainer({"epochs": 2, "imgsz": 256, "batch": 16, "nbs": 16, "warmup_epochs": 1})
    >>> summary = t.fit()
    >>> print(format_timing(t.timing))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from yolov9k.engine.trainer import Trainer

__all__ = ["TimedTrainer", "timed_train", "format_timing", "EPOCH_PHASES", "VAL_PHASES"]

# The phases that add up to an epoch's ``wall`` (``other`` is the remainder).
EPOCH_PHASES = ("data", "forward_backward", "loss", "optimizer", "validation", "save", "other")
# The parts of ``validation``.
VAL_PHASES = ("val_data", "val_model", "val_postprocess", "val_metrics")


class _TimedLoader:
    """A loader proxy that adds the time spent in ``iter()`` and ``next()`` to ``add(seconds)``."""

    def __init__(self, loader: Any, add: Callable[[float], None], clock: Callable[[], float]) -> None:
        self._loader, self._add, self._clock = loader, add, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator:
        t0 = self._clock()
        it = iter(self._loader)
        self._add(self._clock() - t0)
        while True:
            t0 = self._clock()
            try:
                batch = next(it)
            except StopIteration:
                self._add(self._clock() - t0)
                return
            self._add(self._clock() - t0)
            yield batch


class _TimedCall:
    """A callable proxy (the loss module) that adds the duration of each call to ``add(seconds)``."""

    def __init__(self, fn: Any, add: Callable[[float], None], clock: Callable[[], float]) -> None:
        self._fn, self._add, self._clock = fn, add, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fn, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = self._clock()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self._add(self._clock() - t0)


class TimedTrainer(Trainer):
    """A :class:`Trainer` that records where each epoch's wall-clock goes (see the module docstring).

    After :meth:`fit`, ``timing`` holds ``{"epochs": [per-epoch dicts], "total": {phase: seconds},
    "setup_s", "finish_s", "run_s", "other_s", "best_map50", "final_metrics"}``; each per-epoch dict has
    ``epoch``, ``wall``, every name of :data:`EPOCH_PHASES` and :data:`VAL_PHASES`, ``batches``,
    ``images`` and ``map50`` (None when that epoch was not validated).
    """

    def __init__(
        self, overrides: dict[str, Any] | None = None, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        super().__init__(overrides)
        self.clock = clock
        self.timing: dict[str, Any] = {"epochs": []}
        self._cur: dict[str, Any] | None = None
        self._t_epoch = 0.0
        self.add_callback("on_train_epoch_start", TimedTrainer._epoch_start)
        self.add_callback("on_fit_epoch_end", TimedTrainer._epoch_end)
        self.add_callback("on_train_batch_end", TimedTrainer._batch_end)

    # ---- bookkeeping -------------------------------------------------------------------------------------
    def _sync(self) -> None:
        device = getattr(self, "device", None)
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)

    def _add(self, phase: str, seconds: float) -> None:
        if self._cur is not None:
            self._cur[phase] += seconds

    def _epoch_start(self) -> None:
        self._cur = {k: 0.0 for k in EPOCH_PHASES + VAL_PHASES}
        self._cur.update(epoch=self.epoch, batches=0, images=0, map50=None)
        self._sync()
        self._t_epoch = self.clock()

    def _batch_end(self) -> None:
        if self._cur is not None:
            self._cur["batches"] += 1
            self._cur["images"] += int(self.batch_size_now)

    def _epoch_end(self) -> None:
        self._sync()
        cur = self._cur
        if cur is None:
            return
        cur["wall"] = self.clock() - self._t_epoch
        named = sum(cur[k] for k in EPOCH_PHASES if k != "other")
        cur["other"] = cur["wall"] - named
        if self.metrics:
            cur["map50"] = float(self.metrics["map50"])
        self.timing["epochs"].append(cur)
        self._cur = None

    # ---- the timed steps ---------------------------------------------------------------------------------
    def setup(self) -> None:
        if self._is_setup:
            return
        t0 = self.clock()
        super().setup()
        self.loss_fn = _TimedCall(self.loss_fn, lambda s: self._add("loss", s), self.clock)
        self.timing["setup_s"] = self.clock() - t0

    def fit(self) -> dict[str, Any]:
        t0 = self.clock()
        summary = super().fit()
        self.timing["run_s"] = self.clock() - t0
        epochs = self.timing["epochs"]
        self.timing["total"] = {
            k: sum(e[k] for e in epochs) for k in ("wall", *EPOCH_PHASES, *VAL_PHASES, "batches", "images")
        }
        parts = (
            self.timing.get("setup_s", 0.0) + self.timing["total"]["wall"] + self.timing.get("finish_s", 0.0)
        )
        self.timing["other_s"] = self.timing["run_s"] - parts
        maps = [e["map50"] for e in epochs if e["map50"] is not None]
        self.timing["best_map50"] = max(maps) if maps else None
        self.timing["final_metrics"] = {
            k: float(v) for k, v in summary.get("metrics", {}).items() if isinstance(v, int | float)
        }
        return summary

    def finish(self, epoch: int, seconds: float) -> dict[str, Any]:
        t0 = self.clock()
        out = super().finish(epoch, seconds)
        self.timing["finish_s"] = self.clock() - t0
        return out

    def train_epoch(self, epoch: int) -> list[float]:
        loader = self.train_loader
        self.train_loader = _TimedLoader(loader, lambda s: self._add("data", s), self.clock)
        try:
            return super().train_epoch(epoch)
        finally:
            self.train_loader = loader

    def forward_backward(self, imgs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, bool]:
        loss_before = self._cur["loss"] if self._cur is not None else 0.0
        self._sync()
        t0 = self.clock()
        out = super().forward_backward(imgs, targets)
        self._sync()
        dt = self.clock() - t0
        loss_dt = (self._cur["loss"] - loss_before) if self._cur is not None else 0.0
        self._add("forward_backward", dt - loss_dt)
        return out

    def optimizer_step(self, ni: int) -> bool:
        self._sync()
        t0 = self.clock()
        out = super().optimizer_step(ni)
        self._sync()
        self._add("optimizer", self.clock() - t0)
        return out

    def validate_epoch(self, final: bool) -> dict[str, Any]:
        loader = self.val_loader
        if loader is not None:
            self.val_loader = _TimedLoader(loader, lambda s: self._add("val_data", s), self.clock)
        self._sync()
        t0 = self.clock()
        try:
            metrics = super().validate_epoch(final)
        finally:
            self.val_loader = loader
        self._sync()
        dt = self.clock() - t0
        self._add("validation", dt)
        if metrics and self._cur is not None:
            n = int(metrics.get("num_images", 0))
            speed = metrics.get("speed", {})
            model_s = (speed.get("preprocess", 0.0) + speed.get("inference", 0.0)) * n / 1e3
            post_s = speed.get("postprocess", 0.0) * n / 1e3
            self._cur["val_model"] += model_s
            self._cur["val_postprocess"] += post_s
            self._cur["val_metrics"] += max(0.0, dt - self._cur["val_data"] - model_s - post_s)
        return metrics

    def save(self, epoch: int, improved: bool) -> None:
        t0 = self.clock()
        super().save(epoch, improved)
        self._add("save", self.clock() - t0)

    def check_finite(self) -> None:
        """The NaN/inf check of the weights before validation and saving: part of ``save``."""
        t0 = self.clock()
        super().check_finite()
        self._add("save", self.clock() - t0)


def timed_train(**overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`yolov9k.train` with a :class:`TimedTrainer`: returns ``(summary, timing)``."""
    trainer = TimedTrainer(overrides)
    summary = trainer.fit()
    return summary, trainer.timing


def format_timing(timing: dict[str, Any], title: str | None = None) -> str:
    """A markdown table of ``TimedTrainer.timing``: one row per epoch and a total row (seconds)."""
    cols = ("wall", *EPOCH_PHASES, *VAL_PHASES)
    head = ["epoch", *cols, "mAP50"]
    lines = [f"**{title}**", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]

    def row(label: str, rec: dict[str, Any], map50: Any) -> str:
        m = "" if map50 is None else f"{map50:.3f}"
        return "| " + " | ".join([label, *(f"{rec[c]:.2f}" for c in cols), m]) + " |"

    for e in timing["epochs"]:
        lines.append(row(str(e["epoch"] + 1), e, e["map50"]))
    if "total" in timing:
        lines.append(row("**total**", timing["total"], timing.get("best_map50")))
    extra = [f"{k} {timing[k]:.1f} s" for k in ("setup_s", "finish_s", "other_s", "run_s") if k in timing]
    if extra:
        lines += ["", "; ".join(extra)]
    return "\n".join(lines)
