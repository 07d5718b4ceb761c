"""Issue 13, checkpoint side: hostile and broken checkpoint files are refused in bounded time and
memory, with the documented error types (ValueError / CheckpointError, UnsafeCheckpointError) and a
one-line message."""

from __future__ import annotations

import copyreg
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from checkpoint_forge import (
    DEFLATED,
    Entry,
    TensorRef,
    deflated_zeros,
    read_entries,
    torch_archive,
    write_zip,
)
from torch import nn

from yolov9k.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from yolov9k.io import archive
from yolov9k.io.official import MAX_MODULE_DEPTH, MAX_WALK_ENTRIES, module_state_dict
from yolov9k.io.safe_pickle import UnsafeCheckpointError, read_torch_zip
from yolov9k.models import load_config
from yolov9k.models.parse import MAX_CLASSES, MAX_REPEATS, validate_config

PEAK_RSS_LIMIT = 1536 << 20  # bytes: what the issue allows a hostile file
CRC32_OF_1GIB_OF_ZEROS = 0x5B64C2B0  # zlib.crc32(bytes(1 << 30)), precomputed (a second to compute)


def _assert_one_line(error: BaseException, name: str) -> None:
    text = str(error)
    assert "\n" not in text and len(text) < 400, text
    assert name in text, f"the message does not name {name!r}: {text}"


@pytest.fixture(scope="module")
def official(fixtures_dir: Path) -> Path:
    return fixtures_dir / "gelan-t_official_format.pt"


@pytest.fixture(scope="module")
def ours(official: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.pt as our trainer writes it (gelan-t weights)."""
    return save_checkpoint(tmp_path_factory.mktemp("ours") / "best.pt", load_model(official), epoch=1)


def _official_like(top: nn.Module, path: Path) -> Path:
    """Save ``top`` as the 'model' of an official-format checkpoint (with gelan-t's config)."""
    top.yaml = load_config("gelan-t")
    top.nc = 80
    torch.save({"model": top, "epoch": -1}, path)
    return path


def _chain(depth: int, fan_out: int, leaf: nn.Module | None = None) -> nn.Module:
    """Module records where each one's children are ``fan_out`` references to the next."""
    node = leaf or nn.Module()
    for _ in range(depth):
        parent = nn.Module()
        for i in range(fan_out):
            parent._modules[f"m{i}"] = node
        node = parent
    return node


# --------------------------------------------------------------------------------------------
# item 3: module walks visit each record once, with a depth limit
# --------------------------------------------------------------------------------------------


def test_module_dag_of_2_pow_40_paths_is_refused_in_seconds(tmp_path: Path) -> None:
    """The issue's file: 40 records, each one's children two references to the next."""
    top = nn.Module()
    top._modules["model"] = _chain(40, 2)
    path = _official_like(top, tmp_path / "dag.pt")
    assert path.stat().st_size < 16 << 10
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="deeper than") as err:
        load_model(path)
    _assert_one_line(err.value, path.name)
    assert time.perf_counter() - start < 5.0


def test_module_dag_within_the_depth_limit_is_walked_once(tmp_path: Path) -> None:
    top = nn.Module()
    top._modules["model"] = _chain(MAX_MODULE_DEPTH - 2, 2)  # 2**30 paths, no tensor
    path = _official_like(top, tmp_path / "dag.pt")
    start = time.perf_counter()
    assert module_state_dict(read_torch_zip(path)["model"]) == {}
    assert time.perf_counter() - start < 2.0
    with pytest.raises(ValueError, match="do not fit") as err:  # no tensors: refused at the fit check
        load_model(path)
    _assert_one_line(err.value, path.name)


def test_module_dag_with_a_tensor_stops_at_the_entry_limit(tmp_path: Path) -> None:
    top = nn.Module()
    top._modules["model"] = _chain(MAX_MODULE_DEPTH - 2, 2, leaf=nn.Linear(1, 1))  # 2**30 paths to 2 tensors
    path = _official_like(top, tmp_path / "dag.pt")
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=f"more than {MAX_WALK_ENTRIES}"):
        load_model(path)
    assert time.perf_counter() - start < 10.0


def test_shared_module_keeps_both_prefixes_as_torch_does(tmp_path: Path) -> None:
    shared = nn.Conv2d(2, 2, 1)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    torch.save({"net": net}, tmp_path / "net.pt")
    got = module_state_dict(read_torch_zip(tmp_path / "net.pt")["net"])
    want = net.state_dict(keep_vars=False)
    assert list(got) == list(want) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_deep_and_cyclic_module_trees_are_refused(tmp_path: Path) -> None:
    top = nn.Module()
    top._modules["model"] = _chain(MAX_MODULE_DEPTH + 5, 1)
    deep = _official_like(top, tmp_path / "deep.pt")
    with pytest.raises(CheckpointError, match="deeper than") as err:
        load_model(deep)
    _assert_one_line(err.value, deep.name)

    loop = nn.Module()
    loop._modules["again"] = loop
    top = nn.Module()
    top._modules["model"] = loop
    cyclic = _official_like(top, tmp_path / "cyclic.pt")
    with pytest.raises(CheckpointError, match="cycle"):
        load_model(cyclic)


class _Stateless:
    """Pickles as a torch.nn Module record created without any state (no BUILD opcode)."""

    def __reduce__(self):
        return (copyreg._reconstructor, (nn.Module, object, None))


def test_module_record_without_state(tmp_path: Path) -> None:
    torch.save({"model": _Stateless()}, tmp_path / "stateless.pt")
    with pytest.raises(ValueError, match="not a pickled model"):  # was AttributeError
        load_model(tmp_path / "stateless.pt")
    top = nn.Module()
    top._modules["model"] = _Stateless()
    assert module_state_dict(read_torch_zip(_official_like(top, tmp_path / "child.pt"))["model"]) == {}


# --------------------------------------------------------------------------------------------
# item 5: bit rot is refused, naming the entry
# --------------------------------------------------------------------------------------------


def _flip_byte_in_largest_tensor(src: Path, dst: Path) -> str:
    """Copy ``src`` with one byte of its largest ``data/`` entry changed; return the entry name."""
    with zipfile.ZipFile(src) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(src.read_bytes())
    name_len, extra_len = struct.unpack_from("<2H", raw, info.header_offset + 26)
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[at] ^= 0x40
    dst.write_bytes(bytes(raw))
    return info.filename


@pytest.mark.parametrize("which", ["ours", "official"])
def test_bit_rot_in_a_tensor_is_refused(tmp_path: Path, request, which: str) -> None:
    src = request.getfixturevalue(which)
    rotten = tmp_path / "rotten.pt"
    entry = _flip_byte_in_largest_tensor(src, rotten)
    with zipfile.ZipFile(rotten) as zf:
        assert zf.testzip() == entry
    readers = [load_model, read_torch_zip] + ([load_checkpoint] if which == "ours" else [])
    for reader in readers:
        with pytest.raises(CheckpointError, match="CRC") as err:
            reader(rotten)
        _assert_one_line(err.value, entry)


def test_bit_rot_in_the_pickle_is_refused(tmp_path: Path, ours: Path) -> None:
    entries = read_entries(ours)
    pkl = next(e for e in entries if e.name.endswith("/data.pkl"))
    good_crc = zlib.crc32(pkl.data)
    pkl.data = pkl.data.replace(b"yolov9k", b"yolov9K", 1)
    pkl.crc = good_crc
    rotten = write_zip(tmp_path / "rotten.pt", entries)
    with pytest.raises(CheckpointError, match="CRC") as err:
        load_checkpoint(rotten)
    _assert_one_line(err.value, pkl.name)


# --------------------------------------------------------------------------------------------
# item 4: sizes are checked before reading; configs before building
# --------------------------------------------------------------------------------------------


def _deflate_bomb(path: Path) -> Path:
    """1 GiB float32 storage stored deflated: a 1 MB checkpoint, valid apart from its size."""
    numel = (1 << 30) // 4
    bomb = Entry("", deflated_zeros(1024), DEFLATED, 1 << 30, CRC32_OF_1GIB_OF_ZEROS)
    return torch_archive(path, {"w": TensorRef("0", numel)}, {"0": bomb})


def _ours_with_cfg(path: Path, ours: Path, **changes) -> Path:
    ckpt = torch.load(ours, weights_only=True)
    ckpt["cfg"] = {**ckpt["cfg"], **changes.pop("cfg", {})}
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


def test_deflate_bomb_is_refused_before_reading(tmp_path: Path) -> None:
    path = _deflate_bomb(tmp_path / "bomb.pt")
    assert path.stat().st_size < 2 << 20
    for reader in (load_model, read_torch_zip):
        with pytest.raises(CheckpointError, match="decompression bomb") as err:
            reader(path)
        _assert_one_line(err.value, path.name)


@pytest.mark.parametrize(
    ("lie", "message"),
    [
        ("duplicate", "twice"),
        ("stored size", "inconsistent sizes"),
        ("method", "uses compression 12"),
        ("huge entry", "declares 2147483648 bytes"),
    ],
)
def test_directory_lies_are_refused(tmp_path: Path, lie: str, message: str) -> None:
    entries = [Entry("archive/data.pkl", b"\x80\x02}q\x00."), Entry("archive/version", b"3\n")]
    extra = {
        "duplicate": Entry("archive/version", b"3\n"),
        "stored size": Entry("archive/data/0", bytes(16), size=1 << 20),
        "method": Entry("archive/data/0", bytes(16), method=12),
        "huge entry": Entry("archive/data/0", deflated_zeros(1), DEFLATED, size=1 << 31),
    }[lie]
    path = write_zip(tmp_path / "lie.pt", [*entries, extra])
    for reader in (load_model, read_torch_zip):
        with pytest.raises(CheckpointError, match=message) as err:
            reader(path)
        _assert_one_line(err.value, path.name)


def test_entry_count_is_checked_before_the_directory_is_parsed(tmp_path: Path, monkeypatch) -> None:
    path = write_zip(tmp_path / "many.pt", [Entry(f"archive/{i}", b"") for i in range(5)])
    monkeypatch.setattr(archive, "MAX_ENTRIES", 4)
    monkeypatch.setattr(archive.zipfile, "ZipFile", None)  # parsing the directory would fail
    for reader in (load_model, read_torch_zip):
        with pytest.raises(CheckpointError, match="lists 5 entries") as err:
            reader(path)
        _assert_one_line(err.value, path.name)


def test_oversized_pickle_is_refused_before_unpickling(tmp_path: Path) -> None:
    """A pickle of tiny objects costs ~2 s per MiB to unpickle: larger than the limit is refused."""
    n = archive.MAX_PICKLE_BYTES // 2
    pkl = b"\x80\x02]" + b"]a" * n + b"."  # a list of n empty lists
    path = write_zip(tmp_path / "big.pt", [Entry("archive/data.pkl", pkl), Entry("archive/version", b"3\n")])
    start = time.perf_counter()
    for reader in (load_model, read_torch_zip):
        with pytest.raises(CheckpointError, match=f"has {len(pkl)} bytes") as err:
            reader(path)
        _assert_one_line(err.value, path.name)
    assert time.perf_counter() - start < 2.0


def _legacy_bomb(path: Path) -> Path:
    """A legacy (non-zip) torch.save file whose one storage claims 2**28 floats (1 GiB)."""
    buf = io.BytesIO()
    torch.save({"w": torch.zeros(12345)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    numel = b"M" + struct.pack("<H", 12345)  # BININT2 12345: the storage's and the tensor's size
    assert data.count(numel) == 2
    data = data.replace(numel, b"J" + struct.pack("<i", 1 << 28))
    size_at = len(data) - 4 * 12345 - 8  # the storage's element count, before its bytes
    assert struct.unpack_from("<q", data, size_at) == (12345,)
    path.write_bytes(data[:size_at] + struct.pack("<q", 1 << 28) + data[size_at + 8 :])
    return path


def test_storage_larger_than_its_entry_is_refused(tmp_path: Path) -> None:
    path = torch_archive(tmp_path / "lie.pt", {"w": TensorRef("0", 1 << 28)}, {"0": Entry("", bytes(16))})
    with pytest.raises(ValueError, match="holds 16 bytes") as err:
        read_torch_zip(path)
    _assert_one_line(err.value, path.name)
    with pytest.raises(ValueError):
        load_model(path)


def test_config_ranges_are_checked_before_building() -> None:
    cfg = load_config("gelan-t")
    bad = {
        "nc": {**cfg, "nc": MAX_CLASSES + 1},
        "repeats": {**cfg, "backbone": [[-1, 10**6, "Conv", [16, 3, 2]], *cfg["backbone"][1:]]},
        "depth": {**cfg, "depth_multiple": float("nan")},
        "width": {**cfg, "width_multiple": 1e9},
        "inner": {**cfg, "head": [[-1, 1, "RepNCSPELAN4", [64, 64, 32, MAX_REPEATS + 1]], *cfg["head"]]},
        "arg": {**cfg, "backbone": [[-1, 1, "Conv", [10**9, 3, 2]], *cfg["backbone"][1:]]},
    }
    for what, c in bad.items():
        with pytest.raises(ValueError):
            validate_config(c)
            pytest.fail(f"config with a bad {what} passed")
    assert validate_config(cfg) == cfg


_CHILD = """
import json, sys, time
from yolov9k.checkpoint import load_model
out = []
for path in sys.argv[1:]:
    start = time.perf_counter()
    try:
        load_model(path)
        error = None
    except Exception as e:
        error = [type(e).__name__, str(e)]
    out.append({"path": path, "error": error, "seconds": time.perf_counter() - start})
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"results": out, "peak_rss": int(hwm) * 1024}))
"""


def test_hostile_files_cost_bounded_time_and_memory(tmp_path: Path, ours: Path) -> None:
    """In a fresh process: each hostile file is refused in seconds, for the reason it was made
    for, and the peak RSS of the whole run stays < 1.5 GiB (configs are checked before building)."""
    top = nn.Module()
    top._modules["model"] = _chain(40, 2)
    cases = {
        "decompression bomb": _deflate_bomb(tmp_path / "bomb.pt"),
        "repeat counts": _ours_with_cfg(
            tmp_path / "repeats.pt", ours, cfg={"backbone": [[-1, 10**6, "Conv", [16]]]}
        ),
        "number of classes": _ours_with_cfg(tmp_path / "nc.pt", ours, nc=10**6),
        "describes": _ours_with_cfg(tmp_path / "width.pt", ours, cfg={"width_multiple": 16.0}),
        "nested deeper": _ours_with_cfg(tmp_path / "nested.pt", ours, cfg={"extra": [[[[[[[[[[1]]]]]]]]]]}),
        "deeper than": _official_like(top, tmp_path / "dag.pt"),
        "not a readable checkpoint": _legacy_bomb(tmp_path / "legacy.pt"),
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, cases.values())],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    for (reason, path), r in zip(cases.items(), report["results"], strict=True):
        assert r["error"] is not None and r["error"][0] in ("ValueError", "CheckpointError"), r
        error = r["error"][1]
        assert reason in error and path.name in error and "\n" not in error, r
        assert r["seconds"] < 5.0, r
    assert report["peak_rss"] < PEAK_RSS_LIMIT, f"peak RSS {report['peak_rss'] >> 20} MiB"


# --------------------------------------------------------------------------------------------
# item 6: only the documented error types, one line each
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"\x80\x02.", b"\x80\x02]q\x00.", b"\x80\x02}q\x00.", b"\x80\x02K\x01."])
def test_tiny_pickles(tmp_path: Path, data: bytes) -> None:
    """Bare pickles (the first was an IndexError): torch.load reads them as legacy files."""
    path = tmp_path / "tiny.pt"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a readable checkpoint") as err:
        load_model(path)
    _assert_one_line(err.value, path.name)


class _RebuildV3WithoutArguments:
    """torch.load (weights-only) lets this global through, then raises TypeError calling it."""

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v3, ("x",))


def test_errors_inside_torch_load_are_converted(tmp_path: Path) -> None:
    path = torch_archive(tmp_path / "v3.pt", {"format": "yolov9k", "w": _RebuildV3WithoutArguments()})
    with pytest.raises(TypeError):
        torch.load(path, weights_only=True)
    for reader in (load_model, load_checkpoint):
        with pytest.raises(CheckpointError, match="_rebuild_tensor_v3") as err:
            reader(path)
        _assert_one_line(err.value, path.name)


def test_class_names_must_be_plain(tmp_path: Path, ours: Path) -> None:
    ckpt = torch.load(ours, weights_only=True)
    torch.save({**ckpt, "names": {i: [[str(i)]] for i in range(80)}}, tmp_path / "names.pt")
    with pytest.raises(CheckpointError, match="class names") as err:
        load_model(tmp_path / "names.pt")
    _assert_one_line(err.value, "names.pt")


def test_huge_memo_index_is_not_a_memory_bomb(tmp_path: Path) -> None:
    """LONG_BINPUT 2**31 made the C unpickler allocate and clear a 16 GB memo."""
    pkl = b"\x80\x02}r\x00\x00\x00\x80."  # EMPTY_DICT, LONG_BINPUT 2**31, STOP
    path = write_zip(tmp_path / "memo.pt", [Entry("archive/data.pkl", pkl), Entry("archive/version", b"3\n")])
    with pytest.raises(ValueError, match="no model weights"):
        load_model(path)
    assert read_torch_zip(path) == {}


def test_bytearray8_is_refused(tmp_path: Path) -> None:
    pkl = b"\x80\x05\x96" + (1 << 40).to_bytes(8, "little") + b"."  # BYTEARRAY8 of 1 TiB, no data
    path = write_zip(tmp_path / "ba8.pt", [Entry("archive/data.pkl", pkl), Entry("archive/version", b"3\n")])
    with pytest.raises(ValueError, match="BYTEARRAY8"):
        read_torch_zip(path)


def test_unsafe_global_still_wins(tmp_path: Path) -> None:
    torch.save({"model": nn.Module(), "x": shutil.rmtree}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="shutil.rmtree"):
        load_model(tmp_path / "evil.pt")
