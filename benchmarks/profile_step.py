"""Per-op CPU profile of one training step (forward + loss + backward + clip + SGD step).

``make_step`` is also the step of ``benchmarks/test_bench_train_step.py`` (random images, 4 boxes
per image, 80 classes):
one warm-up step, then ``--steps`` steps under ``torch.profiler``; prints the top ops by self CPU
time as a markdown table (per step) and the step wall-clock.

    python benchmarks/profile_step.py --model gelan-t --batch 8 --imgsz 320 [--channels-last]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gelan-t")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--backend", choices=("auto", "torch"), default="auto")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--out", default=None, help="also write the rows as JSON")
    return p.parse_args(argv)


def make_step(model_name: str, batch: int, imgsz: int, channels_last: bool):
    """(step function returning the loss, model) for a seeded model and batch."""
    import torch

    from yolov9k.engine.optim import build_optimizer
    from yolov9k.loss import DetectionLoss
    from yolov9k.models import accelerate, build_model

    torch.manual_seed(0)
    model = accelerate(build_model(model_name, num_classes=80)).train()  # the trainer's model
    x = torch.rand(batch, 3, imgsz, imgsz)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    loss_fn = DetectionLoss(model)
    opt = build_optimizer(model, "SGD", lr=0.01, momentum=0.937, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    n = 4 * batch
    targets = torch.cat(
        [torch.arange(n).remainder(batch)[:, None].float(), torch.randint(0, 80, (n, 1), generator=g).float(),
         0.2 + 0.6 * torch.rand(n, 2, generator=g), 0.05 + 0.3 * torch.rand(n, 2, generator=g)], 1,
    )  # fmt: skip

    def step() -> float:
        with torch.profiler.record_function("## forward"):
            preds = model(x)
        with torch.profiler.record_function("## loss"):
            loss, _ = loss_fn(preds, targets)
        with torch.profiler.record_function("## backward"):
            loss.backward()
        with torch.profiler.record_function("## optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, model


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    os.environ["YOLOV9K_BACKEND"] = args.backend
    import torch
    from torch.profiler import ProfilerActivity, profile

    step, _ = make_step(args.model, args.batch, args.imgsz, args.channels_last)
    step()  # warm-up (oneDNN primitives, allocator)
    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall = (time.perf_counter() - t0) / args.steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events if not e.key.startswith("## "))
    ranges = {e.key: e.cpu_time_total / args.steps / 1e3 for e in events if e.key.startswith("## ")}
    ops = sorted((e for e in events if not e.key.startswith("## ")), key=lambda e: -e.self_cpu_time_total)
    rows = [
        {
            "op": e.key,
            "calls": e.count // args.steps,
            "self_ms": e.self_cpu_time_total / args.steps / 1e3,
            "share": e.self_cpu_time_total / max(total, 1),
        }
        for e in ops[: args.rows]
    ]
    layout = "channels_last" if args.channels_last else "nchw"
    print(
        f"{args.model}, batch {args.batch}, {args.imgsz} px, {layout}, backend {args.backend}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads: {wall * 1e3:.0f} ms per step "
        f"(profiled); " + ", ".join(f"{k[3:]} {v:.0f} ms" for k, v in ranges.items())
    )
    print("\n| op | calls/step | self CPU ms/step | share |\n| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| `{r['op']}` | {r['calls']} | {r['self_ms']:.1f} | {100 * r['share']:.1f} % |")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"step_ms": wall * 1e3, "ranges_ms": ranges, "rows": rows}, indent=1)
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
