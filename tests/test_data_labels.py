"""Image decoding and label scanning on a corpus of bad files: counted skips, no exception, no writes."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import yolov9k.data.labels as labels_mod
from yolov9k.data import ImageReadError, load_coco_json, read_image, scan_dataset
from yolov9k.data.labels import img2label_paths, parse_label_text


def _jpeg(arr: np.ndarray, exif_orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(arr[..., ::-1].copy())  # BGR -> RGB for PIL
    if exif_orientation is None:
        im.save(buf, "JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def _base(h: int = 40, w: int = 60) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)  # blue top-left quadrant (BGR)
    return img


GOOD_LABEL = "0 0.5 0.5 0.2 0.2\n"


@pytest.fixture()
def corpus(tmp_path: Path) -> tuple[list[str], Path]:
    """images/ + labels/ with one case per file; returns (image files, root)."""
    img_dir, lab_dir = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    img_dir.mkdir(parents=True)
    lab_dir.mkdir(parents=True)
    good = _jpeg(_base())
    images = {
        "good.jpg": good,
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4 + b"\xff\xd9",  # garbage inside markers
        "truncated.png": _png(_base())[:-30],
        "truncated.jpg": good[: len(good) // 2],
        "empty.jpg": b"",
        "gray.png": _png(_base()[..., 0]),
        "rgba.png": _png(np.dstack((_base(), np.full((40, 60), 128, np.uint8)))),
        "deep16.png": _png(_base().astype(np.uint16) * 257),
        "rotated.jpg": _jpeg(_base(), exif_orientation=6),  # 90 degrees: decoded as 60x40
        "missing_label.jpg": good,
        "empty_label.jpg": good,
        "bad_rows.jpg": good,
        "polygon.jpg": good,
    }
    labels = {
        "good.txt": GOOD_LABEL,
        "corrupt.txt": GOOD_LABEL,
        "truncated.txt": GOOD_LABEL,
        "empty.txt": GOOD_LABEL,
        "gray.txt": GOOD_LABEL,
        "rgba.txt": GOOD_LABEL,
        "deep16.txt": GOOD_LABEL,
        "rotated.txt": GOOD_LABEL,
        "empty_label.txt": "",
        "bad_rows.txt": (
            "0 0.5 0.5 0.2 0.2\n"  # kept
            "1 0.5 0.5 0.2\n"  # wrong column count
            "1 nan 0.5 0.2 0.2\n"  # NaN
            "1 0.5 0.5 0.2 inf\n"  # inf
            "1 1.5 0.5 0.2 0.2\n"  # out of range
            "7 0.5 0.5 0.2 0.2\n"  # class >= nc (nc=3)
            "-1 0.5 0.5 0.2 0.2\n"  # negative class
            "0 0.5 0.5 0.2 0.2\n"  # duplicate of the first row
            "2 0.995 0.5 0.02 0.2\n"  # right edge 0.5% outside: clipped, kept
            "2 abc 0.5 0.2 0.2\n"  # not a number
            "\n"
        ),
        "polygon.txt": "1 0.1 0.1 0.5 0.1 0.5 0.3 0.1 0.3\n",
    }
    for name, data in images.items():
        (img_dir / name).write_bytes(data)
    for name, text in labels.items():
        (lab_dir / name).write_text(text)
    files = sorted(str(p) for p in img_dir.iterdir())
    return files, tmp_path


def _digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


# ---- read_image -----------------------------------------------------------------------------------


def test_read_image_conversions(corpus):
    files, root = corpus
    d = root / "images" / "train"
    for name in ("good.jpg", "gray.png", "rgba.png", "deep16.png"):
        img = read_image(d / name)
        assert img.dtype == np.uint8 and img.shape == (40, 60, 3) and img.flags.c_contiguous, name
    np.testing.assert_array_equal(read_image(d / "deep16.png"), _base())  # 16-bit 65535 -> 255
    np.testing.assert_array_equal(read_image(d / "rgba.png"), _base())  # alpha dropped
    gray = read_image(d / "gray.png")
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])
    rot = read_image(d / "rotated.jpg")
    assert rot.shape == (60, 40, 3)
    # orientation 6 = rotate 90 clockwise for display: the blue quadrant moves to the top-right
    assert rot[5, 35, 0] > 200 and rot[5, 5, 0] < 50


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("corrupt.jpg", "undecodable"),
        ("truncated.png", "truncated"),
        ("truncated.jpg", "truncated"),
        ("empty.jpg", "empty"),
    ],
)
def test_read_image_errors(corpus, name, reason):
    _, root = corpus
    with pytest.raises(ImageReadError) as e:
        read_image(root / "images" / "train" / name)
    assert e.value.reason == reason and name in str(e.value)
    with pytest.raises(ImageReadError, match="missing"):
        read_image(root / "nope.jpg")


# ---- labels -----------------------------------------------------------------------------------


def test_parse_label_text_rows():
    lab, dropped = parse_label_text("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n0 0.5 0.5 0.2 0.2\n", nc=2)
    np.testing.assert_array_equal(lab, np.array([[0, 0.5, 0.5, 0.2, 0.2]], np.float32))
    assert dropped == {"columns": 1, "duplicate": 1}
    lab, _ = parse_label_text("1 0.1 0.1 0.5 0.1 0.5 0.3 0.1 0.3\n", nc=2)  # polygon -> box
    np.testing.assert_allclose(lab, [[1, 0.3, 0.2, 0.4, 0.2]], atol=1e-7)
    lab, dropped = parse_label_text("0 0.995 0.5 0.02 0.2\n0 0.5 0.5 0 0.1\n", nc=1)
    np.testing.assert_allclose(lab, [[0, 0.9925, 0.5, 0.015, 0.2]], atol=1e-6)  # clipped at x2 = 1
    assert dropped == {"zero size": 1}


def test_img2label_paths_replaces_last_images_dir():
    out = img2label_paths(["/d/images/x/images/a.b.jpg", "/d/other/c.png"])
    assert out == ["/d/images/x/labels/a.b.txt", "/d/other/c.txt"]


def test_scan_counts_bad_files_and_writes_nothing(corpus, tmp_path_factory, monkeypatch):
    files, root = corpus
    monkeypatch.setattr(labels_mod, "_dir_writable", lambda p: False)  # keep the corpus folder pristine
    before = _digest(root)
    samples, stats = scan_dataset(files, nc=3, cache_dir=tmp_path_factory.mktemp("cache"))
    assert _digest(root) == before  # user files untouched, nothing added
    assert stats.images == 13
    assert dict(stats.corrupt) == {"undecodable": 1, "truncated": 2, "empty": 1}
    assert stats.missing == 1 and stats.empty == 1
    assert dict(stats.dropped) == {
        "columns": 1,
        "nan/inf": 2,
        "out of range": 1,
        "class>=nc": 1,
        "class<0": 1,
        "duplicate": 1,
        "not a number": 1,
    }
    assert len(samples) == 9 and stats.kept == 9
    by_name = {Path(s.im_file).name: s for s in samples}
    assert by_name["rotated.jpg"].shape == (60, 40)
    assert len(by_name["missing_label.jpg"].labels) == 0 and len(by_name["empty_label.jpg"].labels) == 0
    bad = by_name["bad_rows.jpg"].labels
    np.testing.assert_allclose(bad, [[0, 0.5, 0.5, 0.2, 0.2], [2, 0.9925, 0.5, 0.015, 0.2]], atol=1e-6)
    assert stats.boxes == 5 + 2 + 1  # 5 kept images with one row, bad_rows keeps 2, polygon 1
    s = stats.summary()
    assert s.startswith("found 13, missing 1, empty 1, corrupt 4 (empty: 1, truncated: 2, undecodable: 1)")
    assert "rows dropped 8 (" in s and "class>=nc: 1" in s


def test_cache_reuse_invalidation_and_location(corpus, tmp_path_factory, monkeypatch):
    files, root = corpus
    calls = []
    real = labels_mod.verify_in_threads
    monkeypatch.setattr(labels_mod, "verify_in_threads", lambda *a: calls.append(1) or real(*a))
    cache_dir = tmp_path_factory.mktemp("fallback")
    s1, st1 = scan_dataset(files, nc=3, cache_dir=cache_dir)
    beside = root / "labels" / "train.cache.json"
    assert beside.is_file() and not any(cache_dir.iterdir())
    assert json.loads(beside.read_text())["version"] == labels_mod.CACHE_VERSION
    s2, st2 = scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert len(calls) == 1 and st2.summary() == st1.summary()
    assert all(a.im_file == b.im_file and np.array_equal(a.labels, b.labels) for a, b in zip(s1, s2))
    scan_dataset(files, nc=4, cache_dir=cache_dir)  # nc is part of the key
    assert len(calls) == 2
    (root / "labels" / "train" / "good.txt").write_text("2 0.25 0.25 0.1 0.1\n")  # size changes
    s3, _ = scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert len(calls) == 3
    good = next(s for s in s3 if s.im_file.endswith("good.jpg"))
    np.testing.assert_allclose(good.labels, [[2, 0.25, 0.25, 0.1, 0.1]])
    beside.write_text("{not json")  # a damaged cache is rebuilt, not fatal
    scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert len(calls) == 4 and json.loads(beside.read_text())["version"] == labels_mod.CACHE_VERSION


def test_cache_sees_edits_that_keep_size_and_mtime(corpus, tmp_path_factory, monkeypatch):
    """Issue 22 item 16: label files are keyed on content; images on path, size, mtime and ctime."""
    files, root = corpus
    calls = []
    real = labels_mod.verify_in_threads
    monkeypatch.setattr(labels_mod, "verify_in_threads", lambda *a: calls.append(1) or real(*a))
    cache_dir = tmp_path_factory.mktemp("fallback")
    scan_dataset(files, nc=3, cache_dir=cache_dir)
    label = root / "labels" / "train" / "good.txt"
    st = label.stat()
    label.write_text(GOOD_LABEL.replace("0 0.5", "2 0.5"))  # same size, new class
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
    assert label.stat().st_size == st.st_size and label.stat().st_mtime_ns == st.st_mtime_ns
    samples, _ = scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert len(calls) == 2
    good = next(s for s in samples if s.im_file.endswith("good.jpg"))
    assert good.labels[:, 0].tolist() == [2.0]
    image = root / "images" / "train" / "polygon.jpg"  # replaced by a truncated file of the same size
    st = image.stat()
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    _, stats = scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert len(calls) == 3 and sum(stats.corrupt.values()) == 5  # the ctime changed: rescanned


def test_read_only_dataset_uses_cache_dir(corpus, tmp_path_factory, monkeypatch):
    files, root = corpus
    monkeypatch.setattr(labels_mod, "_dir_writable", lambda p: False)  # root ignores chmod, so patch
    cache_dir = tmp_path_factory.mktemp("fallback")
    scan_dataset(files, nc=3, cache_dir=cache_dir)
    assert not (root / "labels" / "train.cache.json").exists()
    cached = list(cache_dir.glob("*.cache.json"))
    assert len(cached) == 1 and cached[0].name.startswith("train-")
    monkeypatch.setenv("YOLOV9K_HOME", str(tmp_path_factory.mktemp("home")))
    scan_dataset(files, nc=3)  # default cache dir
    assert len(list((labels_mod.default_cache_dir()).glob("*.cache.json"))) == 1


def test_empty_dataset_raises_with_summary(corpus):
    files, _ = corpus
    bad = [f for f in files if Path(f).name in ("corrupt.jpg", "empty.jpg")]
    with pytest.raises(ValueError, match=r"no usable images: found 2, .*corrupt 2"):
        scan_dataset(bad, nc=3, use_cache=False)
    with pytest.raises(ValueError, match="no image files"):
        scan_dataset([], nc=3)


def test_load_coco_json(corpus):
    _, root = corpus
    coco = {
        "images": [
            {"id": 1, "file_name": "good.jpg", "width": 60, "height": 40},
            {"id": 2, "file_name": "empty.jpg", "width": 60, "height": 40},
            {"id": 3, "file_name": "gray.png", "width": 60, "height": 40},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [6, 4, 12, 8], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [30, 20, 30, 20], "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
            {"id": 4, "image_id": 1, "category_id": 99, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        ],
        "categories": [{"id": 7, "name": "b"}, {"id": 3, "name": "a"}],
    }
    jf = root / "instances.json"
    jf.write_text(json.dumps(coco))
    samples, stats, cat_ids = load_coco_json(jf, root / "images" / "train")
    assert cat_ids == [3, 7]
    assert [Path(s.im_file).name for s in samples] == ["good.jpg", "gray.png"]
    assert (
        stats.crowd == 1
        and dict(stats.corrupt) == {"empty": 1}
        and stats.dropped == {"unknown category_id": 1}
    )
    assert stats.missing == 1  # gray.png has no annotation: background
    np.testing.assert_allclose(
        samples[0].labels, [[1, 0.2, 0.2, 0.2, 0.2], [0, 0.75, 0.75, 0.5, 0.5]], atol=1e-6
    )
