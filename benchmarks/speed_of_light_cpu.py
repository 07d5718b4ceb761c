"""The speed-of-light arithmetic of ``benchmarks/speed_of_light.py``, checked on this CPU: the C++
kernels timed at the GPU benchmark shapes, their bytes and FLOPs counted by the same functions, and
the floor taken from this machine's own figures (memory bandwidth measured with a large copy, FLOP
rate with a float32 matmul) instead of the H200's.

A kernel can never beat its floor; a kernel well above it shows where the time goes. Run under
``/work/heavy``: python benchmarks/speed_of_light_cpu.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch
from speed_of_light import A_640, NC, Work, assign_work, box_iou_work, postprocess_work

from yolov9k import ops


def median_s(fn: Callable[[], object], rounds: int) -> float:
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def copy_bandwidth(rounds: int) -> float:
    """Bytes per second of a 512 MB float32 copy (read + write counted)."""
    src = torch.rand(128 * 2**20)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / median_s(lambda: dst.copy_(src), rounds)


def matmul_flops(rounds: int) -> float:
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    return 2 * 2048**3 / median_s(lambda: a @ b, rounds)


def cases() -> list[tuple[str, Work, Callable[[], object]]]:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_bench_assign import make_inputs
    from test_bench_box_iou import _boxes

    a, b = _boxes(8400, "cpu"), _boxes(100, "cpu")
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(16, 4 + NC, A_640, generator=g)
    pred[:, :4] *= 640
    pred[:, 4:] = pred[:, 4:] ** 8  # mostly background, as a trained model's output
    assign_args = make_inputs(16, 100)

    def cpp(fn):
        def call():
            with ops.use_backend("cpp"):
                return fn()

        return call

    return [
        ("box_iou cpp 8400x100 fp32", box_iou_work(8400, 100), cpp(lambda: ops.box_iou(a, b))),
        (
            "postprocess cpp B=16 A=8400 (detect: conf 0.25)",
            postprocess_work(16),
            cpp(lambda: ops.postprocess_fixed(pred, 0.25, 0.45)),
        ),
        ("assign cpp B=16 A=8400 M=100", assign_work(16, 100), cpp(lambda: ops.assign(*assign_args))),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    a = parser.parse_args(argv)
    bw, peak = copy_bandwidth(a.rounds), matmul_flops(a.rounds)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
        f"copy {bw / 1e9:.1f} GB/s, fp32 matmul {peak / 1e9:.0f} GFLOP/s"
    )
    print("| kernel | MB moved | GFLOP | floor ms (this CPU) | measured ms | GB/s achieved | % of light |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, work, fn in cases():
        floor = max(work.bytes / bw, work.flops / peak)
        t = median_s(fn, a.rounds)
        print(
            f"| {name} | {work.bytes / 1e6:.1f} | {work.flops / 1e9:.3f} | {floor * 1e3:.2f} | "
            f"{t * 1e3:.2f} | {work.bytes / t / 1e9:.1f} | {100 * floor / t:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
