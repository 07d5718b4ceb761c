"""Issue 22, data files that are not what they say (items 5, 6, 11, 18, 20): dataset YAMLs, image lists,
COCO json and checkpoint zips cost bounded time and memory and give a counted skip or one line naming
the file, before any work."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_hostile_inputs import _copy_set, _one_line_error

from yolov9k.checkpoint import CheckpointError, load_model
from yolov9k.cli import main
from yolov9k.data import generate_demo_dataset, load_coco_json, load_dataset_config
from yolov9k.data.splits import load_split
from yolov9k.io import archive
from yolov9k.io.limits import MAX_CLASSES, MAX_YAML_BYTES, MAX_YAML_NODES
from yolov9k.io.textfiles import load_yaml_text

pytestmark = [pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    return generate_demo_dataset(root / "set", num_train=8, num_val=4, imgsz=64, seed=2)


def _train_argv(data: Path, project: Path) -> list[str]:
    return ["train", "--data", str(data), "--project", str(project), "--device", "cpu", "--epochs", "1",
            "--imgsz", "64", "--workers", "0"]  # fmt: skip


# ---- item 5: YAML that expands ------------------------------------------------------------------------


def _bomb(levels: int = 9, width: int = 10) -> str:
    """A "billion laughs": ``width ** levels`` values from a few hundred bytes of aliases."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


BOMBS = {
    "names": _bomb() + "names: *l8\n",
    "nc": _bomb() + "nc: *l8\nnames: [a]\n",
    "train": _bomb() + "names: [a]\ntrain: *l8\nval: images/val\n",
    "path": _bomb() + "names: [a]\npath: *l8\n",
    "recursive": "names: &r [a, *r]\ntrain: images/train\nval: images/val\n",
    "deep": "names: [a]\nextra: " + "[" * 200 + "]" * 200 + "\n",
}


@pytest.mark.parametrize("where", sorted(BOMBS))
def test_yaml_that_expands_is_refused_in_one_line_before_a_run(where, tiny_data, tmp_path, capsys):
    data = tmp_path / "bomb.yaml"
    data.write_text(BOMBS[where] + f"path: {tiny_data.parent}\n" * (where != "path"))
    start = time.perf_counter()
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    assert time.perf_counter() - start < 5
    err = _one_line_error(capsys, str(data))
    assert any(w in err for w in ("expands to more than", "contains itself", "nested", "nesting")), err
    assert not (tmp_path / "runs").exists()


def test_yaml_bombs_cost_bounded_memory(tmp_path):
    """In a fresh process: every bomb is refused in under 2 s with a peak RSS under 400 MiB
    (docs/reliability.md; Python + torch alone take ~220 MiB). Before, alias bombs ran to MemoryError."""
    files = []
    for name, text in BOMBS.items():
        files.append(tmp_path / f"{name}.yaml")
        files[-1].write_text(text + "val: x\n")
    code = """
import json, sys, time
from yolov9k.data import load_dataset_config
out = []
for f in sys.argv[1:]:
    t = time.perf_counter()
    try:
        load_dataset_config(f)
        out.append(["loaded", f])
    except ValueError as e:
        out.append([str(e), time.perf_counter() - t])
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"results": out, "peak": int(hwm) / 1024}))
"""
    child = subprocess.run([sys.executable, "-c", code, *map(str, files)], capture_output=True, text=True,
                           timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    for message, seconds in report["results"]:
        assert message != "loaded" and seconds < 2.0, report
    assert report["peak"] < 400, f"peak RSS {report['peak']:.0f} MiB"


def _aliases(k: int) -> str:
    """{a: 1000 values, b: k aliases of a}: 1 + 2 + 1001 + 1 + 1001 k nodes once expanded."""
    return "a: &a [" + ", ".join(["x"] * 1000) + "]\nb: [" + ", ".join(["*a"] * k) + "]\n"


def test_yaml_expansion_bound_counts_every_alias():
    k = (MAX_YAML_NODES - 5) // 1001 - 1  # the most that fits
    assert len(load_yaml_text(_aliases(k), "ok")["b"]) == k
    with pytest.raises(ValueError, match=f"more than {MAX_YAML_NODES} values"):
        load_yaml_text(_aliases(k + 1), "too many")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"nc": 10**9, "names": None}, f"'nc' must be in [1, {MAX_CLASSES}], got 1000000000"),
        ({"nc": MAX_CLASSES + 1, "names": None}, f"'nc' must be in [1, {MAX_CLASSES}]"),
        ({"nc": "1e400", "names": None}, "'nc' must be a whole number"),
        ({"nc": None, "names": [f"c{i}" for i in range(MAX_CLASSES + 1)]}, f"1 to {MAX_CLASSES} entries"),
        ({"nc": None, "names": [["a", "b"], "c"]}, "'names' entry 0 must be a text, got a list"),
        ({"nc": None, "names": {0: "a", 1: {"x": 1}}}, "'names' entry 1 must be a text"),
        ({"train": 5}, "train: expected a path, got int"),
        ({"train": [["images/train"]]}, "train: expected a path, got list"),
    ],
)
def test_dataset_values_over_the_bounds_are_refused_before_any_work(
    changes, message, tiny_data, tmp_path, capsys
):
    """nc 100001 used to train an epoch, then validation asked for a 74.5 GiB confusion matrix; nc 1e9
    without names ran to MemoryError: MAX_CLASSES is the bound of models and checkpoints too."""
    data = _copy_set(tiny_data, tmp_path / "set")
    cfg = yaml.safe_load(data.read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    data.write_text(yaml.safe_dump(cfg))
    start = time.perf_counter()
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    _one_line_error(capsys, message)
    assert time.perf_counter() - start < 10 and not (tmp_path / "runs").exists()


def test_the_class_bound_is_one_constant():
    from yolov9k.models import build_model
    from yolov9k.models.parse import MAX_CLASSES as MODEL_MAX

    assert MODEL_MAX == MAX_CLASSES
    with pytest.raises(ValueError, match=str(MAX_CLASSES)):
        build_model("gelan-t", num_classes=MAX_CLASSES + 1)


def test_oversized_and_special_yaml_files_are_refused_unread(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(MAX_YAML_BYTES + 1)  # sparse: reading it would take 4 MiB of zeros
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading would block forever
    for path, message in ((big, f"has {MAX_YAML_BYTES + 1} bytes"), (fifo, "not a regular file")):
        with pytest.raises(ValueError, match=message):
            load_dataset_config(path)
        assert main(_train_argv(path, tmp_path / "runs")) == 1
        _one_line_error(capsys, str(path), message)


# ---- item 20: words: undecodable files name themselves, folders are folders -------------------------


def test_undecodable_yaml_and_list_files_name_the_file(tiny_data, tmp_path, capsys):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("names: [caf\xe9]\ntrain: x\nval: x\n".encode("latin-1"))
    assert main(_train_argv(bad, tmp_path / "runs")) == 1
    _one_line_error(capsys, str(bad), "not UTF-8 text (byte 0xe9 at offset 11)")
    listing = tmp_path / "train.txt"
    listing.write_bytes(b"images/train/000000.jpg\n\xff\xfe\n")
    data = _copy_set(tiny_data, tmp_path / "set", train=str(listing))
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    _one_line_error(capsys, str(listing), "not UTF-8 text")


def test_folders_and_special_files_are_not_reported_as_not_found(tiny_data, tmp_path, capsys):
    folder = tmp_path / "a.yaml"
    folder.mkdir()
    assert main(_train_argv(folder, tmp_path / "runs")) == 1
    _one_line_error(capsys, f"{folder} is a folder, not a file")
    other = tmp_path / "notes.md"
    other.write_text("x")
    fifo = tmp_path / "train.txt"
    os.mkfifo(fifo)
    for split, what in ((other, "a file, not a folder, a .txt list or an image"), (fifo, "a FIFO, device")):
        data = _copy_set(tiny_data, tmp_path / f"set-{split.name}", train=str(split))
        assert main(_train_argv(data, tmp_path / "runs")) == 1
        err = _one_line_error(capsys, str(split), what)
        assert "not found" not in err
    json_folder = tmp_path / "instances.json"
    json_folder.mkdir()
    data = _copy_set(tiny_data, tmp_path / "set-json", val_json=str(json_folder))
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    _one_line_error(capsys, str(json_folder), "a folder, not a json file")
    assert main(["val", "--model", str(tmp_path), "--data", str(tiny_data), "--device", "cpu"]) == 1
    _one_line_error(capsys, f"model '{tmp_path}' is a folder")
    with pytest.raises(IsADirectoryError, match=f"checkpoint {tmp_path} is a folder"):
        load_model(tmp_path)


# ---- item 6: a zip whose end record under-states its entries -----------------------------------------


def _understated_zip(path: Path, n: int) -> Path:
    """A zip of ``n`` empty stored entries whose end record says it has one. Only the central directory
    is written (what is parsed before any entry is read)."""
    central = bytearray()
    for i in range(n):
        name = f"archive/{i}".encode()
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0x21, 0, 0, 0, len(name),
                               0, 0, 0, 0, 0, 0) + name  # fmt: skip
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), 0, 0)  # "1 entry"
    path.write_bytes(bytes(central) + end)
    return path


def test_entry_count_is_counted_not_read_from_the_end_record(tmp_path, monkeypatch):
    path = _understated_zip(tmp_path / "liar.pt", 50)
    monkeypatch.setattr(archive, "MAX_ENTRIES", 40)
    monkeypatch.setattr(archive.zipfile, "ZipFile", None)  # parsing the directory would fail
    with pytest.raises(CheckpointError, match="lists 41 entries or more") as err:
        load_model(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_understated_zip_of_500k_entries_is_refused_in_under_a_second(tmp_path):
    """It used to cost seconds and hundreds of MB: zipfile parsed the whole directory before the count."""
    path = _understated_zip(tmp_path / "liar.pt", 500_000)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"lists {archive.MAX_ENTRIES + 1} entries or more"):
        load_model(path)
    assert time.perf_counter() - start < 1.0


# ---- items 11 and 18: COCO json -------------------------------------------------------------------------


def _coco_set(tiny_data: Path, dest: Path, edit) -> tuple[Path, Path, dict]:
    """A copy of the demo set whose train split is its COCO json, edited by ``edit(json_dict)``."""
    data = _copy_set(tiny_data, dest)
    jf = dest / "annotations" / "instances_train.json"
    coco = json.loads(jf.read_text())
    edit(coco)
    jf.write_text(json.dumps(coco))
    cfg = yaml.safe_load(data.read_text())
    cfg["train"] = "annotations/instances_train.json"
    data.write_text(yaml.safe_dump(cfg))
    return data, jf, coco


def _train_samples(data: Path):
    cfg = load_dataset_config(data)
    return load_split(cfg, "train", "test")


def test_coco_size_that_disagrees_with_the_image_is_a_counted_skip(tiny_data, tmp_path, caplog):
    """json width/height twice the image's scaled every box by 1/2 silently (cx 0.419 for 0.837)."""

    def edit(coco):
        coco["images"][0]["width"] *= 2

    data, jf, coco = _coco_set(tiny_data, tmp_path / "s", edit)
    with caplog.at_level("WARNING", logger="yolov9k.data"):
        samples, stats = _train_samples(data)
    assert stats.corrupt["json width/height differ from the image"] == 1 and len(samples) == 7
    name = coco["images"][0]["file_name"]
    assert all(Path(s.im_file).name != name for s in samples)
    assert any(name in r.getMessage() and "the json says" in r.getMessage() for r in caplog.records)
    # the others are scaled by their true size: equal to the YOLO labels of the same images
    yolo, _ = load_split(load_dataset_config(tiny_data), "train", "test")
    by_file = {Path(s.im_file).name: s.labels for s in yolo}

    def by_class(labels):
        return torch.from_numpy(labels[labels[:, 0].argsort(kind="stable")])

    for s in samples:
        torch.testing.assert_close(
            by_class(s.labels), by_class(by_file[Path(s.im_file).name]), atol=2e-4, rtol=0
        )


def test_coco_duplicate_image_id_skips_both_images(tiny_data, tmp_path):
    """A duplicate id copied one image's boxes onto another."""

    def edit(coco):
        coco["images"][1]["id"] = coco["images"][0]["id"]

    data, _, _ = _coco_set(tiny_data, tmp_path / "s", edit)
    samples, stats = _train_samples(data)
    assert stats.corrupt["image id given twice"] == 2 and len(samples) == 6


def test_coco_duplicate_category_id_is_refused(tiny_data, tmp_path, capsys):
    """It shifted every class by one."""

    def edit(coco):
        coco["categories"].append(dict(coco["categories"][2], name="extra"))

    data, jf, _ = _coco_set(tiny_data, tmp_path / "s", edit)
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    _one_line_error(capsys, str(jf), "category id 3 is given twice")


def test_coco_category_names_must_match_the_yaml(tiny_data, tmp_path, capsys, caplog):
    def swap(coco):  # same names, other ids: matched by name, so class 0 stays "circle"
        cats = coco["categories"]
        cats[0]["name"], cats[1]["name"] = cats[1]["name"], cats[0]["name"]

    data, jf, _ = _coco_set(tiny_data, tmp_path / "swap", swap)
    with caplog.at_level("WARNING", logger="yolov9k.data"):
        samples, _ = _train_samples(data)
    assert any("matched by name" in r.getMessage() for r in caplog.records)
    names = load_dataset_config(data).names
    assert load_coco_json(jf, data.parent / "images" / "train", names=names)[2] == [2, 1, 3, 4, 5]
    yolo, _ = load_split(load_dataset_config(tiny_data), "train", "test")
    for ours, theirs in ((0, 1), (1, 0), (2, 2)):  # circles are now the json's category 2 ("circle")
        count = sum(int((s.labels[:, 0] == ours).sum()) for s in samples)
        assert count == sum(int((s.labels[:, 0] == theirs).sum()) for s in yolo)

    def rename(coco):
        coco["categories"][3]["name"] = "hexagon"

    data, jf, _ = _coco_set(tiny_data, tmp_path / "rename", rename)
    assert main(_train_argv(data, tmp_path / "runs")) == 1
    _one_line_error(capsys, str(jf), "category names differ", "class 3: YAML 'star', json 'hexagon'")


MALFORMED = {
    # entry-level: counted skips (key into stats, reason)
    "annotation not an object": (lambda c: c["annotations"].extend([5, [], "x", None]), "dropped", 4),
    "bbox null": (lambda c: c["annotations"][0].update(bbox=None), "dropped", 1),
    "bbox text": (lambda c: c["annotations"][0].update(bbox="abc"), "dropped", 1),
    "bbox short": (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), "dropped", 1),
    "bbox nested": (lambda c: c["annotations"][0].update(bbox=[[1], 2, 3, 4]), "dropped", 1),
    "bbox 400 digits": (lambda c: c["annotations"][0].update(bbox=[10**400, 1, 2, 3]), "dropped", 1),
    "image_id list": (lambda c: c["annotations"][0].update(image_id=[1]), "dropped", 1),
    "category_id list": (lambda c: c["annotations"][0].update(category_id=[1]), "dropped", 1),
    "width text": (lambda c: c["images"][0].update(width="abc"), "corrupt", 1),
    "width 400 digits": (lambda c: c["images"][0].update(width=10**400), "corrupt", 1),
    "height negative": (lambda c: c["images"][0].update(height=-5), "corrupt", 1),
    "image id list": (lambda c: c["images"][0].update(id=[1]), "corrupt", 1),
    "image not an object": (lambda c: c["images"].append(7), "corrupt", 1),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_coco_entries_are_counted_skips(case, tiny_data, tmp_path):
    """Each used to raise a TypeError / ValueError / OverflowError traceback, or a message naming no file."""
    edit, counter, n = MALFORMED[case]
    data, jf, _ = _coco_set(tiny_data, tmp_path / "s", edit)
    samples, stats = _train_samples(data)
    assert sum(getattr(stats, counter).values()) == n, stats.summary()
    assert len(samples) >= 7


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ('{"images": [], "annotations": 5}', "'annotations' must be a list, it is a int"),
        ('{"annotations": []}', "'images' must be a list, it is missing"),
        ("[1, 2]", "the top level is a list"),
        ('{"images": [], "categories": [{"id": "3"}]}', "has no integer 'id'"),
        ('{"images": [], "categories": [{"id": 1}]', "Expecting"),
        ('{"images": [1' + "0" * 5000 + "]}", "integer string conversion"),
    ],
)
def test_malformed_coco_files_are_one_line_naming_the_file(text, message, tmp_path):
    jf = tmp_path / "bad.json"
    jf.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_coco_json(jf, tmp_path)
    assert str(jf) in str(err.value) and "\n" not in str(err.value)


def test_val_save_json_survives_images_the_scan_skipped_and_odd_names(tiny_data, tmp_path):
    """``val --save-json`` crashed after the whole run on a json image without file_name (the scan had
    skipped it) and on a YOLO image named ``½.jpg`` (``'½'.isnumeric()`` but ``int('½')`` fails)."""
    from yolov9k.api.val import val

    data = _copy_set(tiny_data, tmp_path / "s")
    root = data.parent
    val_img = sorted((root / "images" / "val").iterdir())[0]
    os.replace(val_img, val_img.with_name("½.jpg"))
    os.replace(root / "labels" / "val" / f"{val_img.stem}.txt", root / "labels" / "val" / "½.txt")
    jf = root / "annotations" / "instances_val.json"
    coco = json.loads(jf.read_text())
    coco["images"].append({"id": 999, "width": 64, "height": 64})  # no file_name
    jf.write_text(json.dumps(coco))
    r = val("gelan-t", str(data), imgsz=64, batch=2, device="cpu", save_json=True, workers=0, plots=False,
            project=str(tmp_path / "runs"), verbose=False, conf=0.0001)  # fmt: skip
    rows = json.loads(Path(r["json"]).read_text())
    ids = {row["image_id"] for row in rows}
    json_ids = {im["id"] for im in coco["images"] if "file_name" in im}
    assert ids and ids <= json_ids | {"½"}


def test_val_save_json_checks_the_json_before_the_run(tiny_data, tmp_path, capsys, monkeypatch):
    data = _copy_set(tiny_data, tmp_path / "s")
    jf = data.parent / "annotations" / "instances_val.json"
    jf.write_text('{"images": 5}')
    val_mod = sys.modules["yolov9k.api.val"]  # the package exports the function under the same name
    monkeypatch.setattr(val_mod, "validate", lambda *a, **k: pytest.fail("validation ran before the check"))
    argv = ["val", "--model", "gelan-t", "--data", str(data), "--imgsz", "64", "--device", "cpu"]
    assert main([*argv, "--save-json", "--project", str(tmp_path / "runs"), "--workers", "0"]) == 1
    _one_line_error(capsys, str(jf), "'images' must be a list")
    shutil.rmtree(tmp_path / "runs", ignore_errors=True)
