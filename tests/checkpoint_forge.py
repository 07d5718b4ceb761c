"""Test helpers that forge checkpoint files: zip archives written byte by byte (so entries can lie
about their sizes and CRCs, or be deflated), and pickles of tensors whose storages are named, not
held, in memory."""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
_DOS_DATE = 0x21  # 1980-01-01


@dataclass
class Entry:
    """One archive entry: ``data`` as stored (already compressed for DEFLATED); the declared
    uncompressed ``size`` and ``crc`` default to those of ``data``."""

    name: str
    data: bytes
    method: int = STORED
    size: int | None = None
    crc: int | None = None


def read_entries(path: Path) -> list[Entry]:
    """The entries of a real archive, uncompressed."""
    with zipfile.ZipFile(path) as zf:
        return [Entry(info.filename, zf.read(info)) for info in zf.infolist()]


def write_zip(path: Path, entries: list[Entry]) -> Path:
    """Write a plain (non-zip64) archive of ``entries`` exactly as declared."""
    out, central = io.BytesIO(), io.BytesIO()
    for e in entries:
        name = e.name.encode()
        size = len(e.data) if e.size is None else e.size
        crc = zlib.crc32(e.data) if e.crc is None else e.crc
        offset = out.tell()
        out.write(
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                20,
                0,
                e.method,
                0,
                _DOS_DATE,
                crc,
                len(e.data),
                size,
                len(name),
                0,
            )
        )
        out.write(name + e.data)
        central.write(
            struct.pack(
                "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, e.method, 0, _DOS_DATE, crc, len(e.data), size,
                len(name), 0, 0, 0, 0, 0, offset,
            )
            + name
        )  # fmt: skip
    start = out.tell()
    out.write(central.getvalue())
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), central.tell(), start, 0)
    )
    path.write_bytes(out.getvalue())
    return path


def deflated_zeros(n_mib: int) -> bytes:
    """A raw deflate stream of ``n_mib`` MiB of zero bytes, made without compressing them all:
    a fully flushed block of 1 MiB, repeated, then an empty final block."""
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = block.compress(bytes(1 << 20)) + block.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -15)
    return chunk * n_mib + end.flush()


class StorageRef:
    """Pickled as torch.save pickles a float32 storage: a persistent id naming ``data/<key>``."""

    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class TensorRef:
    """Pickled as torch.save pickles a flat float32 tensor over :class:`StorageRef` ``key``."""

    def __init__(self, key: str, numel: int) -> None:
        self.storage = StorageRef(key, numel)

    def __reduce__(self):
        n = self.storage.numel
        return (
            torch._utils._rebuild_tensor_v2,
            (self.storage, 0, (n,), (1,), False, collections.OrderedDict()),
        )


class _TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, StorageRef):
            return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
        return None


def torch_pickle(obj) -> bytes:
    """``obj`` pickled as ``torch.save`` would (protocol 2), with TensorRefs as storage records."""
    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def torch_archive(path: Path, obj, storages: dict[str, Entry] | None = None) -> Path:
    """A torch.save-style archive: ``archive/data.pkl`` of ``obj`` plus the given storage entries
    (keyed by storage key; their names are set here)."""
    entries = [
        Entry("archive/data.pkl", torch_pickle(obj)),
        Entry("archive/byteorder", b"little"),
        Entry("archive/version", b"3\n"),
    ]
    for key, entry in (storages or {}).items():
        entry.name = f"archive/data/{key}"
        entries.append(entry)
    return write_zip(path, entries)
