"""``cache=ram|disk`` (issue 20): the same samples as no cache; a damaged or stale cache file is
rebuilt from the image, never trusted; the figures are checked before anything is decoded."""

from __future__ import annotations

import os
import shutil
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import yolov9k.data.dataset as dataset_mod
from yolov9k.data import YoloDataset
from yolov9k.data.image_cache import DiskCache, cache_bytes
from yolov9k.data.labels import Sample
from yolov9k.errors import ConfigError, OptionError
from yolov9k.options import resolve_config

SIZES = [(96, 128), (128, 96), (256, 200), (72, 128), (128, 80), (100, 100), (90, 120), (200, 256)]


def _write(f, h, w, seed):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(f), img, [cv2.IMWRITE_JPEG_QUALITY, 90])


@pytest.fixture
def samples(tmp_path) -> list[Sample]:
    d = tmp_path / "images"
    d.mkdir()
    out = []
    for i, (h, w) in enumerate(SIZES):
        f = d / f"{i}.jpg"
        _write(f, h, w, i)
        lab = np.array([[i % 3, 0.5, 0.5, 0.3, 0.4]], np.float32)
        out.append(Sample(str(f), (h, w), lab))
    return out


def _items(ds, batch=None):
    items = ds.__getitems__(batch) if batch else [ds[i] for i in range(len(ds))]
    return [(it[0].contiguous(), it[1]) for it in items]


def _assert_same(a, b):
    assert len(a) == len(b)
    for (ia, la), (ib, lb) in zip(a, b):
        assert torch.equal(ia, ib) and torch.equal(la, lb)


def _datasets(samples, **kw):
    train = dict(imgsz=96, augment=True, hyp={"mixup": 0.5, "flipud": 0.5}, seed=3, **kw)
    val = dict(imgsz=96, augment=False, rect=True, batch_size=4, **kw)
    return YoloDataset(samples, **train), YoloDataset(samples, **val)


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cache_returns_the_samples_of_no_cache(samples, mode):
    plain_train, plain_val = _datasets(samples)
    train, val = _datasets(samples, cache=mode)
    assert train.cache == val.cache == mode
    batch = list(range(len(samples)))[::-1]
    for epoch in (0, 2):
        plain_train.set_epoch(epoch)
        train.set_epoch(epoch)
        _assert_same(_items(train), _items(plain_train))
        _assert_same(_items(train, batch), _items(plain_train, batch))
    _assert_same(_items(val), _items(plain_val))


def test_disk_cache_is_reused_without_decoding(samples, monkeypatch):
    first = YoloDataset(samples, 96, augment=True, cache="disk")
    files = sorted(first._disk.folder.glob("*.npy"))
    assert len(files) == len(samples)
    beside_labels = Path(samples[0].im_file).parents[1].resolve() / "labels.npy-96"
    assert first._disk.folder == beside_labels
    calls = []
    monkeypatch.setattr(dataset_mod, "read_image", lambda *a, **k: calls.append(a) or 1 / 0)
    second = YoloDataset(samples, 96, augment=True, cache="disk")
    _assert_same(_items(second), _items(first))
    assert calls == []


Damage = namedtuple("Damage", "name write")
DAMAGES = [
    Damage("truncated", lambda f: f.write_bytes(f.read_bytes()[: os.path.getsize(f) // 2])),
    Damage("garbage", lambda f: f.write_bytes(b"\x93NUMPY not really" * 10)),
    Damage("empty", lambda f: f.write_bytes(b"")),
    Damage("wrong shape", lambda f: np.save(f, np.zeros((5, 5, 3), np.uint8))),
    Damage("wrong dtype", lambda f: np.save(f, np.load(f).astype(np.float32))),
    Damage("pickled object", lambda f: np.save(f, np.array([{"a": 1}], dtype=object), allow_pickle=True)),
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.name for d in DAMAGES])
def test_a_damaged_cache_file_is_rebuilt_not_trusted(samples, damage, caplog):
    plain = _items(YoloDataset(samples, 96, augment=False))
    YoloDataset(samples, 96, augment=False, cache="disk")
    cache = DiskCache(samples, 96, "area")
    f = cache.path(samples[2].im_file)
    good = np.load(f)
    damage.write(f)
    with caplog.at_level("WARNING", logger="yolov9k.data"):
        ds = YoloDataset(samples, 96, augment=False, cache="disk")
    assert ds._disk.rebuilt == 1 and "damaged" in caplog.text and f.name in caplog.text
    np.testing.assert_array_equal(np.load(f), good)  # written again, from the image
    _assert_same(_items(ds), plain)


def test_a_changed_image_gets_a_new_cache_file(samples):
    ds = YoloDataset(samples, 96, augment=False, cache="disk")
    before = ds._disk.path(samples[0].im_file)
    _write(samples[0].im_file, *SIZES[0], seed=99)  # same size, new pixels
    st = os.stat(samples[0].im_file)
    os.utime(samples[0].im_file, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = YoloDataset(samples, 96, augment=False, cache="disk")
    assert again._disk.path(samples[0].im_file) != before
    _assert_same(_items(again), _items(YoloDataset(samples, 96, augment=False)))


def test_ram_cache_that_would_not_fit_falls_back_to_disk(samples, monkeypatch, caplog):
    need = cache_bytes(samples, 96)
    monkeypatch.setattr(dataset_mod, "available_memory", lambda: need)  # 70 % of it is usable
    with caplog.at_level("WARNING", logger="yolov9k.data"):
        ds = YoloDataset(samples, 96, augment=True, cache="ram")
    assert ds.cache == "disk" and ds._ram is None
    assert "cache=ram needs" in caplog.text and "using cache=disk" in caplog.text
    monkeypatch.setattr(dataset_mod, "available_memory", lambda: 2 * need)
    assert YoloDataset(samples, 96, augment=True, cache="ram").cache == "ram"


def test_disk_cache_without_the_space_is_refused_in_one_line(samples, monkeypatch):
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(ConfigError, match=r"^cache=disk needs 0\.\d\d GiB in .*, 0\.00 GiB free there$"):
        YoloDataset(samples, 96, augment=True, cache="disk")


def test_cache_figure_is_the_resized_bytes(samples):
    expect = sum(min(96 * h // max(h, w), h) * min(96 * w // max(h, w), w) * 3 for h, w in SIZES)
    assert cache_bytes(samples, 96) == expect


def test_cache_option(samples):
    assert resolve_config({"cache": True})["cache"] == "ram"
    assert resolve_config({"cache": "disk"})["cache"] == "disk"
    assert resolve_config({})["cache"] is False
    with pytest.raises(OptionError, match="cache"):
        resolve_config({"cache": "gpu"})
    with pytest.raises(OptionError, match="cache"):
        YoloDataset(samples, 96, cache="gpu")
