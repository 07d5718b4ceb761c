"""Demo data set generator: determinism, label consistency (YOLO vs COCO), reuse."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from yolov9k.data import (
    DEMO_NAMES,
    ensure_demo_dataset,
    generate_demo_dataset,
    load_dataset_config,
    read_image,
)
from yolov9k.data.demo import _PALETTE_BGR

SMALL = {"num_train": 6, "num_val": 3, "imgsz": 128}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "demo.yaml"  # the yaml holds the absolute root path
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "a", seed=3, **SMALL)


def test_same_seed_gives_identical_bytes(demo, tmp_path):
    again = generate_demo_dataset(tmp_path / "b", seed=3, **SMALL)
    a, b = _files(demo.parent), _files(again.parent)
    assert sorted(a) == sorted(b)
    assert len([k for k in a if k.startswith("images")]) == 9
    diff = [k for k in a if a[k] != b[k]]
    assert not diff, f"files differ for the same seed: {diff}"


def test_different_seed_gives_different_images(demo, tmp_path):
    other = _files(generate_demo_dataset(tmp_path / "c", seed=4, **SMALL).parent)
    a = _files(demo.parent)
    images = [k for k in a if k.startswith("images")]
    assert sum(a[k] != other[k] for k in images) == len(images)


def test_yaml_and_labels_are_consistent(demo):
    cfg = load_dataset_config(demo)
    assert cfg.names == dict(enumerate(DEMO_NAMES)) and cfg.nc == len(DEMO_NAMES)
    assert len(cfg.train) == 6 and len(cfg.val) == 3
    assert set(cfg.coco_json) == {"train", "val"}
    for split in ("train", "val"):
        coco = json.loads(cfg.coco_json[split].read_text())
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
        by_name = {im["file_name"]: im for im in coco["images"]}
        total = 0
        for f in cfg.split(split):
            img = read_image(f)
            h, w = img.shape[:2]
            info = by_name[Path(f).name]
            assert (info["height"], info["width"]) == (h, w)
            lab = np.loadtxt(str(f).replace("/images/", "/labels/").replace(".jpg", ".txt"), ndmin=2)
            assert 1 <= len(lab) <= 6
            assert ((lab[:, 0] >= 0) & (lab[:, 0] < cfg.nc)).all()
            x1, y1 = lab[:, 1] - lab[:, 3] / 2, lab[:, 2] - lab[:, 4] / 2
            x2, y2 = lab[:, 1] + lab[:, 3] / 2, lab[:, 2] + lab[:, 4] / 2
            assert min(x1.min(), y1.min()) >= -1e-6 and max(x2.max(), y2.max()) <= 1 + 1e-6
            assert (lab[:, 3] * w >= 20 * 128 / 320 * 0.5).all()  # objects are not tiny
            anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
            px = np.array([a["bbox"] for a in anns], dtype=np.float64)
            centre = px[:, :2] + px[:, 2:] / 2
            expect = np.concatenate((centre, px[:, 2:]), 1) / [w, h, w, h]
            np.testing.assert_allclose(lab[:, 1:], expect, atol=2e-6)
            np.testing.assert_array_equal(lab[:, 0] + 1, [a["category_id"] for a in anns])
            total += len(anns)
        assert total == len(coco["annotations"])


def test_objects_are_drawn_where_labelled(demo):
    """The centre of the last-drawn (never occluded) object has one of the palette colours."""
    cfg = load_dataset_config(demo)
    for f in cfg.train + cfg.val:
        img = read_image(f).astype(np.float32)
        h, w = img.shape[:2]
        lab = np.loadtxt(f.replace("/images/", "/labels/").replace(".jpg", ".txt"), ndmin=2)
        cx, cy = int(lab[-1, 1] * w), int(lab[-1, 2] * h)
        colour = img[cy - 1 : cy + 2, cx - 1 : cx + 2].reshape(-1, 3).mean(0)
        dist = np.abs(np.array(_PALETTE_BGR, dtype=np.float32) - colour).max(1).min()
        assert dist < 30, f"{f}: centre colour {colour} is no palette colour (closest {dist:.0f} away)"


def test_ensure_reuses_and_regenerates(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLOV9K_HOME", str(tmp_path / "home"))
    y1 = ensure_demo_dataset(**SMALL)
    assert y1 == tmp_path / "home" / "demo" / "demo.yaml"
    marker = y1.parent / ".complete"
    stamp = marker.stat().st_mtime_ns
    assert ensure_demo_dataset(**SMALL) == y1 and marker.stat().st_mtime_ns == stamp
    cfg = yaml.safe_load(y1.read_text())
    assert Path(cfg["path"]) == y1.parent
    marker.unlink()  # incomplete set -> regenerated
    assert ensure_demo_dataset(**SMALL) == y1 and marker.exists()


def test_generate_refuses_to_clobber(tmp_path):
    generate_demo_dataset(tmp_path, seed=1, **SMALL)
    (tmp_path / "user_file.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_demo_dataset(tmp_path, seed=2, **SMALL)
    generate_demo_dataset(tmp_path, seed=2, overwrite=True, **SMALL)
    assert (tmp_path / "user_file.txt").read_text() == "keep me"
    assert json.loads((tmp_path / ".complete").read_text())["seed"] == 2
