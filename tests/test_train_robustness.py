"""A run's folder, numbers and results.csv under misuse (issue 22 items 10, 14, 19).

* a run folder in use is locked: a second run of it is refused in one line, and the lock goes with the
  process however it ends (a kill leaves none);
* reusing a folder (``exist_ok``) starts a fresh results.csv and keeps the old one aside;
* a checkpoint is never written with NaN/inf weights or buffers: a diverging run stops in one line;
* a damaged results.csv on resume is named; a worker's failure is one line, a bug keeps its traceback.
"""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from yolov9k.checkpoint import load_checkpoint, non_finite_entries, save_checkpoint
from yolov9k.engine import Trainer
from yolov9k.errors import InputError, InputNotFoundError, TrainingDivergedError, is_user_error
from yolov9k.models import build_model
from yolov9k.run_setup import RunFolderBusy, RunFolderLock, one_line_worker_error

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(
    model="gelan-t", epochs=1, imgsz=64, batch=4, workers=0, device="cpu", nbs=4, warmup_epochs=0.0,
    lr0=0.01, plots=False, verbose=False, val=False, mosaic=0.0, channels_last=False,
)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yolov9k.data import generate_demo_dataset

    root = tmp_path_factory.mktemp("robust")
    return str(generate_demo_dataset(root / "set", num_train=8, num_val=4, imgsz=64, seed=0))


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---- the run folder -----------------------------------------------------------------------------------


def test_a_run_folder_in_use_refuses_a_second_run(tiny_data, tmp_path):
    folder = tmp_path / "same"
    folder.mkdir()
    (folder / "results.csv").write_text("epoch\n1\n")
    holder = RunFolderLock(folder)  # the first run, still running
    try:
        t = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), name="same", exist_ok=True))
        with pytest.raises(RunFolderBusy, match="in use by another run") as e:
            t.fit()
        assert is_user_error(e.value) and "\n" not in str(e.value)
        assert (folder / "results.csv").read_text() == "epoch\n1\n"  # the running run's rows untouched
    finally:
        holder.release()
    RunFolderLock(folder).release()  # free again once released


def test_the_lock_goes_with_a_killed_process(tmp_path):
    code = textwrap.dedent(f"""
        import sys, time
        from yolov9k.run_setup import RunFolderLock
        lock = RunFolderLock({str(tmp_path)!r})
        print("locked", flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            RunFolderLock(tmp_path)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    RunFolderLock(tmp_path).release()  # no stale lock after kill -9


def test_a_reused_folder_starts_a_fresh_results_csv(tiny_data, tmp_path):
    run = dict(TINY, data=tiny_data, project=str(tmp_path), name="again", exist_ok=True)
    first = Trainer(run).fit()
    old = (first["save_dir"] / "results.csv").read_text()
    second = Trainer(dict(run, epochs=2)).fit()
    assert second["save_dir"] == first["save_dir"]
    assert [r["epoch"].strip() for r in _rows(second["save_dir"] / "results.csv")] == ["1", "2"]
    assert (second["save_dir"] / "results.1.csv").read_text() == old  # kept aside, whole


# ---- non-finite numbers -------------------------------------------------------------------------------


def test_save_checkpoint_refuses_non_finite_buffers(tmp_path):
    model = build_model("gelan-t", num_classes=2)
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_var[0] = math.inf
    assert len(non_finite_entries(model)) == 1
    out = tmp_path / "last.pt"
    out.write_bytes(b"old")
    with pytest.raises(FloatingPointError, match="running_var"):
        save_checkpoint(out, model)
    assert out.read_bytes() == b"old"  # left as it was
    with pytest.raises(FloatingPointError, match=r"optimizer\.state"):
        save_checkpoint(
            out, build_model("gelan-t", num_classes=2), optimizer={"state": torch.tensor([math.nan])}
        )


def test_a_diverging_run_stops_in_one_line_and_never_saves_nan(tiny_data, tmp_path):
    # issue 22 item 14: lr0 1e6 used to exit 0 with hundreds of NaN/inf tensors in last.pt
    t = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), lr0=1e6, epochs=3, max_nan_skips=1000))
    with pytest.raises(TrainingDivergedError, match="training diverged in epoch") as e:
        t.fit()
    assert is_user_error(e.value) and "\n" not in str(e.value)
    if t.last.is_file():  # what was saved before is finite
        ckpt = load_checkpoint(t.last)
        assert non_finite_entries(ckpt) == []


def test_bn_statistics_poisoned_by_a_skipped_step_stop_the_run(tiny_data, tmp_path):
    t = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), max_nan_skips=10))

    def poison(tr: Trainer) -> None:
        real = tr.loss_fn

        def loss_fn(preds, targets):  # as a forward pass on inf activations: NaN loss, NaN statistics
            bn = next(m for m in tr.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
            bn.running_mean[0] = math.nan
            total, items = real(preds, targets)
            return total * math.nan, items

        tr.loss_fn = loss_fn

    t.add_callback("on_pretrain_end", poison)
    with pytest.raises(TrainingDivergedError, match="BatchNorm statistics after a skipped step"):
        t.fit()
    assert not t.last.exists()


# ---- results.csv on resume, worker errors -------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    return Trainer(dict(TINY, data=tiny_data, project=str(root), epochs=2, name="r")).fit()


def _resume_with_csv(finished_run, tmp_path, text: bytes) -> Trainer:
    import shutil

    run = tmp_path / "r"
    shutil.copytree(finished_run["save_dir"], run)
    (run / "results.csv").write_bytes(text)
    return Trainer(dict(resume=str(run / "weights" / "last.pt"), epochs=3))


def test_resume_drops_garbage_rows_naming_the_file(finished_run, tmp_path, caplog):
    good = (finished_run["save_dir"] / "results.csv").read_text()
    header, *lines = good.splitlines()
    t = _resume_with_csv(finished_run, tmp_path, (good + "garbage,row\n,\n").encode())
    t.fit()
    assert [r["epoch"].strip() for r in _rows(t.csv)] == ["1", "2", "3"]
    assert any(str(t.csv) in m and "2 row(s) without an epoch number" in m for m in caplog.messages)


def test_resume_with_an_unreadable_results_csv_names_it(finished_run, tmp_path):
    t = _resume_with_csv(finished_run, tmp_path, b"epoch,loss\n1,\xff\xfe\n")
    with pytest.raises(InputError, match="results.csv") as e:
        t.fit()
    assert str(t.csv) in str(e.value) and "\n" not in str(e.value)


def _worker_error(kind: str, last: str) -> RuntimeError:
    return RuntimeError(
        f"Caught {kind} in DataLoader worker process 1.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 3, in f\n    read()\n' + last
    )


def test_worker_errors_of_the_user_are_one_line_and_bugs_keep_their_traceback():
    e = one_line_worker_error(
        _worker_error("ImageReadError", "yolov9k.data.images.ImageReadError: a.jpg: gone")
    )
    assert isinstance(e, InputError) and str(e) == "a.jpg: gone (ImageReadError in data loader worker 1)"
    e = one_line_worker_error(_worker_error("FileNotFoundError", "FileNotFoundError: [Errno 2] b.txt"))
    assert isinstance(e, InputNotFoundError) and is_user_error(e) and "\n" not in str(e)
    bug = _worker_error("ZeroDivisionError", "ZeroDivisionError: division by zero")
    assert one_line_worker_error(bug) is bug  # a bug: the whole worker traceback stays
    plain = RuntimeError("something else")
    assert one_line_worker_error(plain) is plain


def test_an_image_that_disappears_mid_training_is_one_line(tiny_data, tmp_path):
    t = Trainer(dict(TINY, data=tiny_data, project=str(tmp_path), workers=1))

    def remove_images(tr: Trainer) -> None:
        for sample in tr.train_loader.dataset.samples:
            os.replace(sample.im_file, sample.im_file + ".gone")

    def put_back() -> None:
        for sample in t.train_loader.dataset.samples:
            if os.path.exists(sample.im_file + ".gone"):
                os.replace(sample.im_file + ".gone", sample.im_file)

    t.add_callback("on_pretrain_end", remove_images)
    try:
        with pytest.raises(InputError, match="in data loader worker") as e:
            t.fit()
    finally:
        put_back()
    assert "\n" not in str(e.value) and "Traceback" not in str(e.value)
