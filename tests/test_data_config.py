"""Dataset YAML parsing: names forms, relative paths, .txt lists, COCO json splits, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from yolov9k.data import load_dataset_config


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        d = tmp_path / "ds" / "images" / split
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"{i}.jpg").write_bytes(b"x")  # parsing does not decode images
        (d / "notes.md").write_text("not an image")
    return tmp_path


def _write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_list_names_relative_path(tree):
    y = _write(
        tree / "data.yaml", {"path": "ds", "train": "images/train", "val": "images/val", "names": ["a", "b"]}
    )
    cfg = load_dataset_config(y)
    assert cfg.root == tree / "ds" and cfg.names == {0: "a", 1: "b"} and cfg.nc == 2
    assert cfg.train == [str(tree / "ds" / "images" / "train" / f"{i}.jpg") for i in range(3)]
    assert len(cfg.val) == 2 and cfg.test == [] and cfg.coco_json == {}


def test_dict_names_txt_list_and_no_path(tree):
    ds = tree / "ds"
    (ds / "train.txt").write_text("./images/train/0.jpg\nimages/train/2.jpg\n\n")
    y = _write(
        ds / "d.yaml",
        {
            "train": "train.txt",
            "val": ["images/val", "images/train/1.jpg"],
            "names": {0: "x", 1: "y", 2: "z"},
            "nc": 3,
        },
    )
    cfg = load_dataset_config(str(y))
    assert cfg.root == ds  # no 'path': the YAML's folder
    assert cfg.train == [str(ds / "images/train/0.jpg"), str(ds / "images/train/2.jpg")]
    assert cfg.val[-1] == str(ds / "images/train/1.jpg") and len(cfg.val) == 3
    assert cfg.names == {0: "x", 1: "y", 2: "z"}


def test_dict_input_and_coco_json_split(tree):
    ds = tree / "ds"
    (ds / "annotations").mkdir()
    (ds / "annotations" / "instances_val.json").write_text("{}")
    cfg = load_dataset_config(
        {"path": str(ds), "train": "images/train", "val": "annotations/instances_val.json", "nc": 2}
    )
    assert cfg.coco_json == {"val": ds / "annotations" / "instances_val.json"}
    assert len(cfg.val) == 2 and cfg.names == {0: "class0", 1: "class1"}


def test_missing_paths_are_listed(tree):
    y = _write(
        tree / "bad.yaml",
        {"path": "ds", "train": ["images/train", "nope"], "val": "images/val", "names": ["a"]},
    )
    with pytest.raises(FileNotFoundError, match=r"train: not found: .*ds/nope"):
        load_dataset_config(y)
    with pytest.raises(FileNotFoundError, match="dataset YAML not found"):
        load_dataset_config(tree / "absent.yaml")
    (tree / "ds" / "l.txt").write_text("images/train/missing.png\n")
    y = _write(tree / "bad2.yaml", {"path": "ds", "train": "l.txt", "val": "images/val", "names": ["a"]})
    cfg = load_dataset_config(y)  # listed files are checked by the scanner (a counted "missing" skip)
    assert cfg.train == [str(tree / "ds" / "images/train/missing.png")]


def test_malformed_configs(tree):
    base = {"path": "ds", "train": "images/train", "val": "images/val"}
    with pytest.raises(ValueError, match="'nc' is 3 but 'names' has 2"):
        load_dataset_config(_write(tree / "a.yaml", {**base, "names": ["a", "b"], "nc": 3}))
    with pytest.raises(ValueError, match="needs 'names'"):
        load_dataset_config(_write(tree / "b.yaml", base))
    with pytest.raises(ValueError, match="no 'val' entry"):
        load_dataset_config(_write(tree / "c.yaml", {"path": "ds", "train": "images/train", "names": ["a"]}))
    with pytest.raises(ValueError, match="indices must be 0..1"):
        load_dataset_config(_write(tree / "d.yaml", {**base, "names": {0: "a", 2: "b"}}))
    (tree / "ds" / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_dataset_config(_write(tree / "e.yaml", {**base, "val": "empty", "names": ["a"]}))
