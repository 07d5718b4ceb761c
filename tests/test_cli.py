"""The ``yolov9k`` command: help of every verb, unknown options, every verb end to end, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from yolov9k.cli import VERBS, main

pytestmark = pytest.mark.usefixtures("one_thread")

IMGSZ = 64


@pytest.fixture(scope="module")
def demo_yaml(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "demo"
    assert (
        main(["demo-data", "--root", str(root), "--num-train", "8", "--num-val", "4", "--imgsz", "96"]) == 0
    )
    return root / "demo.yaml"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from yolov9k.checkpoint import save_checkpoint
    from yolov9k.models import build_model

    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "gelan-t5.pt", build_model("gelan-t", num_classes=5)
    )


KEY_OPTIONS = {
    "train": ["--epochs", "--imgsz", "--batch", "--data", "--resume", "--lr0", "--mosaic"],
    "val": ["--model", "--data", "--conf", "--iou", "--save-json", "--split"],
    "predict": ["--model", "--source", "--conf", "--save-txt", "--save-json", "--classes"],
    "export": ["--model", "--format", "--nms", "--opset", "--max-det", "--dynamic"],
    "convert": ["--source", "--output", "--reparameterize", "--half"],
    "demo-data": ["--root", "--num-train", "--num-val", "--seed"],
    "bench": ["--full", "--device", "--ops", "--repeat", "yolov9k bench train"],
    "info": ["--model", "--imgsz", "--fuse"],
}


@pytest.mark.parametrize("verb", VERBS)
def test_help_of_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    missing = [o for o in KEY_OPTIONS[verb] if o not in out]
    assert not missing, f"{verb} --help does not mention {missing}"


def test_bench_train_help_lists_its_options_with_the_demo_schedule(capsys):
    from yolov9k.api.bench_train import SCHEDULE

    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("usage: yolov9k bench train")
    for flag in ("--backend", "--threads", "--out", "--workers", "--val-period", "--lr0"):
        assert flag in out, flag
    assert "--full" not in out and "--repeat" not in out  # the options of plain 'bench' are not its own
    assert f"extend a finished run); int in [1, 100000] (default: {SCHEDULE['epochs']})" in out
    assert f"int in [1, 8192] (default: {SCHEDULE['imgsz']})" in out


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["bench", "train", "--epoch", "3"], "--epochs"),
        (["bench", "train", "--repeat", "3"], None),  # an option of 'bench' only
        (["bench", "--repeat", "2", "train"], None),  # a mode follows its verb
    ],
)
def test_bench_train_rejects_options_it_does_not_have(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err
    if hint:
        assert f"did you mean {hint}" in err


def test_bench_train_checks_option_values_before_training(capsys):
    assert main(["bench", "train", "--val-period", "0"]) == 1
    assert "--val-period 0: expected an integer in [1, " in capsys.readouterr().err
    assert main(["bench", "train", "--threads", "0", "--epochs", "1"]) == 1
    assert "--threads 0: expected an integer in [1, 1024]" in capsys.readouterr().err


def test_help_defaults_are_the_api_defaults(capsys):
    from yolov9k.options import DEFAULTS

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {DEFAULTS['epochs']})" in out and "initial learning rate" in out
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "confidence threshold; float in [0, 1] (default: 0.25)" in " ".join(
        capsys.readouterr().out.split()
    )


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["val", "--model", "m.pt", "--confidence", "0.1"], "--conf"),
        (["predict", "--model", "m.pt", "--sourc", "x"], "--source"),
        (["train", "--epoch", "3"], "--epochs"),
        (["export", "--model", "m.pt", "--opset-version", "12"], "--opset"),
    ],
)
def test_unknown_option_fails_with_a_suggestion(argv, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and f"did you mean {hint}" in err


def test_train_option_types_are_checked(capsys):
    assert main(["train", "--epochs", "many"]) == 1
    assert "epochs" in capsys.readouterr().err


def test_console_script_is_installed():
    exe = shutil.which("yolov9k") or os.path.join(os.path.dirname(sys.executable), "yolov9k")
    if not os.path.exists(exe):
        pytest.skip("console script not installed (pip install -e .)")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and all(v in r.stdout for v in VERBS)


def test_val_predict_export_info_end_to_end(demo_yaml, ckpt, tmp_path, capsys):
    runs = str(tmp_path / "runs")
    common = ["--imgsz", str(IMGSZ), "--device", "cpu", "--project", runs]
    assert main(["val", "--model", str(ckpt), "--data", str(demo_yaml), "--batch", "4", "--workers", "0",
                 "--plots", "false", "--save_json", *common]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "mAP50-95" in out
    rows = json.loads((tmp_path / "runs" / "exp" / "predictions.json").read_text())
    assert isinstance(rows, list)

    images = demo_yaml.parent / "images" / "val"
    assert main(["predict", "--model", str(ckpt), "--source", str(images), "--conf", "0.001", "--save-txt",
                 "--save-json", "--name", "p", *common]) == 0  # fmt: skip
    pred_dir = tmp_path / "runs" / "p"
    assert len(list(pred_dir.glob("*.jpg"))) + len(list(pred_dir.glob("*.png"))) == 4
    assert len(json.loads((pred_dir / "predictions.json").read_text())) == 4

    onnx = tmp_path / "m.onnx"
    assert main(["export", "--model", str(ckpt), "--imgsz", str(IMGSZ), "--file", str(onnx), "--nms"]) == 0
    assert onnx.is_file() and f"exported {onnx}" in capsys.readouterr().out

    assert main(["info", "--model", str(ckpt), "--imgsz", "320"]) == 0
    out = capsys.readouterr().out
    assert "parameters" in out and "GFLOPs at 320" in out and "ops_cpu" in out


def test_convert_bench_demo_end_to_end(fixtures_dir, tmp_path, capsys):
    out = tmp_path / "y9.pt"
    assert (
        main(["convert", "--source", str(fixtures_dir / "gelan-t_official_format.pt"), "--output", str(out)])
        == 0
    )
    assert torch.load(out, weights_only=True)["format"] == "yolov9k"
    capsys.readouterr()
    assert main(["bench", "--ops", "box_iou", "--model", "none", "--repeat", "1", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "box_iou" in table and "torch" in table and "postprocess" not in table


@pytest.mark.parametrize(
    "argv, want",
    [
        (["--channels-last"], {"channels_last": True}),  # a flag alone, as before 'auto' existed
        (["--channels-last", "auto"], {"channels_last": "auto"}),
        (["--channels-last", "false", "--plots"], {"channels_last": False, "plots": True}),
    ],
)
def test_train_flags_may_stand_alone(monkeypatch, capsys, argv, want):
    import yolov9k.cli as cli

    seen = []
    monkeypatch.setattr(cli, "train", lambda **overrides: seen.append(overrides) or {})
    assert main(["train", *argv]) == 0
    assert seen == [want]


def test_train_end_to_end(demo_yaml, tmp_path, capsys):
    small = ["--epochs", "1", "--imgsz", str(IMGSZ), "--batch", "4", "--workers", "0", "--device", "cpu"]
    where = ["--project", str(tmp_path), "--name", "t", "--plots", "false"]
    code = main(["train", "--model", "gelan-t", "--data", str(demo_yaml), *small, *where])
    assert code == 0
    assert (tmp_path / "t" / "weights" / "last.pt").is_file()  # --project P --name N -> P/N


def test_bad_inputs_give_one_line_errors(demo_yaml, ckpt, tmp_path, capsys):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    assert main(["convert", "--source", str(text), "--output", str(tmp_path / "o.pt")]) == 1
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint" in err and "Traceback" not in err
    assert (
        main(["predict", "--model", str(ckpt), "--source", str(tmp_path / "none.jpg"), "--device", "cpu"])
        == 1
    )
    assert "source not found" in capsys.readouterr().err
    assert main(["val", "--model", str(tmp_path / "missing.pt"), "--data", str(demo_yaml)]) == 1
    assert "neither a checkpoint file nor a zoo name" in capsys.readouterr().err
    # a corrupt image in a predict folder is skipped and reported, the run succeeds
    folder = tmp_path / "imgs"
    shutil.copytree(demo_yaml.parent / "images" / "val", folder)
    (folder / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    opts = ["--imgsz", str(IMGSZ), "--device", "cpu", "--project", str(tmp_path / "runs"), "--save", "false"]
    assert main(["predict", "--model", str(ckpt), "--source", str(folder), *opts]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable input(s)" in captured.err and "zz_corrupt.png" in captured.err
    assert "4 image(s) done" in captured.out


# ---- user errors: one line; anything else: the traceback and a request for a bug report (issue 19) ---------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["val", "--model", "gelan-t", "--data", "{tmp}/missing.yaml"], "dataset YAML not found"),
        (["val", "--model", "{tmp}/missing.pt"], "neither a checkpoint file nor a zoo name"),
        (["info", "--model", "{tmp}/missing.pt"], "neither a checkpoint file nor a zoo name"),
        (
            ["predict", "--model", "gelan-t", "--source", "{tmp}/none.jpg", "--device", "cpu"],
            "source not found",
        ),
        (["export", "--model", "gelan-t", "--half", "--device", "cpu"], "needs a CUDA device"),
        (["export", "--model", "gelan-t", "--format", "torchscript", "--nms"], "format='onnx' only"),
        (["export", "--model", "gelan-t", "--imgsz", "33"], "multiple of the model stride"),
        (["export", "--model", "gelan-t", "--file", "{tmp}"], "is a folder; give a file name"),
        (["convert", "--source", "{tmp}/a.pt", "--output", "{tmp}/b.pt"], "checkpoint not found"),
        (["val", "--model", "gelan-t", "--device", "cuda:7"], "device='cuda:7'"),
        (["train", "--resume", "{tmp}/missing/last.pt"], "checkpoint not found"),
        (
            ["train", "--data", "{tmp}/missing.yaml", "--device", "cpu", "--project", "{tmp}/runs"],
            "not found",
        ),
        (["demo-data", "--root", "{tmp}/file.txt"], "is a file, not a folder"),
    ],
)
def test_user_errors_print_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("x")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "bug" not in err, err
    assert err.startswith(f"yolov9k {argv[0]}: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def _failing(monkeypatch, exc: BaseException) -> None:
    import dataclasses

    import yolov9k.cli as cli

    def run(args):
        raise exc

    monkeypatch.setitem(cli.VERB_TABLE, "info", dataclasses.replace(cli.VERB_TABLE["info"], run=run))


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("operands could not be broadcast together"),
        TypeError("unsupported operand type(s)"),
        KeyError("cv3"),
        IndexError("list index out of range"),
        RuntimeError("shape '[2, 3]' is invalid for input of size 5"),
        FileNotFoundError("a library's message without an errno"),
        OSError(22, "Invalid argument"),
        AttributeError("'NoneType' object has no attribute 'shape'"),
    ],
)
def test_internal_errors_keep_their_traceback_and_ask_for_a_report(exc, monkeypatch, capsys):
    _failing(monkeypatch, exc)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert (
        f"{type(exc).__name__}: " in err and "this is a bug in yolov9k" in err and "please report it" in err
    )


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        ("diverged", "steps skipped"),
        (OSError(2, "No such file or directory", "/data/x.jpg"), "No such file or directory: '/data/x.jpg'"),
        (OSError(28, "No space left on device"), "No space left on device"),
        (PermissionError(13, "Permission denied", "/runs"), "Permission denied: '/runs'"),
    ],
)
def test_our_errors_and_the_os_refusing_a_file_print_one_line(exc, message, monkeypatch, capsys):
    from yolov9k.errors import TrainingDivergedError

    if exc == "diverged":
        exc = TrainingDivergedError("101 steps skipped for non-finite losses/gradients (max_nan_skips=100)")
    _failing(monkeypatch, exc)
    assert main(["info"]) == 1
    err = capsys.readouterr().err
    assert err == f"yolov9k info: error: {' '.join(str(exc).split())}\n" and message in err


def test_every_user_error_type_is_ours():
    """The errors the package raises for bad input derive from Yolov9kError (and their built-in types)."""
    from yolov9k.checkpoint import CheckpointError
    from yolov9k.data.images import ImageReadError
    from yolov9k.engine.distributed import DistributedError
    from yolov9k.errors import Yolov9kError, is_user_error
    from yolov9k.io import UnsafeCheckpointError
    from yolov9k.ops import BackendUnavailableError

    for cls, builtin in (
        (CheckpointError, ValueError),
        (UnsafeCheckpointError, Exception),
        (ImageReadError, ValueError),
        (DistributedError, RuntimeError),
        (BackendUnavailableError, RuntimeError),
    ):
        assert issubclass(cls, Yolov9kError) and issubclass(cls, builtin), cls
    assert not is_user_error(ValueError("x")) and not is_user_error(OSError("no errno"))
    assert is_user_error(OSError(2, "No such file", "x")) and not is_user_error(OSError(22, "EINVAL"))


def test_divergence_with_max_nan_skips_0_stops_in_one_line(demo_yaml, tmp_path, monkeypatch, capsys):
    import yolov9k.engine.trainer as trainer_module

    class NanLoss(trainer_module.DetectionLoss):
        def __call__(self, preds, targets):
            total, items = super().__call__(preds, targets)
            return total * float("nan"), items

    monkeypatch.setattr(trainer_module, "DetectionLoss", NanLoss)
    argv = ["train", "--data", str(demo_yaml), "--epochs", "1", "--imgsz", "64", "--batch", "4",
            "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--plots", "false",
            "--verbose", "false", "--max-nan-skips", "0"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("yolov9k train: error: 1 steps skipped for non-finite losses")
    assert "max_nan_skips=0" in err
