"""Training engine: options, optimizer/warm-up/EMA rules, and short end-to-end runs on a tiny demo set."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import yolov9k.engine.trainer as trainer_module
from yolov9k.checkpoint import load_checkpoint, load_model
from yolov9k.engine import ConfigError, Trainer, parse_cli_overrides, resolve_config, train, validate
from yolov9k.engine.ema import ModelEMA
from yolov9k.engine.optim import (
    accumulate_steps,
    apply_warmup,
    build_optimizer,
    lr_factor,
    warmup_iterations,
)
from yolov9k.loss import DetectionLoss
from yolov9k.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")

# a tiny, fast run: accumulate 1 (nbs = batch), no warm-up and a higher lr so that the weights move from the
# first step, and no augmentation so that both epochs see the same images (the loss must fall within 8 steps)
NO_AUG = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0, fliplr=0.0, mosaic=0.0, mixup=0.0)
TINY = dict(
    model="gelan-t", epochs=2, imgsz=64, batch=4, workers=0, device="cpu", nbs=4, warmup_epochs=0.0, lr0=0.05,
    **NO_AUG,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolov9k.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return str(generate_demo_dataset(root / "set", num_train=16, num_val=8, imgsz=64, seed=0))


# ---- options ------------------------------------------------------------------------------------------


def test_unknown_option_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"unknown training option 'lr'.*'lr0'"):
        resolve_config({"lr": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        train(epoch=3)  # fails before touching data or models


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("epochs", "ten", "integer"),
        ("epochs", 2.5, "integer"),
        ("epochs", 0, r"integer in \[1, "),
        ("lr0", float("nan"), "finite"),
        ("amp", "fp8", "one of"),
        ("channels_last", "maybe", "one of"),
        ("channels_last", 1, "one of"),
        ("cos_lr", 1, "True or False"),
        ("iou", 1.5, r"\[0, 1\]"),
    ],
)
def test_bad_option_values_are_rejected(key, value, match):
    with pytest.raises(ConfigError, match=match):
        resolve_config({key: value})


def test_overrides_and_cli_parsing():
    cfg = resolve_config(
        parse_cli_overrides(["epochs=3", "lr0=0.02", "amp=false", "name=run1", "cos_lr=true"])
    )
    assert (cfg["epochs"], cfg["lr0"], cfg["amp"], cfg["name"], cfg["cos_lr"]) == (
        3,
        0.02,
        False,
        "run1",
        True,
    )
    assert cfg["momentum"] == 0.937 and cfg["mosaic"] == 1.0  # official hyp.scratch-high defaults
    assert resolve_config({"hyp": {"mosaic": 0.5}, "lr0": 0.03})["mosaic"] == 0.5
    with pytest.raises(ConfigError, match="did you mean 'mixup'"):
        resolve_config({"hyp": {"mixupp": 0.1}})


@pytest.mark.parametrize(
    "setting, device, capability, want",
    [
        ("auto", "cpu", "AVX512", True),  # measured faster there (benchmarks/RESULTS.md)
        ("auto", "cpu", "AVX2", False),  # measured slower there
        ("auto", "cpu", "DEFAULT", False),
        ("auto", "cuda", "AVX512", False),  # not measured on a GPU yet
        (True, "cpu", "AVX2", True),
        (False, "cpu", "AVX512", False),
    ],
)
def test_channels_last_auto_follows_the_cpu_capability(monkeypatch, setting, device, capability, want):
    from yolov9k.run_setup import use_channels_last

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert resolve_config({"channels_last": setting})["channels_last"] == setting
    assert use_channels_last(setting, torch.device(device)) is want


# ---- optimizer, schedule, EMA -------------------------------------------------------------------------


def test_param_groups_follow_the_official_split():
    m = build_model("gelan-t", num_classes=3)
    opt = build_optimizer(m, "SGD", lr=0.01, momentum=0.937, weight_decay=5e-4)
    names = {id(p): n for n, p in m.named_parameters()}
    bias, weight, norm = (g["params"] for g in opt.param_groups)
    assert all(names[id(p)].endswith(".bias") for p in bias)
    assert all(".bn." in names[id(p)] and names[id(p)].endswith(".weight") for p in norm)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 5e-4, 0.0]
    trainable = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == trainable
    assert opt.param_groups[0]["nesterov"] is True


def test_warmup_and_lr_schedule_values():
    assert warmup_iterations(3.0, 10) == 100 and warmup_iterations(3.0, 1000) == 3000
    assert accumulate_steps(64, 16) == 4 and accumulate_steps(64, 100) == 1
    lf = lr_factor(100, 0.01)
    assert lf(0) == 1.0 and math.isclose(lf(100), 0.01) and math.isclose(lf(50), 0.505)
    cos = lr_factor(100, 0.01, cosine=True)
    assert cos(0) == 1.0 and math.isclose(cos(100), 0.01) and math.isclose(cos(50), 0.505)

    m = build_model("gelan-t", num_classes=3)
    opt = build_optimizer(m, "SGD", lr=0.01)
    hyp = {"warmup_bias_lr": 0.1, "warmup_momentum": 0.8, "momentum": 0.937}
    acc = apply_warmup(opt, 0, 100, 0, lf, hyp, nbs=64, batch=16)
    assert acc == 1 and [g["lr"] for g in opt.param_groups] == [0.1, 0.0, 0.0]
    assert opt.param_groups[1]["momentum"] == 0.8
    acc = apply_warmup(opt, 50, 100, 0, lf, hyp, nbs=64, batch=16)
    assert acc == 2  # round(2.5) half-to-even, as numpy
    assert np.allclose([g["lr"] for g in opt.param_groups], [0.055, 0.005, 0.005])
    assert math.isclose(opt.param_groups[2]["momentum"], 0.8685)
    acc = apply_warmup(opt, 100, 100, 1, lf, hyp, nbs=64, batch=16)
    assert acc == 4 and np.allclose([g["lr"] for g in opt.param_groups], 0.01 * lf(1))


def test_ema_follows_the_official_decay():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    m.nc, m.names = 1, {0: "a"}
    ema = ModelEMA(m, decay=0.9999, tau=2000)
    e0 = copy.deepcopy(ema.ema.state_dict())
    with torch.no_grad():
        m[0].weight.add_(1.0)
        m[1].running_mean.add_(2.0)
    m[1].num_batches_tracked += 5
    ema.update(m)
    d = 0.9999 * (1 - math.exp(-1 / 2000))
    want = d * e0["0.weight"] + (1 - d) * m[0].weight.detach()
    torch.testing.assert_close(ema.ema[0].weight, want, rtol=0, atol=1e-7)
    torch.testing.assert_close(ema.ema[1].running_mean, (1 - d) * torch.full((4,), 2.0), rtol=0, atol=1e-7)
    assert int(ema.ema[1].num_batches_tracked) == 5 and ema.updates == 1
    assert not any(p.requires_grad for p in ema.ema.parameters())


def test_ema_update_walks_every_state_entry_in_order():
    """The EMA update gathers the model's tensors without state_dict(): every state entry, in the
    state dict's order (non-persistent buffers excluded), and a model of another shape is refused."""
    from yolov9k.engine.ema import _state_tensors

    m = build_model("yolov9-t", num_classes=3)
    m.register_buffer("scratch", torch.zeros(2), persistent=False)
    got = _state_tensors(m)
    want = list(m.state_dict(keep_vars=True).values())
    assert len(got) == len(want) and all(a is b for a, b in zip(got, want))
    ema = ModelEMA(m)
    with pytest.raises(ValueError, match="state entries"):
        ema.update(build_model("gelan-t", num_classes=3))


# ---- end-to-end ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    """One 2-epoch run; also keeps the initial weights for the loss comparison."""
    project = tmp_path_factory.mktemp("runs")
    trainer = Trainer(dict(TINY, data=tiny_data, project=str(project)))
    start = {}
    trainer.add_callback("on_pretrain_end", lambda t: start.update(copy.deepcopy(t.net.state_dict())))
    result = trainer.fit()
    return trainer, result, start


def test_two_epochs_write_the_run_files(tiny_run):
    trainer, result, _ = tiny_run
    d = result["save_dir"]
    assert d == Path(trainer.args["project"]).resolve() / "exp"  # <project>/<name>, as the official code
    for f in ("args.yaml", "weights/last.pt", "weights/best.pt", "results.csv", "train_batch0.jpg"):
        assert (d / f).is_file(), f
    args = yaml.safe_load((d / "args.yaml").read_text())
    assert args["epochs"] == 2 and args["imgsz"] == 64 and args["nbs"] == 4

    # the default layout ("auto") is the CPU's measured best one, and the model trained in it
    from yolov9k.run_setup import use_channels_last

    assert trainer.channels_last is use_channels_last("auto", torch.device("cpu"))
    deep_conv = trainer.net.model[1].conv.weight  # (32, 16, 3, 3)
    assert deep_conv.is_contiguous(memory_format=torch.channels_last) is trainer.channels_last

    ck = torch.load(d / "weights" / "last.pt", map_location="cpu", weights_only=True)
    assert ck["format"] == "yolov9k" and ck["epoch"] == 1 and ck["trainer_version"] == 1
    assert {"ema", "optimizer", "rng", "args", "best_fitness"} <= ck.keys()
    assert len(ck["optimizer"]["param_groups"]) == 3
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values() if v.is_floating_point())
    best = load_model(d / "weights" / "best.pt")
    assert best.nc == 5 and best.names[0] == load_checkpoint(d / "weights" / "best.pt")["names"][0]

    with open(d / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train/box_loss", "metrics/mAP50-95", "val/cls_loss", "lr/pg0", "lr/pg2"):
        assert all(math.isfinite(float(r[key])) for r in rows), key
    assert float(rows[0]["lr/pg1"]) == pytest.approx(0.05)  # no warm-up: lr0 * lf(0)
    assert float(rows[1]["lr/pg1"]) == pytest.approx(0.05 * ((1 - 1 / 2) * 0.99 + 0.01))
    assert result["epochs_completed"] == 2 and result["nan_skips"] == 0
    assert set(result["metrics"]) >= {
        "map50_95",
        "map50",
        "precision",
        "recall",
        "loss",
        "speed",
        "per_class",
    }


def _train_loss(state: dict, batch) -> float:
    m = build_model("gelan-t", num_classes=5)
    m.load_state_dict(state)
    imgs, targets = batch[:2]
    with torch.no_grad():
        return float(DetectionLoss(m)(m.train()(imgs.float() / 255), targets)[1].sum())


def test_training_lowers_the_loss(tiny_run):
    trainer, result, start = tiny_run
    with open(result["save_dir"] / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epoch_loss = [sum(float(r[f"train/{k}_loss"]) for k in ("box", "cls", "dfl")) for r in rows]
    assert epoch_loss[1] < epoch_loss[0], epoch_loss
    batch = next(iter(trainer.train_loader))
    before, after = (
        _train_loss(start, batch),
        _train_loss(load_checkpoint(result["last"])["state_dict"], batch),
    )
    # Six SGD steps on a 64 px toy set: rounding-level differences between paths move the trajectory
    # (after / before was 0.81 with the fused C++ BN + SiLU and 0.91 with the references only on the
    # 2-core dev VM), so the bound asks for a clear drop, not a particular one.
    assert after < 0.95 * before, (before, after)
    # validation ran on real data with the loss of the same forward pass
    m = validate(
        load_model(result["best"]), trainer.val_loader, loss_fn=DetectionLoss(load_model(result["best"]))
    )
    assert m["num_images"] == 8 and m["num_targets"] > 0
    assert (
        np.allclose(m["loss"], result["metrics"]["loss"], rtol=1e-5)
        and m["map50"] == result["metrics"]["map50"]
    )
    # the EMA weights moved away from the initial ones
    last = load_checkpoint(result["last"])
    moved = max((last["ema"][k].float() - v.float()).abs().max().item() for k, v in start.items())
    assert moved > 1e-3


def test_nan_loss_skips_the_step_and_is_counted(tiny_data, tmp_path):
    trainer = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), epochs=1, plots=False))
    calls = {"n": 0}

    def poison(t: Trainer) -> None:
        real = t.loss_fn

        def loss_fn(preds, targets):
            total, items = real(preds, targets)
            calls["n"] += 1
            return (total * float("nan"), items) if calls["n"] == 2 else (total, items)

        t.loss_fn = loss_fn

    trainer.add_callback("on_pretrain_end", poison)
    result = trainer.fit()
    assert calls["n"] == 4 and result["nan_skips"] == 1 and trainer.nan_skips == 1
    ck = load_checkpoint(result["last"])
    assert ck["nan_skips"] == 1
    for sd in (ck["state_dict"], ck["ema"]):
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    # 3 good batches with accumulate 1 -> 3 optimizer steps -> 3 EMA updates
    assert ck["ema_updates"] == 3
    with open(result["save_dir"] / "results.csv", newline="") as f:
        assert list(csv.DictReader(f))[-1]["nan_skips"] == "1"


def test_too_many_nan_skips_abort_with_a_clear_error(tiny_data, tmp_path):
    trainer = Trainer(
        dict(TINY, data=tiny_data, project=str(tmp_path), epochs=1, plots=False, max_nan_skips=1)
    )

    def poison(t: Trainer) -> None:
        real = t.loss_fn
        t.loss_fn = lambda p, tg: (lambda r: (r[0] * float("inf"), r[1]))(real(p, tg))

    trainer.add_callback("on_pretrain_end", poison)
    with pytest.raises(FloatingPointError, match="max_nan_skips=1"):
        trainer.fit()


# ---- val_period ---------------------------------------------------------------------------------------

RUN_3 = dict(TINY, epochs=3, val_period=2, plots=False, verbose=False)


def _record_validated(trainer: Trainer) -> list[int]:
    """1-based epochs that ended with a validation (filled while the trainer runs)."""
    validated: list[int] = []
    trainer.add_callback("on_fit_epoch_end", lambda t: validated.append(t.epoch + 1) if t.metrics else None)
    return validated


def _csv_rows(save_dir) -> list[dict[str, str]]:
    with open(save_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_val_period_option_is_range_checked():
    assert resolve_config({})["val_period"] == 1
    assert resolve_config({"val_period": "4"})["val_period"] == 4
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="val_period"):
            resolve_config({"val_period": bad})


@pytest.mark.parametrize(
    ("val", "period", "epochs", "due"),
    [
        (True, 1, 4, [True, True, True, True]),
        (True, 2, 5, [False, True, False, True, False]),
        (True, 3, 4, [False, False, True, False]),
        (False, 1, 3, [False, False, False]),
    ],
)
def test_val_due(val, period, epochs, due):
    t = Trainer(dict(val=val, val_period=period, epochs=epochs))
    assert [t.val_due(e) for e in range(epochs)] == due


@pytest.mark.parametrize(
    ("metrics", "best_epoch", "epoch", "patience", "stop"),
    [
        ({"fitness": 0.1}, 1, 3, 2, True),  # validated, 2 epochs since the best
        ({"fitness": 0.1}, 1, 2, 2, False),  # only 1 epoch since the best
        ({}, 1, 5, 2, False),  # no validation this epoch: nothing to decide on
        ({"fitness": 0.1}, -1, 5, 2, False),  # never validated before (cannot happen after a validation)
        ({"fitness": 0.1}, 0, 9, 0, False),  # patience 0 = never
    ],
)
def test_patience_counts_epochs_since_the_best_and_stops_only_after_a_validation(
    metrics, best_epoch, epoch, patience, stop
):
    t = Trainer(dict(patience=patience))
    t.metrics, t.best_epoch = metrics, best_epoch
    assert t.out_of_patience(epoch) is stop


def test_val_period_2_validates_after_epochs_2_and_3(tiny_data, tmp_path, monkeypatch):
    calls = []
    real_validate = trainer_module.validate
    monkeypatch.setattr(trainer_module, "validate", lambda *a, **k: calls.append(1) or real_validate(*a, **k))
    trainer = Trainer(dict(RUN_3, data=tiny_data, project=str(tmp_path), patience=1))
    validated = _record_validated(trainer)
    result = trainer.fit()

    assert validated == [2, 3]
    assert len(calls) == 3  # epochs 2 and 3, then best.pt in finish()
    assert result["epochs_completed"] == 3  # patience 1 did not stop the run after epoch 1 (not validated)
    rows = _csv_rows(result["save_dir"])
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    for key in ("metrics/mAP50", "metrics/mAP50-95", "val/box_loss"):
        assert [math.isnan(float(r[key])) for r in rows] == [True, False, False], key
    assert all(math.isfinite(float(r["train/box_loss"])) for r in rows)
    assert result["best"].is_file() and result["best_epoch"] in (2, 3)
    assert load_checkpoint(result["best"])["epoch"] + 1 == result["best_epoch"]


def test_resume_keeps_the_val_period_and_may_change_it(tiny_data, tmp_path):
    first = Trainer(dict(RUN_3, data=tiny_data, project=str(tmp_path), epochs=4))
    validated_first = _record_validated(first)

    def kill(t: Trainer) -> None:
        if t.epoch == 0:
            raise KeyboardInterrupt  # a kill after the epoch's checkpoint was written

    first.add_callback("on_fit_epoch_end", kill)
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    assert validated_first == [] and not first.best.exists()

    resumed = Trainer(dict(resume=str(first.last)))
    validated = _record_validated(resumed)
    result = resumed.fit()
    assert resumed.args["val_period"] == 2
    assert validated == [2, 4] and result["epochs_completed"] == 4

    extended = Trainer(dict(resume=str(first.last), epochs=7, val_period=3))
    validated = _record_validated(extended)
    extended.fit()
    assert extended.args["val_period"] == 3
    assert validated == [6, 7]  # every third epoch of the run, and the last
    assert [r["epoch"] for r in _csv_rows(result["save_dir"])] == [str(e) for e in range(1, 8)]


# ---- progress display ---------------------------------------------------------------------------------


class _DeviceLoss:
    """Stands in for the running mean loss on the device: counts the host reads (``tolist``)."""

    def __init__(self) -> None:
        self.values, self.reads = [0.0, 0.0, 0.0], 0

    def tolist(self) -> list[float]:
        self.reads += 1
        return list(self.values)


class _Bar:
    """Records what a tqdm bar is given."""

    def __init__(self) -> None:
        self.descriptions: list[str] = []
        self.updates = 0

    def set_description(self, text: str) -> None:
        self.descriptions.append(text)

    def update(self, n: int) -> None:
        self.updates += n


def _progress(nb: int):
    from types import SimpleNamespace

    from yolov9k.engine.trainer import _Progress

    stub = SimpleNamespace(
        args={"epochs": 3, "verbose": True}, nb=nb, is_main=True, device=torch.device("cpu")
    )
    return _Progress(stub, epoch=1)


def test_progress_lines_read_the_loss_only_when_they_are_shown(caplog):
    progress, loss = _progress(nb=25), _DeviceLoss()
    caplog.set_level("INFO", logger="yolov9k")
    for i in range(25):
        loss.values = [i + 0.5, 2 * i, 0.25]
        progress.update(i, loss, instances=7, size=64)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().endswith("/25")]
    # a line every 25 // 10 = 2 batches, and the last one
    assert [int(line.rsplit(" ", 1)[1].split("/")[0]) for line in lines] == [*range(2, 25, 2), 25]
    assert loss.reads == len(lines) == 13
    assert lines[-1].split() == ["2/3", "0G", "24.5", "48", "0.25", "7", "64", "25/25"]


def test_progress_bar_description_is_refreshed_at_most_every_refresh_interval():
    progress, loss, bar = _progress(nb=10), _DeviceLoss(), _Bar()
    progress.bar = bar
    ticks = iter(0.2 * k for k in range(10))  # one batch per 0.2 s
    progress.clock = lambda: next(ticks)
    for i in range(10):
        loss.values = [float(i), 0.0, 0.0]
        progress.update(i, loss, instances=1, size=32)
    assert bar.updates == 10
    # batches at 0.0, 0.6, 1.2 s (REFRESH_S 0.5) and the last one, at 1.8 s
    assert loss.reads == len(bar.descriptions) == 4
    assert [float(d.split()[2]) for d in bar.descriptions] == [0.0, 3.0, 6.0, 9.0]
