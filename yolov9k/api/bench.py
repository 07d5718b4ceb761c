"""``yolov9k.bench``: time every available backend of each dispatched op, and a model forward.

A quick look at what this machine runs and how fast; the reproducible benchmarks behind the
README numbers are ``pytest benchmarks/ --benchmark-only``. Default sizes are small (seconds on a
laptop); ``full=True`` uses the benchmark sizes of the mission (e.g. post-processing of
32 x 8400 anchors x 80 classes at conf 0.001, assignment of 16 x 8400 anchors with 100 gts).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from yolov9k import ops
from yolov9k.models import build_model
from yolov9k.ops import BACKENDS, BackendUnavailableError, _dispatch, use_backend
from yolov9k.options import check_options
from yolov9k.options.verbs import BENCH, BENCH_CASES
from yolov9k.run_setup import select_device

__all__ = ["bench", "format_bench", "CASES"]


@dataclass(frozen=True)
class Case:
    """One op at one size: ``make(device, generator)`` builds the inputs, ``run(inputs)`` calls the op."""

    op: str
    desc: str
    make: Callable[[torch.device, torch.Generator], Any]
    run: Callable[[Any], Any]


def _boxes(n: int, size: float, g: torch.Generator) -> torch.Tensor:
    """(n, 4) xyxy boxes in a ``size`` x ``size`` image, sides 4..size/3 px."""
    c = torch.rand(n, 2, generator=g) * size
    wh = 4 + torch.rand(n, 2, generator=g) * (size / 3 - 4)
    return torch.cat([c - wh / 2, c + wh / 2], 1)


def _pred(b: int, a: int, nc: int, g: torch.Generator) -> torch.Tensor:
    """(b, 4 + nc, a) model-like output: xywh px in 640, sparse confident class scores."""
    xy = torch.rand(b, 2, a, generator=g) * 640
    wh = 8 + torch.rand(b, 2, a, generator=g) * 200
    logits = torch.randn(b, nc, a, generator=g) * 2 - 7  # most scores tiny, a few above 0.25
    return torch.cat([xy, wh, logits.sigmoid()], 1)


def _assign_inputs(b: int, a: int, m: int, nc: int, g: torch.Generator) -> tuple[torch.Tensor, ...]:
    side = int(round(a**0.5))
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    anc = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * (640 / side)
    a = anc.shape[0]
    scores = torch.rand(b, a, nc, generator=g)
    pd = torch.cat([anc - 20, anc + 20], 1).unsqueeze(0).expand(b, -1, -1).contiguous()
    gt = torch.stack([_boxes(m, 640, g) for _ in range(b)])
    labels = torch.randint(0, nc, (b, m, 1), generator=g)
    mask = (torch.rand(b, m, 1, generator=g) < 0.8).float()
    return scores, pd, anc, labels, gt, mask


def _cases(full: bool) -> list[Case]:
    n_iou, n_nms = (8400, 30000) if full else (1000, 1000)
    b_pp, a_pp = (32, 8400) if full else (1, 2100)
    conf_pp, multi = (0.001, True) if full else (0.25, False)  # validation vs detection settings
    b_as, a_as, m_as = (16, 8400, 100) if full else (2, 2100, 20)

    def to(dev: torch.device, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(x.to(dev) for x in xs)

    def nms_inputs(d: torch.device, g: torch.Generator) -> tuple[torch.Tensor, ...]:
        classes = torch.randint(0, 80, (n_nms,), generator=g)
        return to(d, _boxes(n_nms, 640, g), torch.rand(n_nms, generator=g), classes)

    return [
        Case(
            "box_iou",
            f"{n_iou} x 100 boxes",
            lambda d, g: to(d, _boxes(n_iou, 640, g), _boxes(100, 640, g)),
            lambda x: ops.box_iou(*x),
        ),
        Case(
            "batched_nms",
            f"{n_nms} boxes, 80 classes, iou 0.7",
            nms_inputs,
            lambda x: ops.batched_nms(*x, 0.7),
        ),
        Case(
            "postprocess",
            f"({b_pp}, 84, {a_pp}) conf {conf_pp} iou 0.7" + (" multi-label" if multi else ""),
            lambda d, g: to(d, _pred(b_pp, a_pp, 80, g)),
            lambda x: ops.postprocess(x[0], conf_pp, 0.7, max_det=300, multi_label=multi),
        ),
        Case(
            "assign",
            f"{b_as} images, {a_as} anchors, {m_as} gts, 80 classes",
            lambda d, g: to(d, *_assign_inputs(b_as, a_as, m_as, 80, g)),
            lambda x: ops.assign(*x),
        ),
    ]


CASES = BENCH_CASES  # the ops of _cases(), in that order


def _time(fn: Callable[[], Any], device: torch.device, repeat: int) -> float:
    """Median wall time of ``fn`` in ms (after one warm-up call), synchronising CUDA."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _available(op: str, backend: str, device: torch.device) -> bool:
    if backend == "triton" and device.type != "cuda":
        return False  # the CPU interpreter is for tests, not timing
    try:
        with use_backend(backend):
            _dispatch.select(op, device)
        return True
    except BackendUnavailableError:
        return False


def bench(
    full: bool = False,
    device: str | int | torch.device | None = None,
    model: str | None = "gelan-t",
    imgsz: int | None = None,
    repeat: int = 3,
    ops: list[str] | None = None,
    verbose: bool = True,
) -> list[dict[str, Any]]:
    """Time the ops on every backend available for ``device``, then a fused model forward.

    Args:
        full: benchmark sizes instead of small ones.
        device: "cpu", "cuda", ... (default: CUDA when available).
        model: zoo name for the forward timing (None: skip). imgsz: its input size (default 640
            with ``full``, else 160).
        repeat: timed calls per entry (median reported).
        ops: only these ops (names of ``CASES``).
        verbose: print the table.
    Returns:
        rows ``{"op", "size", "backend", "ms"}`` (``ms`` is None when a backend failed, with ``error``).
    """
    check_options(BENCH, dict(full=full, model=model, imgsz=imgsz, repeat=repeat, ops=ops))
    dev = select_device(device)
    gen = torch.Generator().manual_seed(0)
    rows: list[dict[str, Any]] = []
    for case in _cases(full):
        if ops and case.op not in ops:
            continue
        inputs = case.make(dev, gen)
        for backend in BACKENDS:
            if not _available(case.op, backend, dev):
                continue
            row: dict[str, Any] = {"op": case.op, "size": case.desc, "backend": backend}
            try:
                with use_backend(backend):
                    row["ms"] = _time(lambda c=case, x=inputs: c.run(x), dev, repeat)
            except Exception as e:  # one broken backend must not hide the others' numbers
                row["ms"], row["error"] = None, f"{type(e).__name__}: {e}"
            rows.append(row)
    if model:
        rows.append(_bench_model(model, dev, imgsz or (640 if full else 160), repeat))
    if verbose:
        print(format_bench(rows, dev))
    return rows


def _bench_model(name: str, device: torch.device, imgsz: int, repeat: int) -> dict[str, Any]:
    net = build_model(name).to(device).eval().fuse()
    x = torch.rand(1, 3, imgsz, imgsz, device=device)
    with torch.inference_mode():
        ms = _time(lambda: net(x), device, repeat)
    return {
        "op": f"model {name}",
        "size": f"(1, 3, {imgsz}, {imgsz}) fused fp32",
        "backend": "torch",
        "ms": ms,
    }


def format_bench(rows: list[dict[str, Any]], device: torch.device | str = "cpu") -> str:
    """The table ``bench`` prints."""
    head = f"{'op':<16}{'backend':<9}{'ms':>11}  size  [{device}, torch {torch.__version__}]"
    lines = [head, "-" * len(head)]
    for r in rows:
        ms = f"{r['ms']:>11.2f}" if r["ms"] is not None else f"{'failed':>11}"
        lines.append(
            f"{r['op']:<16}{r['backend']:<9}{ms}  {r['size']}" + (f"  ({r['error']})" if "error" in r else "")
        )
    return "\n".join(lines)
