"""``yolov9k bench train``: a whole training run timed phase by phase, printed as a table and kept as JSON.

Built on :class:`yolov9k.engine.profile.TimedTrainer`, which splits each epoch's wall-clock into data
wait, forward + backward, loss, optimizer + EMA, validation (data / model / NMS / metrics), saving and
the rest. The default schedule is the README's demo run (``yolov9k train --epochs 10 --imgsz 256 --nbs 16
--warmup-epochs 1``: gelan-t from scratch on the demo data set, written when missing, batch 16); any
other training option can be given as for ``yolov9k train``. Timings mean something only on an
otherwise idle machine (``benchmarks/RESULTS.md``); ``benchmarks/summarize_runs.py`` turns several
JSON files into comparison tables.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from yolov9k.engine.profile import TimedTrainer, format_timing
from yolov9k.io.files import atomic_write_text
from yolov9k.ops import use_backend
from yolov9k.ops._dispatch import requested_backend
from yolov9k.options import check_options, resolve_config
from yolov9k.options.verbs import BENCH_TRAIN
from yolov9k.version import __version__

__all__ = ["bench_train", "SCHEDULE"]

# The README demo command's schedule; every other training option keeps its ``yolov9k train`` default.
SCHEDULE: dict[str, Any] = {"epochs": 10, "imgsz": 256, "nbs": 16, "warmup_epochs": 1.0}
# Options recorded in the JSON (with the backend, the loader's worker count and the environment).
RECORDED = (
    "model", "data", "epochs", "imgsz", "batch", "nbs", "warmup_epochs", "workers", "device", "amp",
    "channels_last", "compile", "deterministic", "plots", "val", "val_period",
)  # fmt: skip


def bench_train(
    backend: str | None = None,
    threads: int | None = None,
    out: str | os.PathLike | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train once with every epoch split into phases; print the table (``verbose``) and return the record.

    Args:
        backend: ``"auto"`` or one backend forced for every op during the run (``use_backend``);
            None = ``YOLOV9K_BACKEND`` (else auto).
        threads: ``torch.set_num_threads`` for the run (restored after it); None = torch's.
        out: write the record as JSON to this path.
        **overrides: training options (``yolov9k.options.TRAIN_OPTIONS``) over :data:`SCHEDULE`;
            without ``project`` the run folder is a temporary one, deleted after the run.
    Returns:
        ``{"tool", "backend", "options", "loader_workers", "channels_last", "env", "wall_s", "timing",
        "best_map50", "final_metrics"}``: ``wall_s`` is the whole run (construction to summary), ``timing`` is
        ``TimedTrainer.timing`` (per-epoch phases, their totals, ``setup_s``, ``finish_s``, ``run_s``
        and ``other_s``, the run's time outside setup, epochs and the final validation).
    """
    check_options(BENCH_TRAIN, {"backend": backend, "threads": threads, "out": out})
    config = {**SCHEDULE, "name": "bench", "exist_ok": True, **overrides}
    resolve_config(config)  # every training option checked before the run folder or threads change
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with (
        _threads(threads),
        use_backend(backend or requested_backend()),
        _run_folder(config.get("project")) as project,
    ):
        used_backend = requested_backend()
        t0 = time.perf_counter()
        trainer = TimedTrainer({**config, "project": project})
        summary = trainer.fit()
        wall = time.perf_counter() - t0
        env = _environment(trainer.device, load_before)
    record = {
        "tool": "yolov9k",
        "backend": used_backend,
        "options": {k: trainer.args[k] for k in RECORDED},
        "loader_workers": int(trainer.train_loader.num_workers),
        "channels_last": trainer.channels_last,  # the memory format the run used ("auto" resolved)
        "env": env,
        "wall_s": wall,
        "timing": trainer.timing,
        "best_map50": trainer.timing.get("best_map50"),
        "final_metrics": {k: v for k, v in summary["metrics"].items() if isinstance(v, int | float)},
    }
    if trainer.args["verbose"]:
        print(format_timing(trainer.timing, title=f"yolov9k {trainer.args['model']} backend={used_backend}"))
        print(f"whole run {wall:.1f} s, best mAP50 {record['best_map50']}")
    if out is not None:
        atomic_write_text(out, json.dumps(record, indent=1, default=str))
    return record


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch on ``n`` intra-op threads inside the block (no change for None)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _run_folder(project: str | os.PathLike | None) -> Iterator[str | os.PathLike]:
    """``project``, or a temporary folder deleted after the block when it is None."""
    if project is not None:
        yield project
        return
    with tempfile.TemporaryDirectory(prefix="yolov9k-bench-") as tmp:
        yield tmp


def _environment(device: torch.device, load_before: float | None) -> dict[str, Any]:
    """What the timings depend on: versions, CPU, threads, device, commit, date, the load before the run."""
    return {
        "yolov9k": __version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(),
        "commit": _commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_before": load_before,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    """The short commit of the source checkout, or "unknown" (an installed copy, no git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
