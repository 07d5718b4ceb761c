"""TimedTrainer (yolov9k.engine.profile): the phase split of a tiny run adds up to its wall-clock."""

from __future__ import annotations

import itertools

import pytest

from yolov9k.engine.profile import (
    EPOCH_PHASES,
    VAL_PHASES,
    TimedTrainer,
    _TimedCall,
    _TimedLoader,
    format_timing,
)

TINY = dict(
    model="gelan-t", epochs=1, imgsz=64, batch=4, workers=0, device="cpu", nbs=4, warmup_epochs=0.0,
    plots=False, verbose=False, mosaic=0.0,
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_clock(step: float = 0.5):
    """A clock that advances ``step`` seconds per reading."""
    ticks = itertools.count()
    return lambda: next(ticks) * step


def test_timed_loader_adds_iter_and_next_times():
    got = []
    loader = _TimedLoader([10, 20, 30], got.append, _fake_clock())
    assert list(loader) == [10, 20, 30]
    assert len(loader) == 3
    # iter() + 3 batches + the final StopIteration: 5 intervals of one tick each
    assert got == [0.5] * 5


def test_timed_call_adds_the_call_time_and_forwards_attributes():
    got = []

    class Loss:
        hyp = {"box": 7.5}

        def __call__(self, a, b=1):
            return a + b

    f = _TimedCall(Loss(), got.append, _fake_clock(0.25))
    assert f(2, b=3) == 5
    assert f.hyp == {"box": 7.5}
    assert got == [0.25]


def test_phases_add_up_to_the_epoch_wall_clock(tmp_path):
    from yolov9k.data import generate_demo_dataset

    data = str(generate_demo_dataset(tmp_path / "set", num_train=8, num_val=4, imgsz=64, seed=0))
    trainer = TimedTrainer(dict(TINY, data=data, project=str(tmp_path / "runs"), name="t"))
    summary = trainer.fit()
    timing = trainer.timing
    assert len(timing["epochs"]) == 1
    e = timing["epochs"][0]
    assert e["batches"] == 2 and e["images"] == 8  # 8 images at batch 4
    for k in EPOCH_PHASES + VAL_PHASES:
        assert e[k] >= 0.0, (k, e[k])
    for k in ("data", "forward_backward", "loss", "optimizer", "validation", "save"):
        assert e[k] > 0.0, k
    named = sum(e[k] for k in EPOCH_PHASES if k != "other")
    assert named + e["other"] == pytest.approx(e["wall"], rel=1e-9)
    # what no named phase covers (progress, mloss bookkeeping, callbacks) is a small part of the epoch
    assert e["other"] <= 0.05 * e["wall"] + 0.02, e
    # the parts of validation do not exceed it
    assert sum(e[k] for k in VAL_PHASES) == pytest.approx(e["validation"], rel=1e-6, abs=1e-6)
    assert timing["total"]["wall"] == pytest.approx(e["wall"])
    assert timing["run_s"] >= timing["setup_s"] + e["wall"] + timing["finish_s"]
    assert e["map50"] == trainer.metrics["map50"] and 0.0 <= e["map50"] <= 1.0
    assert timing["best_map50"] == e["map50"]
    assert timing["final_metrics"]["map50"] == summary["metrics"]["map50"]
    table = format_timing(timing, title="tiny")
    assert table.splitlines()[2].startswith("| epoch | wall | data |")
    assert "| **total** |" in table


def test_bench_train_cli_writes_the_phases_and_they_add_up_to_the_run(tmp_path, monkeypatch, capsys):
    import json
    import tempfile

    from yolov9k.cli import main
    from yolov9k.data import generate_demo_dataset

    data = str(generate_demo_dataset(tmp_path / "set", num_train=8, num_val=4, imgsz=64, seed=0))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the run folder goes without --project
    out = tmp_path / "run.json"
    argv = ["bench", "train", "--data", data, "--epochs", "1", "--imgsz", "64", "--batch", "4", "--nbs", "4",
            "--workers", "0", "--device", "cpu", "--warmup-epochs", "0", "--mosaic", "0", "--plots", "false",
            "--backend", "torch", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| epoch | wall | data |" in printed and "whole run" in printed
    assert list(scratch.iterdir()) == []  # the temporary run folder is gone

    record = json.loads(out.read_text())
    assert record["tool"] == "yolov9k" and record["backend"] == "torch"
    assert record["options"]["epochs"] == 1 and record["options"]["imgsz"] == 64
    assert record["options"]["nbs"] == 4 and record["options"]["warmup_epochs"] == 0.0
    timing = record["timing"]
    (epoch,) = timing["epochs"]
    assert epoch["batches"] == 2 and epoch["images"] == 8
    assert set(EPOCH_PHASES + VAL_PHASES) <= epoch.keys()
    assert sum(epoch[k] for k in EPOCH_PHASES) == pytest.approx(epoch["wall"], rel=1e-9)
    assert epoch["other"] <= 0.05 * epoch["wall"] + 0.02, epoch
    parts = timing["setup_s"] + timing["total"]["wall"] + timing["finish_s"]
    assert timing["other_s"] == pytest.approx(timing["run_s"] - parts, abs=1e-9)
    # the measured whole run is setup + epochs + final validation, up to the bookkeeping around them
    assert abs(record["wall_s"] - parts) <= 0.05 * record["wall_s"] + 0.05, (record["wall_s"], parts)
    assert record["final_metrics"]["map50"] == record["best_map50"] == epoch["map50"]


def test_bench_train_defaults_are_the_readme_demo_schedule():
    import re
    from pathlib import Path

    from yolov9k.api.bench_train import SCHEDULE
    from yolov9k.engine import parse_cli_overrides

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    command = re.search(r"&& yolov9k train (.*)", readme).group(1).split()
    flags = [f"{k}={v}" for k, v in zip(command[::2], command[1::2])]
    assert parse_cli_overrides(flags) == SCHEDULE
