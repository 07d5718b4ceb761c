"""What yolov9k writes: never over an input, durable renames, and no litter from killed writers (issue 22
items 7 and 20, issue 19: the folder fsync inside the one atomic writer)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import yolov9k.io.files as files_mod
from yolov9k.checkpoint import save_checkpoint
from yolov9k.data import generate_demo_dataset
from yolov9k.errors import ConfigError, is_user_error
from yolov9k.io.files import (
    STALE_TEMP_AGE_S,
    atomic_output,
    is_stale_temp,
    remove_stale_temp_files,
    temp_prefix,
)
from yolov9k.models import build_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "m.pt"
    return save_checkpoint(path, build_model("gelan-t", num_classes=2))


# ---- never over an input --------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink", "hardlink"])
@pytest.mark.parametrize("verb", ["export", "convert"])
def test_an_output_is_never_one_of_the_inputs(verb, spelling, checkpoint, tmp_path):
    from yolov9k import convert, export

    src = tmp_path / "model.pt"
    src.write_bytes(checkpoint.read_bytes())
    out = {"same": src, "dotted": Path(f"{tmp_path}/./model.pt")}.get(spelling, tmp_path / "other.pt")
    if spelling == "symlink":
        out.symlink_to(src)
    elif spelling == "hardlink":
        os.link(src, out)
    before = src.read_bytes()
    with pytest.raises(ConfigError, match="is the source file") as e:
        if verb == "export":
            export(str(src), format="torchscript", file=str(out), imgsz=64, device="cpu")
        else:
            convert(str(src), str(out))
    assert is_user_error(e.value) and "\n" not in str(e.value)
    assert src.read_bytes() == before


def test_export_cli_refuses_to_overwrite_its_model(checkpoint, tmp_path, capsys):
    from yolov9k.cli import main

    src = tmp_path / "m.pt"
    src.write_bytes(checkpoint.read_bytes())
    rc = main(["export", "--model", str(src), "--format", "torchscript", "--file", str(src)])
    err = capsys.readouterr().err
    assert rc != 0 and "is the source file" in err and "Traceback" not in err
    assert src.read_bytes() == checkpoint.read_bytes()


# ---- durable writes ---------------------------------------------------------------------------------------


def test_atomic_output_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    synced: list[tuple[str, bool]] = []  # (what, target present at that moment)
    real_fsync = os.fsync
    target = tmp_path / "out.txt"

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        synced.append(("folder" if stat.S_ISDIR(mode) else "file", target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_output(target) as tmp:
        tmp.write_text("x")
    # the content before the rename, the folder (holding the rename) after it
    assert synced == [("file", False), ("folder", True)]


# ---- litter of killed writers -----------------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temp_files_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = temp_prefix("m.onnx").replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    stale = tmp_path / f"{dead}abcdefgh.tmp"
    live = tmp_path / f"{temp_prefix('m.onnx')}ijklmnop.tmp"  # this process: still writing
    other = tmp_path / ".m.onnx.notours.tmp"  # not our name
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    with atomic_output(tmp_path / "m.onnx") as tmp:
        tmp.write_bytes(b"model")
    assert not stale.exists() and live.exists() and other.exists()
    assert (tmp_path / "m.onnx").read_bytes() == b"model"


def test_old_and_legacy_temp_names(tmp_path):
    old = tmp_path / f"{temp_prefix('a.pt')}abcdefgh.tmp"
    old.write_bytes(b"")
    assert not is_stale_temp(old)  # its writer (this process) runs
    assert is_stale_temp(old, now=time.time() + STALE_TEMP_AGE_S + 1)  # pids are reused: age decides
    legacy = tmp_path / ".last.pt.k2j_9x0a.tmp"  # an older version's name (no owner): no writer today
    legacy.write_bytes(b"")
    assert is_stale_temp(legacy, legacy=True) and not is_stale_temp(legacy)  # only where asked
    assert remove_stale_temp_files(tmp_path) == []
    assert remove_stale_temp_files(tmp_path, legacy=True) == [legacy] and old.exists()


def _kill_while(code: str, tmp_path: Path, marker: str) -> None:
    """Run ``code`` in a child and kill -9 it once it printed ``marker``."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.strip() == marker:
                break
    finally:
        child.kill()
        child.wait()


def test_a_killed_demo_data_run_leaves_nothing_for_good(tmp_path):
    root = tmp_path / "demo"
    code = f"""
        import yolov9k.data.demo as demo
        real = demo._write_split
        def write_split(*a, **k):
            real(*a, **k)
            print("generating", flush=True)
            import time; time.sleep(60)
        demo._write_split = write_split
        demo.generate_demo_dataset({str(root)!r}, num_train=4, num_val=2, imgsz=64)
    """
    _kill_while(code, tmp_path, "generating")
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".demo.")  # the killed run's temp folder
    yaml_file = generate_demo_dataset(root, num_train=4, num_val=2, imgsz=64)
    assert [p.name for p in tmp_path.iterdir()] == ["demo"] and yaml_file.is_file()


def test_a_demo_set_killed_while_moving_in_is_replaced(tmp_path):
    root = tmp_path / "demo"
    code = f"""
        import os
        import yolov9k.data.demo as demo
        real = os.replace
        def replace(src, dst):
            real(src, dst)
            if str(dst).endswith("labels"):
                print("moving", flush=True)
                import time; time.sleep(60)
        demo.os.replace = replace
        demo.generate_demo_dataset({str(root)!r}, num_train=4, num_val=2, imgsz=64)
    """
    _kill_while(code, tmp_path, "moving")
    assert (root / ".incomplete").is_file() and not (root / ".complete").exists()
    yaml_file = generate_demo_dataset(root, num_train=4, num_val=2, imgsz=64)  # no overwrite needed
    assert (root / ".complete").is_file() and not (root / ".incomplete").exists()
    assert len(list((root / "images" / "train").iterdir())) == 4 and yaml_file.is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["demo"]


def test_files_module_names_its_temp_files_as_the_pattern_reads_them():
    name = temp_prefix("last.pt") + "abcdefgh" + files_mod.TEMP_SUFFIX
    assert files_mod._TEMP_NAME.match(name)["pid"] == str(os.getpid())
