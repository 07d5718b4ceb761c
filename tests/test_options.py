"""The option schema (yolov9k.options): one parser and one rule per option for every command, the
functions' defaults, docs/options.md, and a table-driven check that every option acts or is refused."""

from __future__ import annotations

import ast
import inspect
import logging
import math
import re
import textwrap
from decimal import Decimal
from types import SimpleNamespace

import pytest
import torch

import yolov9k.engine.trainer as trainer_module
from yolov9k.cli import VERB_TABLE, build_parser
from yolov9k.errors import OptionError
from yolov9k.options import (
    HYP_DEFAULTS,
    HYP_KEYS,
    NO_EFFECT,
    TRAIN_OPTIONS,
    check_options,
    load_hyp,
    parse_cli_overrides,
    parse_texts,
    resolve_config,
)
from yolov9k.options.docs import DOC_PATH, render
from yolov9k.options.schema import Option, parse_decimal
from yolov9k.options.verbs import BENCH_BACKENDS, BENCH_CASES, COMMANDS, EXPORT_FORMATS

pytestmark = pytest.mark.usefixtures("one_thread")

# every command of the CLI: the verbs and their modes ("bench train")
SPECS = {
    **VERB_TABLE,
    **{f"{verb} {mode}": spec for verb, v in VERB_TABLE.items() for mode, spec in v.modes.items()},
}
ALL = [(command, o) for command, options in COMMANDS.items() for o in options]
IDS = [f"{c}:{o.name}" for c, o in ALL]


def test_every_command_has_its_table_and_a_parser():
    assert set(SPECS) == set(COMMANDS) == set(build_parser().verb_parsers)
    for command, spec in SPECS.items():
        own = TRAIN_OPTIONS if command == "train" else spec.options
        assert own == COMMANDS[command], command
        names = [o.name for o in spec.all_options]
        assert len(names) == len(set(names)), f"{command}: an option is declared twice"


# ---- defaults: one source --------------------------------------------------------------------------------

# parameters of a command's function that are no command-line option, and options that are no parameter
API_ONLY = {"val": {"verbose"}, "bench": {"verbose"}, "info": {"verbose"}}
CLI_ONLY = {"demo-data": {"root"}}  # the command line's default folder; the function needs a root


@pytest.mark.parametrize("command", list(SPECS))
def test_every_option_is_a_parameter_with_the_schema_default(command):
    spec = SPECS[command]
    params = inspect.signature(spec.fn).parameters
    own = {o.name: o for o in spec.options} if command != "train" else {o.name: o for o in TRAIN_OPTIONS}
    named = {n: p for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    takes_rest = len(named) < len(params)  # **overrides: train, bench train (the training options)
    for name, p in named.items():
        if name in API_ONLY.get(command, ()) or name in CLI_ONLY.get(command, ()):
            continue
        assert name in own, f"{command}: parameter {name} is no option of the schema"
        o = own[name]
        if p.default is inspect.Parameter.empty:
            assert o.required, f"{command} --{name}: required in the function, has a default in the schema"
        else:
            assert not o.required and p.default == o.default and type(p.default) is type(o.default), (
                f"{command} --{name}: default {p.default!r} in the function, {o.default!r} in the schema"
            )
    for name in own:
        if name not in named and name not in CLI_ONLY.get(command, ()):
            assert takes_rest and command == "train", f"{command} --{name} is no parameter of {spec.fn}"


@pytest.mark.parametrize(("command", "option"), ALL, ids=IDS)
def test_every_default_passes_its_own_check(command, option):
    if option.required or option.no_effect:
        return
    many = option.count is not None and option.default is not None
    assert option.check(option.default) == ([option.default] if many else option.default)


def test_hyperparameter_defaults_are_the_official_file_and_only_here():
    from yolov9k.data import HYP_SCRATCH_HIGH

    official = dict(
        lr0=0.01, lrf=0.01, momentum=0.937, weight_decay=0.0005, warmup_epochs=3.0, warmup_momentum=0.8,
        warmup_bias_lr=0.1, box=7.5, cls=0.5, cls_pw=1.0, obj=0.7, obj_pw=1.0, dfl=1.5, iou_t=0.2,
        anchor_t=5.0, fl_gamma=0.0, hsv_h=0.015, hsv_s=0.7, hsv_v=0.4, degrees=0.0, translate=0.1, scale=0.9,
        shear=0.0, perspective=0.0, flipud=0.0, fliplr=0.5, mosaic=1.0, mixup=0.15, copy_paste=0.3,
    )  # fmt: skip
    assert HYP_SCRATCH_HIGH == {**official, "label_smoothing": 0.0}
    assert set(NO_EFFECT) == {"obj", "obj_pw", "iou_t", "anchor_t", "copy_paste"}
    assert HYP_DEFAULTS == {k: v for k, v in HYP_SCRATCH_HIGH.items() if k not in NO_EFFECT}
    import yolov9k.loss

    assert not hasattr(yolov9k.loss, "DEFAULT_LOSS_HYP")


def test_literal_choices_match_the_code_they_name():
    from yolov9k.api.bench import CASES
    from yolov9k.api.export import FORMATS
    from yolov9k.ops import BACKENDS

    assert EXPORT_FORMATS == tuple(FORMATS) and BENCH_CASES == CASES
    assert BENCH_BACKENDS == ("auto", *BACKENDS)


def test_docs_options_md_is_current():
    assert DOC_PATH.read_text(encoding="utf-8") == render(), "run: python -m yolov9k.options.docs"


def test_help_shows_the_schema(capsys):
    parser = build_parser().verb_parsers["predict"]
    text = " ".join(parser.format_help().split())
    assert "--conf FLOAT confidence threshold; float in [0, 1] (default: 0.25)" in text
    assert "--save-txt [BOOL]" in text and "(required)" in text
    train_help = " ".join(build_parser().verb_parsers["train"].format_help().split())
    assert "--obj" not in train_help and "--copy-paste" not in train_help  # refused, so not offered
    assert "hyperparameters:" in train_help and "--label-smoothing FLOAT" in train_help


# ---- one decimal parser for every command (issue 22 item 13) ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0640", 640),
        ("010", 10),
        ("+7", 7),
        ("1e2", 100),
        ("1E2", 100),
        ("100.0", 100),
        (" 12 ", 12),
        ("0", 0),
    ],
)
def test_decimal_integers(text, value):
    assert parse_decimal(text) == Decimal(value)


@pytest.mark.parametrize(
    "text", ["6:40", "0x10", "0o17", "0b11", "1_000", "inf", "nan", "", "1e", "1,5", "1 2"]
)
def test_not_decimal(text):
    assert parse_decimal(text) is None


def _inside(o: Option) -> int | float:
    """A value inside ``o``'s range with several digits when the range allows them."""
    b = o.bounds
    low = b.low + (1 if b.low_open else 0)
    value = min(max(12, low), b.high - (1 if b.high_open else 0))
    if o.kind == "float" and b.high <= 1:
        return b.low + (b.high - b.low) / 4
    return int(value) if o.kind == "int" else float(value)


NUMBERS = [(c, o) for c, o in ALL if o.kind in ("int", "float") and not o.no_effect]


@pytest.mark.parametrize(("command", "option"), NUMBERS, ids=[f"{c}:{o.name}" for c, o in NUMBERS])
def test_every_number_option_reads_decimal_text_the_same_way(command, option):
    value = _inside(option)
    text = f"0{value}" if option.kind == "int" else f"{value!r}"
    got = parse_texts(COMMANDS[command], {option.name: [text] if option.count else text})[option.name]
    if option.count:
        got = got[0]
    assert got == value and type(got) is type(value)
    for bad in ("6:40", "0x1f", "1_0", "nan", "twelve"):
        with pytest.raises(OptionError, match=f"^{option.cli_name} {bad}: expected"):
            parse_texts(COMMANDS[command], {option.name: [bad] if option.count else bad})
    if option.kind == "int":
        with pytest.raises(OptionError, match="an integer"):
            parse_texts(COMMANDS[command], {option.name: ["1.5"] if option.count else "1.5"})


def test_the_issue_examples_of_octal_and_base_60():
    train = {o.name: o for o in TRAIN_OPTIONS}
    assert train["imgsz"].from_text("0640") == 640 and train["epochs"].from_text("010") == 10
    assert parse_cli_overrides(["imgsz=0640", "epochs=010"]) == {"imgsz": 640, "epochs": 10}
    for command in ("val", "predict", "info"):
        assert parse_texts(COMMANDS[command], {"imgsz": "0640"}) == {"imgsz": 640}
        with pytest.raises(OptionError, match="--imgsz 6:40: expected an integer"):
            parse_texts(COMMANDS[command], {"imgsz": "6:40"})


# ---- ranges, checked before any work (issue 22 item 17) ---------------------------------------------------


def _outside(o: Option) -> list[int | float]:
    """Values just outside ``o``'s range (and a huge one when it is bounded above)."""
    b = o.bounds
    out = [b.low if b.low_open else b.low - (1 if o.kind == "int" else 1e-6)]
    if math.isfinite(b.high):
        out += [b.high if b.high_open else b.high + (1 if o.kind == "int" else 1e-6), 1e30]
    return [int(v) if o.kind == "int" and v != 1e30 else v for v in out]


@pytest.mark.parametrize(("command", "option"), NUMBERS, ids=[f"{c}:{o.name}" for c, o in NUMBERS])
def test_every_number_option_refuses_values_outside_its_range(command, option):
    for value in _outside(option):
        text = repr(value)
        with pytest.raises(
            OptionError, match=f"^{option.cli_name} {re.escape(text)}: expected .* in " + r"[\[(]"
        ):
            parse_texts(COMMANDS[command], {option.name: [text] if option.count else text})
        if option.kind == "int" and value == 1e30:
            value = 10**30
        with pytest.raises(OptionError, match=f"^{option.name}="):
            check_options(COMMANDS[command], {option.name: value})
    for value in (float("nan"), float("inf")) if option.kind == "float" else (True, 3.0):
        with pytest.raises(OptionError, match=option.name):
            check_options(COMMANDS[command], {option.name: value})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--max-det", "1e9"], "--max-det 1e9: expected an integer in [1, 100000]"),
        (["val", "--model", "m.pt", "--max-det", "1e9"], "--max-det 1e9: expected an integer in [1, 100000]"),
        (["predict", "--model", "m.pt", "--source", "x", "--max-det", "1e9"], "--max-det 1e9"),
        (["export", "--model", "m.pt", "--nms", "--max-det", "1e9"], "--max-det 1e9"),
        (["train", "--imgsz", "1e9"], "--imgsz 1e9: expected an integer in [1, 8192]"),
        (
            ["export", "--model", "m.pt", "--batch", "100000"],
            "--batch 100000: expected an integer in [1, 256]",
        ),
        (["export", "--model", "m.pt", "--opset", "5"], "--opset 5: expected an integer in [9, 20]"),
        (["export", "--model", "m.pt", "--opset", "99"], "--opset 99: expected an integer in [9, 20]"),
        (["train", "--seed", "-1"], "--seed -1: expected an integer in [0, 4294967295]"),
        (["train", "--seed", "1e30"], "--seed 1e30: expected an integer in [0, 4294967295]"),
        (["train", "--workers", "-1"], "--workers -1: expected an integer in [0, 128]"),
        (["val", "--model", "m.pt", "--workers", "-5"], "--workers -5: expected an integer in [0, 128]"),
        (["bench", "train", "--seed", "-1"], "--seed -1"),
        (["demo-data", "--imgsz", "32"], "--imgsz 32: expected an integer in [64, 8192]"),
    ],
)
def test_out_of_range_options_fail_in_one_line_before_any_work(argv, message, tmp_path, monkeypatch, capsys):
    import yolov9k.cli as cli

    monkeypatch.chdir(tmp_path)
    for name in ("train", "val", "predict", "export", "bench_train", "generate_demo_dataset"):
        monkeypatch.setattr(cli, name, lambda *a, **k: pytest.fail("the command ran"))
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing written


def test_seed_out_of_range_leaves_no_run_folder_from_python(tmp_path):
    from yolov9k import train

    with pytest.raises(OptionError, match=r"seed=-1: expected an integer in \[0, "):
        train(seed=-1, project=str(tmp_path), epochs=1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e9, 10**9, 0, -1, True, 1.5, "300"])
def test_postprocess_checks_max_det(value):
    from yolov9k.ops import postprocess, postprocess_fixed

    pred = torch.rand(1, 6, 8)
    for fn in (postprocess, postprocess_fixed):
        with pytest.raises(ValueError, match=r"max_det must be an integer in \[1, 100000\]"):
            fn(pred, 0.25, 0.45, max_det=value)
        with pytest.raises(ValueError, match="max_nms must be an integer"):
            fn(pred, 0.25, 0.45, max_nms=value if value != 1e9 and value != 10**9 else 0)
    assert len(postprocess(pred, 0.0, 0.45, max_det=100_000)[0]) <= 8


def test_workers_one_rule_for_train_and_val():
    from yolov9k.options.verbs import VAL

    train = {o.name: o for o in TRAIN_OPTIONS}["workers"]
    val = {o.name: o for o in VAL}["workers"]
    assert train.range == val.range == "[0, 128]"
    for options in (TRAIN_OPTIONS, VAL):
        with pytest.raises(OptionError, match="workers=-5: expected an integer in"):
            check_options(options, {"workers": -5})
        assert check_options(options, {"workers": 0}) == {"workers": 0}


def test_api_functions_check_their_arguments_before_any_work(tmp_path, monkeypatch):
    from yolov9k.api import bench, export, info, predict, val
    from yolov9k.data import generate_demo_dataset

    monkeypatch.chdir(tmp_path)
    cases = [
        (lambda: val("missing.pt", workers=-5), "workers=-5"),
        (lambda: val("missing.pt", imgsz=10**9), "imgsz="),
        (lambda: predict("missing.pt", "nothing", max_det=10**9), "max_det="),
        (lambda: predict("missing.pt", "nothing", classes=[-1]), "classes="),
        (lambda: export("missing.pt", batch=100_000), "batch="),
        (lambda: export("missing.pt", opset=5), "opset="),
        (lambda: export("missing.pt", imgsz=(64, 64, 64)), "imgsz="),
        (lambda: info("missing.pt", imgsz=0), "imgsz="),
        (lambda: bench(repeat=0), "repeat="),
        (lambda: bench(ops=["nms"]), "ops="),
        (lambda: generate_demo_dataset(tmp_path / "d", seed=-1), "seed="),
    ]
    for call, name in cases:
        with pytest.raises(OptionError, match=f"^{name}"):
            call()
    assert list(tmp_path.iterdir()) == []


# ---- options with no effect in YOLOv9 ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(NO_EFFECT))
def test_no_effect_options_are_refused_from_the_cli_and_the_api(name, capsys):
    from yolov9k.cli import main

    flag = "--" + name.replace("_", "-")
    assert main(["train", flag, "0.5"]) == 1
    err = capsys.readouterr().err
    assert f"yolov9k train: error: {flag} 0.5: has no effect in YOLOv9 (" in err and err.count("\n") == 1
    with pytest.raises(OptionError, match=f"^{name}=0.5: has no effect in YOLOv9"):
        resolve_config({name: 0.5})
    with pytest.raises(OptionError, match="has no effect in YOLOv9"):
        parse_cli_overrides([f"{name}=0.5"])


def test_an_official_hyp_file_loads_with_one_warning(tmp_path, caplog):
    from yolov9k.data import HYP_SCRATCH_HIGH

    official = {k: v for k, v in HYP_SCRATCH_HIGH.items() if k not in ("label_smoothing", "warmup_epochs")}
    official["lr0"] = 0.02
    text = "\n".join(f"{k}: {v}  # comment" for k, v in official.items()) + "\nwarmup_epochs: 010\n"
    path = tmp_path / "hyp.scratch-high.yaml"
    path.write_text(text)
    with caplog.at_level(logging.WARNING, logger="yolov9k"):
        cfg = resolve_config({"hyp": str(path), "mosaic": 0.5})
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert all(k in warnings[0] for k in NO_EFFECT) and "no effect in YOLOv9" in warnings[0]
    assert cfg["lr0"] == 0.02 and cfg["mosaic"] == 0.5 and cfg["warmup_epochs"] == 10.0  # decimal, not octal
    assert not set(NO_EFFECT) & set(cfg)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolov9k"):
        assert load_hyp({"iou_t": 0.2, "lr0": "1e-3"}) == {"lr0": 1e-3}
    assert len(caplog.records) == 1 and "iou_t has no effect" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mixupp: 0.1\n", "unknown hyperparameter 'mixupp' in hyp file .*did you mean 'mixup'"),
        ("lr0: [1, 2]\n", r"lr0=\[.*in hyp file .*expected a number"),
        ("lr0: fast\n", "lr0='fast': expected a number .*in hyp file"),
        ("mosaic: 2\n", r"mosaic='2': expected a number in \[0, 1\] \(in hyp file"),
        ("- 1\n- 2\n", "must be a yaml mapping"),
        ("a: [\n", "is not valid yaml"),
    ],
)
def test_bad_hyp_files_are_refused_in_one_line(tmp_path, text, match):
    path = tmp_path / "hyp.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        resolve_config({"hyp": str(path)})


def test_sync_bn_in_a_single_process_warns(caplog, tmp_path):
    t = trainer_module.Trainer({"sync_bn": True, "project": str(tmp_path)})
    t.net, t.dist = torch.nn.Linear(1, 1), SimpleNamespace(enabled=False, is_main=True)
    with caplog.at_level(logging.WARNING, logger="yolov9k"):
        t.wrap_model()
    assert "sync_bn=True has no effect in a single process" in caplog.text


def test_options_that_act_only_with_another_warn_on_the_command_line(monkeypatch, caplog):
    import yolov9k.cli as cli

    seen = []
    monkeypatch.setattr(cli, "export", lambda **k: seen.append(k) or "x.onnx")
    with caplog.at_level(logging.WARNING, logger="yolov9k"):
        assert (
            cli.main(
                ["export", "--model", "m.pt", "--conf", "0.5", "--format", "torchscript", "--opset", "12"]
            )
            == 0
        )
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("--conf has no effect without --nms true" in line for line in lines)
    assert any("--opset has no effect without --format onnx" in line for line in lines)
    assert seen == [{"model": "m.pt", "conf": 0.5, "format": "torchscript", "opset": 12}]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolov9k"):
        assert cli.main(["export", "--model", "m.pt", "--nms", "--conf", "0.5"]) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# ---- every option acts: a table over the schema ----------------------------------------------------------
# Hyperparameters: a probe runs the component that reads each one (the loss, the augmenting dataset, the
# optimizer and its schedule as the trainer drives them) at the default and at another value, and the
# results must differ. The other training options: a real (tiny) run must read each of them. Options of
# the other commands: each is a parameter of its function that the function's body uses beyond the check.

LOSS_KEYS = {"box": 1.0, "cls": 1.0, "dfl": 1.0, "cls_pw": 2.0, "fl_gamma": 1.5, "label_smoothing": 0.1}
AUGMENT_KEYS = {
    "hsv_h": 0.5, "hsv_s": 0.0, "hsv_v": 0.0, "degrees": 30.0, "translate": 0.3, "scale": 0.3, "shear": 10.0,
    "perspective": 0.001, "flipud": 1.0, "fliplr": 1.0, "mosaic": 0.0, "mixup": 1.0,
}  # fmt: skip
OPTIMIZER_KEYS = {
    "lr0": 0.02, "lrf": 0.1, "momentum": 0.9, "weight_decay": 0.001, "warmup_epochs": 1.0,
    "warmup_momentum": 0.5, "warmup_bias_lr": 0.05,
}  # fmt: skip
PROBED = {**LOSS_KEYS, **AUGMENT_KEYS, **OPTIMIZER_KEYS}
# Training options a normal run does not read, and where they are applied instead.
NOT_READ_BY_THE_RUN = {
    "hyp": "resolve_config applies the file (test_an_official_hyp_file_loads_with_one_warning)"
}


def test_every_hyperparameter_has_a_probe():
    assert set(PROBED) == set(HYP_KEYS), "add a probe for each new hyperparameter"
    for k, v in PROBED.items():
        assert v != HYP_DEFAULTS[k], k


def _loss_probe(hyp: dict) -> torch.Tensor:
    from yolov9k.loss import DetectionLoss

    g = torch.Generator().manual_seed(0)
    model = SimpleNamespace(nc=3, stride=torch.tensor([8.0, 16.0, 32.0]), reg_max=16, is_dual=False)
    maps = [torch.randn(2, 64 + 3, s, s, generator=g) for s in (8, 4, 2)]
    targets = torch.tensor(
        [[0, 1, 0.5, 0.5, 0.4, 0.3], [1, 2, 0.3, 0.6, 0.2, 0.5], [1, 0, 0.7, 0.3, 0.3, 0.3]]
    )
    return DetectionLoss(model, hyp)(maps, targets)[1]


def _optimizer_probe(hyp: dict) -> list[float]:
    from yolov9k.engine.optim import apply_warmup, build_optimizer, lr_factor, set_epoch_lr, warmup_iterations

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = build_optimizer(net, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
    lf, nb, out = lr_factor(10, hyp["lrf"]), 50, []
    nw = warmup_iterations(hyp["warmup_epochs"], nb)
    for ni in (10, 120, 400):
        epoch = ni // nb
        if ni <= nw:
            apply_warmup(opt, ni, nw, epoch, lf, hyp, 64, 16)
        else:
            set_epoch_lr(opt, lf, epoch)
        out += [v for g in opt.param_groups for v in (g["lr"], g["momentum"], g["weight_decay"])]
    return out


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    from yolov9k.data import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("opts") / "demo", num_train=4, num_val=2, imgsz=64)


def _augment_probe(samples: list, hyp: dict) -> list[torch.Tensor]:
    from yolov9k.data import YoloDataset

    ds = YoloDataset(samples, 64, augment=True, hyp=hyp, batch_size=4, stride=32, seed=0)
    return [t for i in range(len(ds)) for t in ds[i][:2]]


@pytest.mark.parametrize("key", sorted(PROBED))
def test_every_hyperparameter_changes_what_reads_it(key, tiny_set):
    changed = {**HYP_DEFAULTS, key: PROBED[key]}
    if key in LOSS_KEYS:
        a, b = _loss_probe(dict(HYP_DEFAULTS)), _loss_probe(changed)
        assert not torch.equal(a, b), key
    elif key in OPTIMIZER_KEYS:
        assert _optimizer_probe(dict(HYP_DEFAULTS)) != _optimizer_probe(changed), key
    else:
        from yolov9k.data import load_dataset_config
        from yolov9k.data.splits import load_split

        samples = load_split(load_dataset_config(tiny_set), "train", "tiny")[0]
        a, b = _augment_probe(samples, dict(HYP_DEFAULTS)), _augment_probe(samples, changed)
        assert any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b)), key


class _ReadLog(dict):
    """A dict that records the keys read through ``[]`` and ``get`` (copies and iteration are not reads)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


def test_every_training_option_is_read_by_a_run(tiny_set, tmp_path, monkeypatch):
    logs: list[_ReadLog] = []
    real = trainer_module.hyp_from_config
    monkeypatch.setattr(
        trainer_module, "hyp_from_config", lambda cfg: logs.append(_ReadLog(real(cfg))) or logs[-1]
    )
    run = dict(
        model="gelan-t", data=str(tiny_set), epochs=2, imgsz=64, batch=2, nbs=2, workers=0, device="cpu",
        project=str(tmp_path), plots=False, verbose=False,
    )  # fmt: skip
    trainer = trainer_module.Trainer(run)
    trainer.args = args = _ReadLog(trainer.args)
    calls = {"n": 0}

    def poison(t):  # one non-finite loss, so that the skip rule (max_nan_skips) runs too
        real_loss = t.loss_fn

        def loss_fn(preds, targets):
            calls["n"] += 1
            total, items = real_loss(preds, targets)
            return (total * float("nan"), items) if calls["n"] == 1 else (total, items)

        t.loss_fn = loss_fn

    trainer.add_callback("on_pretrain_end", poison)
    trainer.fit()
    unread = {o.name for o in TRAIN_OPTIONS if not o.no_effect and o.name not in HYP_KEYS} - args.read
    assert unread == set(NOT_READ_BY_THE_RUN), f"options the run never read: {sorted(unread)}"
    hyp_read = logs[0].read
    assert set(LOSS_KEYS) | set(OPTIMIZER_KEYS) <= hyp_read, sorted(
        set(LOSS_KEYS) | set(OPTIMIZER_KEYS) - hyp_read
    )
    assert all(
        trainer.train_set.hyp[k] == logs[0][k] for k in AUGMENT_KEYS
    )  # the dataset gets the run's values


def _uses_beyond_the_check(fn, name: str) -> bool:
    """Whether ``fn``'s body loads ``name`` outside its ``check_options(...)`` call."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    skip = {
        id(n)
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "check_options"
        for n in ast.walk(call)
    }
    return any(
        isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) and id(n) not in skip
        for n in ast.walk(tree)
    )


VERB_OPTIONS = [(c, o) for c, o in ALL if c != "train" and o.name not in CLI_ONLY.get(c, ())]


@pytest.mark.parametrize(("command", "option"), VERB_OPTIONS, ids=[f"{c}:{o.name}" for c, o in VERB_OPTIONS])
def test_every_option_of_the_other_commands_is_used_by_its_function(command, option):
    assert _uses_beyond_the_check(SPECS[command].fn, option.name), f"{command} --{option.name} is never used"


def test_the_use_check_can_fail():
    def fn(a, b):
        check_options((), dict(a=a, b=b))
        return a

    assert _uses_beyond_the_check(fn, "a") and not _uses_beyond_the_check(fn, "b")
