"""Speed of light of the GPU benchmarks: the bytes each op must move and the FLOPs it must do at its
benchmark shapes, the floor time on the lent card, and (given a benchmark JSON) measured / floor.

Floor = max(bytes / HBM bandwidth, FLOPs / peak). The peak is the tensor-core rate for fp16 / bf16
convolutions, the fp32 (CUDA-core) rate for everything else (IoU, NMS, the assigner's metric).
Bytes are a lower bound: each input read once, each output written once; for a block or a model,
each convolution reads its input and weights and writes its output once (no fusion across layers),
and a training step moves ~3x the forward's bytes and does ~3x its FLOPs (forward, grad of the
input, grad of the weights). NMS's data-dependent IoU work is left out (the floor only gets lower).

Usage: python benchmarks/speed_of_light.py [--bench bench.json] [--markdown]
  without --bench: the floors only (the measured column empty), as ``gpu_check.sh --dry-run`` prints.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

# The lent card: NVIDIA H200 SXM (vendor figures, dense).
CARD = "H200"
HBM_BYTES_PER_S = 4.8e12
TENSOR_FLOPS = {"fp16": 989e12, "bf16": 989e12}
FP32_FLOPS = 67e12

F32, I64 = 4, 8
A_640 = 8400  # anchors at 640 px (80^2 + 40^2 + 20^2)
NC = 80


@dataclass(frozen=True)
class Work:
    """What one call of an op must do."""

    bytes: float
    flops: float
    dtype: str = "fp32"  # fp16 / bf16: tensor-core peak

    def floor_s(self) -> float:
        peak = TENSOR_FLOPS.get(self.dtype, FP32_FLOPS)
        return max(self.bytes / HBM_BYTES_PER_S, self.flops / peak)

    def bound(self) -> str:
        peak = TENSOR_FLOPS.get(self.dtype, FP32_FLOPS)
        return "memory" if self.bytes / HBM_BYTES_PER_S >= self.flops / peak else "compute"


# --------------------------------------------------------------------------------------------------
# Per-op work (shared with the CPU check, benchmarks/speed_of_light_cpu.py)

IOU_FLOPS = 17  # per pair: 2 min, 2 max, 2 sub, 2 clamp (w, h), 1 mul, 2x(2 sub + 1 mul) areas, add, sub, div


def box_iou_work(n: int, m: int, elem: int = F32) -> Work:
    return Work(bytes=4 * elem * (n + m) + elem * n * m, flops=IOU_FLOPS * n * m)


def postprocess_work(batch: int, anchors: int = A_640, nc: int = NC, max_det: int = 300) -> Work:
    """Read the (B, 4 + nc, A) output once, write (B, max_det, 6) detections and the counts."""
    return Work(
        bytes=batch * ((4 + nc) * anchors * F32 + max_det * 6 * F32 + I64), flops=batch * nc * anchors
    )


def batched_nms_work(n: int) -> Work:
    """Read boxes, scores, idxs; write at most n kept indices (sorting and IoUs left out)."""
    return Work(bytes=n * (4 * F32 + F32 + I64) + n * I64, flops=0)


def assign_work(batch: int, m: int, anchors: int = A_640, nc: int = NC) -> Work:
    """Task-aligned assigner: read scores (B, A, nc), predicted boxes, anchors and the M targets;
    write target labels, boxes, scores (B, A, nc), the foreground mask and the target index.
    FLOPs: IoU + in-box test + score^alpha * IoU^beta (two pow as exp / log) per (anchor, target)."""
    read = batch * anchors * (nc + 4) * F32 + anchors * 2 * F32 + batch * m * 6 * F32
    write = batch * anchors * (I64 + 4 * F32 + nc * F32 + 1 + I64)
    return Work(bytes=read + write, flops=batch * m * anchors * (IOU_FLOPS + 8 + 2 * 20))


@functools.cache
def conv_work(
    model: str, shape: tuple[int, ...], dtype: str, layer: int | None = None, training: bool = False
) -> Work:
    """Forward work of the convolutions of zoo ``model`` (fused for inference; with ``training`` the
    training graph, auxiliary branch included), or of its block ``layer``, on an input of ``shape``:
    a meta forward, counted per Conv2d."""
    import torch
    from torch import nn

    from yolov9k.models import build_model

    elem = 2 if dtype in ("fp16", "bf16") else 4
    net = build_model(model).to("meta")
    net = net.train() if training else net.eval().fuse()
    if layer is not None:
        net = net.model[layer]
    total = {"bytes": 0.0, "flops": 0.0}

    def count(mod: nn.Conv2d, args, out) -> None:
        x = args[0]
        kh, kw = mod.kernel_size
        total["flops"] += 2 * out.numel() * (mod.in_channels // mod.groups) * kh * kw
        total["bytes"] += elem * (x.numel() + out.numel() + mod.weight.numel())

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        (net if layer is not None or training else net.forward_main)(torch.empty(shape, device="meta"))
    for h in hooks:
        h.remove()
    return Work(total["bytes"], total["flops"], dtype)


def _train(w: Work) -> Work:
    return Work(3 * w.bytes, 3 * w.flops, w.dtype)


@functools.cache
def _gelan_c_block_shapes(batch: int, img: int) -> dict[int, tuple[int, ...]]:
    """Input shapes of gelan-c's benchmarked blocks (benchmarks/test_bench_fused.py BLOCK_LAYERS)."""
    import torch

    from yolov9k.models import build_model

    net = build_model("gelan-c").to("meta").eval().fuse()
    shapes: dict[int, tuple[int, ...]] = {}

    def record(i: int, args: tuple) -> None:
        shapes.setdefault(i, (batch, *args[0].shape[1:]))

    hooks = [net.model[i].register_forward_pre_hook(lambda m, a, i=i: record(i, a)) for i in (2, 6, 9)]
    with torch.no_grad():
        net.forward_main(torch.empty(1, 3, img, img, device="meta"))
    for h in hooks:
        h.remove()
    return shapes


# --------------------------------------------------------------------------------------------------
# The GPU benchmark cases (benchmarks/test_bench_*.py at full size) -> their work

# (test function, parameter names in the id, work from the parameters)
CASES: list[tuple[str, Callable[[dict], Work]]] = [
    ("test_box_iou_cuda", lambda p: box_iou_work(8400, 100)),
    ("test_postprocess_cuda", lambda p: postprocess_work(int(p["batch"]))),
    ("test_batched_nms_cuda", lambda p: batched_nms_work(int(p["n"]))),
    ("test_assign_cuda", lambda p: assign_work(16, int(p["m"]))),
    ("test_assign_kernels_cuda", lambda p: assign_work(16, int(p["m"]))),
    (
        "test_gelan_c_elan_block",
        lambda p: conv_work(
            "gelan-c", _gelan_c_block_shapes(32, 640)[int(p["layer"])], p["dtype"], int(p["layer"])
        ),
    ),
    ("test_gelan_c_fused_inference", lambda p: conv_work("gelan-c", (32, 3, 640, 640), "fp16")),
    (
        "test_yolov9_c_train_step",
        lambda p: _train(conv_work("yolov9-c", (16, 3, 640, 640), "fp16", training=True)),
    ),
]

# The parameter sets of each case at full size (what gpu_check.sh runs), for the dry run's table.
FULL_PARAMS: dict[str, list[dict]] = {
    "test_box_iou_cuda": [{}],
    "test_postprocess_cuda": [{"batch": b} for b in (1, 16, 32)],
    "test_batched_nms_cuda": [{"n": n} for n in (1000, 30000)],
    "test_assign_cuda": [{"m": m} for m in (20, 100)],
    "test_assign_kernels_cuda": [{"m": m} for m in (20, 100)],
    "test_gelan_c_elan_block": [{"layer": i, "dtype": d} for i in (2, 6, 9) for d in ("fp16", "bf16")],
    "test_gelan_c_fused_inference": [{}],
    "test_yolov9_c_train_step": [{}],
}


def work_of(function: str, params: dict) -> Work | None:
    for name, fn in CASES:
        if name == function:
            return fn(params)
    return None


def _label(function: str, params: dict) -> str:
    inside = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{function}[{inside}]" if inside else function


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1e3:.3f}" if seconds >= 1e-3 else f"{seconds * 1e3:.4f}"


def rows_from_bench(bench: dict) -> list[tuple[str, Work, float | None]]:
    """(case, work, measured median s) of every GPU case in a pytest-benchmark JSON."""
    rows = []
    for b in bench["benchmarks"]:
        function = re.sub(r"\[.*", "", b["name"])
        params = b.get("params") or {}
        work = work_of(function, params)
        if work is not None:
            rows.append((b["name"], work, b["stats"]["median"]))
    return rows


def rows_dry() -> list[tuple[str, Work, float | None]]:
    return [(_label(f, p), work_of(f, p), None) for f, ps in FULL_PARAMS.items() for p in ps]


def table(rows: list[tuple[str, Work, float | None]]) -> list[str]:
    lines = [
        f"Speed of light on an {CARD} ({HBM_BYTES_PER_S / 1e12:.1f} TB/s HBM, "
        f"{TENSOR_FLOPS['fp16'] / 1e12:.0f} TFLOP/s fp16/bf16 tensor, {FP32_FLOPS / 1e12:.0f} TFLOP/s fp32)",
        "| case | MB moved | GFLOP | dtype | bound | floor ms | measured ms | % of light |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |",
    ]
    for name, w, measured in rows:
        floor = w.floor_s()
        pct = f"{100 * floor / measured:.1f}" if measured else ""
        lines.append(
            f"| {name} | {w.bytes / 1e6:.2f} | {w.flops / 1e9:.3f} | {w.dtype} | {w.bound()} | "
            f"{_fmt_time(floor)} | {_fmt_time(measured)} | {pct} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", help="pytest-benchmark JSON of the GPU run (else: floors only)")
    a = parser.parse_args(argv)
    rows = rows_from_bench(json.load(open(a.bench))) if a.bench else rows_dry()
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
