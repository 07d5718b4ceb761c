"""Resume: a run killed after k epochs and resumed gives the same weights as an uninterrupted run."""

from __future__ import annotations

import csv

import pytest
import torch

from yolov9k.checkpoint import load_checkpoint
from yolov9k.engine import ConfigError, Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

# 2 epochs of 4 batches; warm-up on (100 iterations: the resumed epoch is still inside it) and
# accumulation 2, so the LR/momentum/accumulation position and last_opt_step must all be restored
RUN = dict(
    model="gelan-t", epochs=2, imgsz=64, batch=4, workers=0, device="cpu", nbs=8, plots=False,
    deterministic=True, seed=3, close_mosaic=1, val=False,
)  # fmt: skip


class Killed(Exception):
    """Stands in for a kill after the epoch's checkpoint was written."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolov9k.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return str(generate_demo_dataset(root / "set", num_train=16, num_val=4, imgsz=64, seed=1))


def _assert_same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), (
                f"{what}[{k}]: max diff {(a[k].float() - b[k].float()).abs().max()}"
            )


def test_resume_reproduces_the_uninterrupted_run(tiny_data, tmp_path):
    full = train(data=tiny_data, project=str(tmp_path / "a"), **RUN)

    trainer = Trainer(dict(RUN, data=tiny_data, project=str(tmp_path / "b")))

    def kill(t: Trainer) -> None:
        if t.epoch == 0:
            raise Killed

    trainer.add_callback("on_fit_epoch_end", kill)
    with pytest.raises(Killed):
        trainer.fit()
    last = trainer.last
    assert load_checkpoint(last)["epoch"] == 0
    resumed = train(resume=str(last))
    assert resumed["save_dir"] == trainer.save_dir and resumed["epochs_completed"] == 2

    a, b = load_checkpoint(full["last"]), load_checkpoint(resumed["last"])
    _assert_same_state(a["state_dict"], b["state_dict"], "model")
    _assert_same_state(a["ema"], b["ema"], "ema")
    assert a["ema_updates"] == b["ema_updates"] and a["last_opt_step"] == b["last_opt_step"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        _assert_same_state(sa, sb, "optimizer state")
    assert [g["lr"] for g in a["optimizer"]["param_groups"]] == [
        g["lr"] for g in b["optimizer"]["param_groups"]
    ]

    with open(resumed["save_dir"] / "results.csv", newline="") as f:
        rows_b = list(csv.DictReader(f))
    with open(full["save_dir"] / "results.csv", newline="") as f:
        rows_a = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    assert [r["train/box_loss"] for r in rows_b] == [r["train/box_loss"] for r in rows_a]
    assert rows_b[-1]["metrics/mAP50-95"] == rows_a[-1]["metrics/mAP50-95"]


def test_resume_can_extend_a_finished_run_but_not_change_its_setup(tiny_data, tmp_path):
    run = dict(RUN, epochs=1)
    first = train(data=tiny_data, project=str(tmp_path), **run)
    last = first["last"]
    with pytest.raises(ValueError, match="complete.*epochs=N > 1"):
        train(resume=str(last))
    with pytest.raises(ConfigError, match="imgsz=128 differs"):
        train(resume=str(last), imgsz=128, epochs=2)
    ext = train(resume=True, project=str(tmp_path), epochs=2)  # True = the latest run of the project
    assert ext["save_dir"] == first["save_dir"] and load_checkpoint(ext["last"])["epoch"] == 1
    with pytest.raises(FileNotFoundError, match="not found"):
        train(resume=str(tmp_path / "nothing.pt"))


@pytest.mark.parametrize("resume", [3, 2.5, ["last.pt"]])
def test_resume_of_another_type_is_a_config_error(resume, tmp_path):
    with pytest.raises(ConfigError, match="expected True or a path to last.pt"):
        Trainer({"resume": resume, "project": str(tmp_path)})
