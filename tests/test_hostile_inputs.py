"""Issue 13, data / training / CLI side: hostile and broken inputs give one-line errors or counted skips."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import yaml

from yolov9k.cli import main
from yolov9k.engine import ConfigError, Trainer, parse_cli_overrides, resolve_config, train
from yolov9k.io.files import atomic_output, disk_full_error, remove_stale_temp_files

pytestmark = [
    pytest.mark.filterwarnings("ignore:model 'gelan-t' is a zoo name"),
    pytest.mark.usefixtures("one_thread"),
]

# one tiny epoch: 8 train images of 64 px, 4 batches of 2
TINY = dict(
    model="gelan-t", epochs=1, imgsz=64, batch=2, workers=0, device="cpu", plots=False, val=False,
    deterministic=True, seed=0, close_mosaic=0, verbose=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from yolov9k.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    return generate_demo_dataset(root / "set", num_train=8, num_val=4, imgsz=64, seed=2)


def _copy_set(tiny_data: Path, dest: Path, drop_labels: bool = False, **yaml_changes) -> Path:
    """A private copy of the demo set (optionally without labels/) with its yaml edited."""
    shutil.copytree(tiny_data.parent, dest, ignore=shutil.ignore_patterns("*.cache.json"))
    cfg = yaml.safe_load((dest / "demo.yaml").read_text())
    cfg["path"] = str(dest)
    if drop_labels:
        shutil.rmtree(dest / "labels")
        for key in ("train_json", "val_json"):
            cfg.pop(key)
    cfg.update(yaml_changes)
    (dest / "demo.yaml").write_text(yaml.safe_dump(cfg))
    return dest / "demo.yaml"


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ---- item 1: a data set without labels ----------------------------------------------------------------


def test_split_without_boxes_is_refused_before_a_run_folder_exists(tiny_data, tmp_path, capsys):
    data = _copy_set(tiny_data, tmp_path / "nolabels", drop_labels=True)
    project = tmp_path / "runs"
    args = ["train", "--data", str(data), "--project", str(project), "--device", "cpu", "--epochs", "1"]
    assert main([*args, "--imgsz", "64", "--workers", "0"]) == 1
    _one_line_error(capsys, "train: no boxes at all", "8 without labels", "background_only")
    assert not project.exists()  # validation ran before the run folder was made


def test_val_of_a_split_without_boxes_is_refused(tiny_data, tmp_path, capsys):
    data = _copy_set(tiny_data, tmp_path / "nolabels", drop_labels=True)
    args = ["val", "--model", "gelan-t", "--data", str(data), "--project", str(tmp_path / "runs")]
    assert main([*args, "--device", "cpu", "--imgsz", "64", "--workers", "0"]) == 1
    _one_line_error(capsys, "val split has no boxes at all", "missing 4")


def test_background_only_trains_with_a_loud_warning(tiny_data, tmp_path, caplog):
    data = _copy_set(tiny_data, tmp_path / "bg", drop_labels=True)
    with caplog.at_level("WARNING", logger="yolov9k"):
        r = train(**dict(TINY, data=str(data), project=str(tmp_path / "runs"), background_only=True))
    warnings = [rec.getMessage() for rec in caplog.records if "no boxes at all" in rec.getMessage()]
    assert len(warnings) == 2 and "background only" in warnings[0]  # train and val split
    assert (Path(r["save_dir"]) / "weights" / "last.pt").is_file()


# ---- item 7 / 8: resume ------------------------------------------------------------------------------


def _killed_run(data: str, project: Path) -> Path:
    first = train(**dict(TINY, epochs=2, data=data, project=str(project), name="r"))
    last = Path(first["save_dir"]) / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["epoch"] = 0  # as if killed after the first of two epochs
    torch.save(ckpt, last)
    return last


def test_resume_from_another_directory_with_any_spelling_of_the_data_path(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_data.parent.parent)
    relative = os.path.join("set", "demo.yaml")
    last = _killed_run(relative, tmp_path / "runs")
    saved = torch.load(last, weights_only=True)["args"]["data"]
    assert saved == str(tiny_data.resolve())  # stored resolved, not as typed
    monkeypatch.chdir(tmp_path)
    spelled = str(tiny_data.parent) + "/./demo.yaml"
    trainer = Trainer({"resume": str(last), "data": spelled})
    assert trainer.args["data"] == saved and trainer.args["epochs"] == 2


def test_run_that_stored_a_relative_data_path_resumes_with_the_path_given_again(
    tiny_data, tmp_path, monkeypatch
):
    last = _killed_run(str(tiny_data), tmp_path / "runs")
    ckpt = torch.load(last, weights_only=True)
    ckpt["args"]["data"] = os.path.join("set", "demo.yaml")  # as runs made before the fix stored it
    torch.save(ckpt, last)
    monkeypatch.chdir(tmp_path)  # where "set/demo.yaml" does not exist
    trainer = Trainer({"resume": str(last), "data": str(tiny_data)})
    assert trainer.args["data"] == str(tiny_data.resolve())
    with pytest.raises(ConfigError, match="differs from the run's"):  # other options still may not change
        Trainer({"resume": str(last), "data": str(tiny_data), "lr0": 0.5})


def test_resume_after_the_class_count_changed_says_so_in_one_line(tiny_data, tmp_path, capsys):
    data = _copy_set(tiny_data, tmp_path / "set5")
    last = _killed_run(str(data), tmp_path / "runs")
    cfg = yaml.safe_load(data.read_text())
    cfg["names"] = {**cfg["names"], 5: "extra"}
    cfg["nc"] = 6
    data.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--resume", str(last)]) == 1
    _one_line_error(capsys, "nc changed from 5 to 6")


# ---- item 9: output paths ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [
        "train",
        "val",
        "predict",
        "export-dir",
        "export-in-file",
        "convert-dir",
        "convert-in-file",
        "demo",
    ],
)
def test_output_path_that_cannot_be_written_gives_one_line(verb, tiny_data, fixtures_dir, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    folder = tmp_path / "folder"
    folder.mkdir()
    fast = ["--imgsz", "64", "--device", "cpu"]
    source = str(fixtures_dir / "gelan-t_official_format.pt")
    argv = {
        "train": ["train", "--data", str(tiny_data), "--project", str(afile), *fast, "--epochs", "1",
                  "--workers", "0"],
        "val": ["val", "--model", "gelan-t", "--data", str(tiny_data), "--project", str(afile), *fast],
        "predict": ["predict", "--model", "gelan-t", "--source", str(tiny_data.parent / "images" / "val"),
                    "--project", str(afile / "sub"), *fast],
        "export-dir": ["export", "--model", "gelan-t", "--imgsz", "64", "--file", str(folder)],
        "export-in-file": ["export", "--model", "gelan-t", "--imgsz", "64", "--file", str(afile / "m.onnx")],
        "convert-dir": ["convert", "--source", source, "--output", str(folder)],
        "convert-in-file": ["convert", "--source", source, "--output", str(afile / "x" / "m.pt")],
        "demo": ["demo-data", "--root", str(afile), "--num-train", "2", "--num-val", "1", "--imgsz", "64"],
    }[verb]  # fmt: skip
    assert main(argv) == 1
    err = _one_line_error(capsys)
    assert ("is a file, not a folder" in err and str(afile) in err) or f"{folder} is a folder" in err
    assert afile.read_text() == "x" and list(folder.iterdir()) == []


def _torch_short_write(*args, **kwargs):
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1472 vs 1408")


def test_full_disk_during_a_save_names_the_file(fixtures_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "save", _torch_short_write)
    out = tmp_path / "conv.pt"
    source = str(fixtures_dir / "gelan-t_official_format.pt")
    assert main(["convert", "--source", source, "--output", str(out)]) == 1
    _one_line_error(capsys, f"no space left on device writing {out}")
    assert list(tmp_path.iterdir()) == []  # no temp file left


def test_full_disk_while_predict_writes_json_names_the_file(tiny_data, tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # predictions.json is streamed; the disk fills by its fsync
    images = str(tiny_data.parent / "images" / "val")
    argv = ["predict", "--model", "gelan-t", "--source", images, "--imgsz", "64", "--device", "cpu"]
    assert main([*argv, "--project", str(tmp_path), "--save", "false", "--save-json"]) == 1
    _one_line_error(capsys, f"no space left on device writing {tmp_path / 'exp' / 'predictions.json'}")


@pytest.mark.parametrize(
    "error, full",
    [
        (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1472 vs 1408"), True),
        (RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed"), True),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), True),
        (RuntimeError("shape mismatch"), False),
        (OSError(errno.EACCES, "Permission denied"), False),
        (ValueError("no space left on device"), False),
    ],
)
def test_disk_full_is_told_apart_from_other_errors(error, full, tmp_path):
    mapped = disk_full_error(error, tmp_path / "w.pt")
    assert (mapped is not None) == full
    if full:
        assert mapped.errno == errno.ENOSPC and f"no space left on device writing {tmp_path / 'w.pt'}" in str(
            mapped
        )


def test_full_disk_as_python_oserror_is_reported_the_same(tmp_path):
    target = tmp_path / "results.csv"
    with pytest.raises(OSError, match=f"no space left on device writing {target}") as info:
        with atomic_output(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert info.value.errno == errno.ENOSPC and list(tmp_path.iterdir()) == []


# ---- item 10: float spellings ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value", [("1e-3", 1e-3), ("1E-3", 1e-3), ("1.0e8", 1e8), (".5", 0.5), ("2", 2.0)]
)
def test_float_options_take_every_python_float_spelling(text, value):
    assert resolve_config(parse_cli_overrides([f"lr0={text}"]))["lr0"] == value
    assert resolve_config({"hyp": {"lr0": text}})["lr0"] == value  # a hyp yaml reads 1e-3 as text


def test_integer_options_take_exponents_but_not_fractions():
    assert resolve_config(parse_cli_overrides(["epochs=1e2"]))["epochs"] == 100
    with pytest.raises(ConfigError, match="expected an integer"):
        resolve_config(parse_cli_overrides(["epochs=1.5e0"]))
    with pytest.raises(ConfigError, match="expected a number"):
        resolve_config(parse_cli_overrides(["lr0=fast"]))


def test_cli_accepts_scientific_notation(tiny_data, tmp_path):
    opts = ["--imgsz", "64", "--batch", "2", "--workers", "0", "--device", "cpu", "--plots", "false"]
    argv = ["train", "--data", str(tiny_data), "--epochs", "1", "--lr0", "1E-3", "--project", str(tmp_path)]
    assert main([*argv, "--warmup-bias-lr", "1.0e-1", "--val", "false", *opts]) == 0
    args = yaml.safe_load((tmp_path / "exp" / "args.yaml").read_text())
    assert args["lr0"] == 1e-3 and args["warmup_bias_lr"] == 0.1


# ---- COCO json and dataset yaml ----------------------------------------------------------------------


def _coco(tmp_path: Path, tiny_data: Path) -> tuple[Path, Path, dict]:
    images_dir = tiny_data.parent / "images" / "train"
    data = json.loads((tiny_data.parent / "annotations" / "instances_train.json").read_text())
    return images_dir, tmp_path / "coco.json", data


def test_coco_image_without_file_name_is_a_counted_skip(tiny_data, tmp_path):
    from yolov9k.data import load_coco_json

    images_dir, jf, data = _coco(tmp_path, tiny_data)
    del data["images"][0]["file_name"]
    jf.write_text(json.dumps(data))
    samples, stats, _ = load_coco_json(jf, images_dir)
    assert len(samples) == 7 and stats.images == 8 and stats.corrupt["no file_name in json"] == 1


def test_coco_annotations_of_unknown_images_are_counted_and_logged(tiny_data, tmp_path, caplog):
    from yolov9k.data import load_coco_json

    images_dir, jf, data = _coco(tmp_path, tiny_data)
    data["annotations"] += [dict(data["annotations"][0], id=10**6 + i, image_id=999) for i in range(3)]
    jf.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="yolov9k.data"):
        _, stats, _ = load_coco_json(jf, images_dir)
    assert stats.dropped["unknown image_id"] == 3
    assert any("3 annotations of unknown image_id 999" in r.getMessage() for r in caplog.records)


def test_nc_that_is_not_a_number_names_the_key(tiny_data, tmp_path, capsys):
    data = _copy_set(tiny_data, tmp_path / "badnc", nc="five")
    assert main(["train", "--data", str(data), "--project", str(tmp_path / "runs"), "--device", "cpu"]) == 1
    _one_line_error(capsys, "'nc' must be a whole number of classes, got 'five'")


# ---- temp files, permissions, run folders ------------------------------------------------------------


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.txt") as tmp:
            tmp.write_text("a")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_stale_temp_files_of_killed_saves_are_removed(tiny_data, tmp_path):
    weights = tmp_path / "exp" / "weights"
    weights.mkdir(parents=True)
    stale = [weights / ".last.pt.ab3_9xyz.tmp", tmp_path / "exp" / ".results.csv.0000aaaa.tmp"]
    keep = [weights / "notes.tmp", weights / ".hidden.pt"]
    for p in stale + keep:
        p.write_bytes(b"")
    assert sorted(remove_stale_temp_files(weights, legacy=True)) == [stale[0]]  # older versions' names
    stale[0].write_bytes(b"")
    train(**dict(TINY, data=str(tiny_data), project=str(tmp_path), name="exp", exist_ok=True))
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert not list(weights.glob(".*.tmp"))


def test_bad_config_leaves_no_run_folder(tiny_data, tmp_path, capsys):
    where = ["--project", str(tmp_path / "runs"), "--device", "cpu", "--imgsz", "64", "--workers", "0"]
    assert main(["train", "--data", str(tmp_path / "nope.yaml"), *where]) == 1
    _one_line_error(capsys, "dataset YAML not found")
    assert main(["train", "--model", "no-such-net", "--data", str(tiny_data), *where]) == 1
    _one_line_error(capsys, "no-such-net")
    assert main(["train", "--amp", "fp16", "--data", str(tiny_data), *where]) == 1
    _one_line_error(capsys, "amp='fp16' needs a CUDA device")
    assert not (tmp_path / "runs").exists()


def test_project_and_name_give_project_slash_name(tiny_data, tmp_path, monkeypatch):
    from yolov9k.run_setup import run_dir

    assert run_dir(tmp_path / "P", "train", "N") == tmp_path / "P" / "N"
    monkeypatch.chdir(tmp_path)
    assert run_dir(None, "val") == Path("runs") / "val" / "exp"  # default: runs/<task>/exp
    assert run_dir(None, "val") == Path("runs") / "val" / "exp2"
