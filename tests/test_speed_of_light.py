"""The speed-of-light table of gpu_check.sh (benchmarks/speed_of_light.py): its byte / FLOP counts
against figures computed by hand or published, and its cases against the benchmarks that exist."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import speed_of_light as sol  # noqa: E402


def test_box_iou_bytes_and_floor_by_hand():
    w = sol.box_iou_work(8400, 100)
    # inputs (8400 + 100) x 4 floats, output 8400 x 100 floats
    assert w.bytes == 4 * 4 * 8500 + 4 * 840_000
    assert w.floor_s() == pytest.approx(w.bytes / 4.8e12)
    assert w.bound() == "memory"


def test_postprocess_reads_the_whole_output_once():
    w = sol.postprocess_work(16)
    assert w.bytes >= 16 * 84 * 8400 * 4
    assert w.bytes < 16 * 84 * 8400 * 4 * 1.01


def test_model_flops_match_the_published_figures():
    """gelan-c: 102.1 GFLOPs at 640 px (deploy); yolov9-c in training (auxiliary branch): 238.9."""
    infer = sol.conv_work("gelan-c", (1, 3, 640, 640), "fp16")
    assert infer.flops / 1e9 == pytest.approx(102.1, rel=0.01)
    train = sol.conv_work("yolov9-c", (1, 3, 640, 640), "fp16", training=True)
    assert train.flops / 1e9 == pytest.approx(238.9, rel=0.01)


def test_tensor_core_peak_only_for_half_precision():
    flops = 1e12
    assert sol.Work(0, flops, "fp16").floor_s() == pytest.approx(flops / 989e12)
    assert sol.Work(0, flops, "fp32").floor_s() == pytest.approx(flops / 67e12)


def test_every_case_is_a_gpu_benchmark_that_exists():
    defined = set()
    for f in BENCH.glob("test_bench_*.py"):
        defined |= set(re.findall(r"^def (test_\w+)\(", f.read_text(), re.M))
    names = [name for name, _ in sol.CASES]
    assert set(names) <= defined, set(names) - defined
    assert set(sol.FULL_PARAMS) == set(names)


def test_measured_over_floor():
    bench = {
        "benchmarks": [
            {"name": "test_box_iou_cuda[cuda]", "params": {"backend": "cuda"}, "stats": {"median": 1e-5}},
            {"name": "test_not_a_gpu_case", "params": {}, "stats": {"median": 1.0}},
        ]
    }
    rows = sol.rows_from_bench(bench)
    assert [r[0] for r in rows] == ["test_box_iou_cuda[cuda]"]
    line = sol.table(rows)[-1]
    floor = sol.box_iou_work(8400, 100).floor_s()
    assert f"| {100 * floor / 1e-5:.1f} |" in line


def test_dry_table_has_an_empty_measured_column():
    lines = sol.table(sol.rows_dry())
    body = [line for line in lines if line.startswith("| test_")]
    assert len(body) == sum(len(p) for p in sol.FULL_PARAMS.values())
    assert all(line.endswith("|  |  |") for line in body)
