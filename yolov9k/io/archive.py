"""Bounded, CRC-checked reading of ``torch.save`` zip archives.

A zip's central directory declares every entry's size and CRC-32. Before anything is decompressed
or unpickled, :func:`check_archive` refuses directories that promise more than the file can honestly
hold (a decompression bomb, overlapping entries, absurd sizes); :func:`read_entry` and
:func:`verify_crcs` read entries in bounded chunks and refuse any whose bytes do not match their CRC
(bit rot), naming the entry. Every refusal is a :class:`CheckpointError` (a ``ValueError``) with a
one-line message.
"""

from __future__ import annotations

import os
import struct
import zipfile
import zlib
from typing import IO

from yolov9k.errors import InputError

__all__ = [
    "CheckpointError",
    "MAX_ENTRIES",
    "MAX_ENTRY_BYTES",
    "MAX_PICKLE_BYTES",
    "EXPANSION_SLACK",
    "check_archive",
    "open_archive",
    "read_entry",
    "verify_crcs",
]

MAX_ENTRIES = 100_000  # one per tensor storage: a yolov9-e training checkpoint has a few thousand
MAX_ENTRY_BYTES = 1 << 30  # no YOLOv9 tensor storage comes near (the largest is ~40 MB in fp32)
# The pickle itself: unpickling costs ~2 s and ~90 MB per MiB of hostile pickle (tiny objects, on
# a busy 2-core machine; torch's weights-only unpickler takes twice as long). A yolov9-e pickled
# as a module tree with its EMA is ~1.1 MB; our yolov9-e checkpoint with EMA and optimizer ~0.8 MB.
MAX_PICKLE_BYTES = 4 << 20
# Entries may expand to at most the file's own size plus this: torch.save stores entries
# uncompressed, so only a re-zipped (deflated) file uses any of it.
EXPANSION_SLACK = 64 << 20
_CHUNK = 1 << 20


class CheckpointError(InputError):
    """The file is not a well-formed checkpoint (corrupt, truncated, oversized or malformed)."""


_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


def open_archive(path: str | os.PathLike, where: str) -> zipfile.ZipFile:
    """Open ``path`` as a zip whose directory passed :func:`check_archive`. The entries of the central
    directory are counted first, as they are parsed, up to ``MAX_ENTRIES`` (the end record's own count can
    under-state them, and ``zipfile`` parsing a directory of millions of entries costs seconds and GBs)."""
    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        count = _count_entries(f, MAX_ENTRIES + 1)
    if count is not None and count > MAX_ENTRIES:
        raise CheckpointError(f"{where}: archive lists {count} entries or more (the limit is {MAX_ENTRIES})")
    zf = zipfile.ZipFile(path)
    try:
        check_archive(zf, file_size, where)
    except BaseException:
        zf.close()
        raise
    return zf


_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")  # zipfile.structCentralDir: 46 bytes
_CENTRAL_MAGIC = b"PK\x01\x02"
_NAME_LENGTH = 12  # zipfile._CD_FILENAME_LENGTH; the extra field's and the comment's lengths follow


def _count_entries(f: IO[bytes], stop: int) -> int | None:
    """Entries of the central directory, counted header by header as ``zipfile`` parses them, but at
    most ``stop`` (reading ``stop`` headers at most). None when the end record cannot be found or the
    directory is malformed: ``zipfile`` then refuses the file with its own error."""
    end = getattr(zipfile, "_EndRecData", lambda _: None)(f)  # private: skip the count if it goes
    if end is None:
        return None
    size, offset = end[zipfile._ECD_SIZE], end[zipfile._ECD_OFFSET]
    start = end[zipfile._ECD_LOCATION] - size  # as zipfile: data before the archive is allowed
    if end[zipfile._ECD_SIGNATURE] == zipfile.stringEndArchive64:
        start -= zipfile.sizeEndCentDir64 + zipfile.sizeEndCentDir64Locator
    if start < 0 or offset < 0:
        return None
    f.seek(start)
    count = done = 0
    while done < size and count < stop:
        header = f.read(_CENTRAL_HEADER.size)
        if len(header) < _CENTRAL_HEADER.size or header[:4] != _CENTRAL_MAGIC:
            return None
        fields = _CENTRAL_HEADER.unpack(header)
        skip = sum(fields[_NAME_LENGTH : _NAME_LENGTH + 3])  # file name, extra field and comment lengths
        f.seek(skip, os.SEEK_CUR)
        done += _CENTRAL_HEADER.size + skip
        count += 1
    return count


def check_archive(zf: zipfile.ZipFile, file_size: int, where: str) -> None:
    """Refuse a directory that lists too many, duplicate, encrypted, oddly compressed or oversized
    entries, or whose entries together expand past ``file_size + EXPANSION_SLACK`` bytes."""
    infos = zf.infolist()
    if len(infos) > MAX_ENTRIES:
        raise CheckpointError(f"{where}: archive lists {len(infos)} entries (more than {MAX_ENTRIES})")
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        if name in seen:
            raise CheckpointError(f"{where}: archive lists the entry {name[:80]!r} twice")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where}: archive entry {name[:80]!r} is encrypted")
        if info.compress_type not in _METHODS:
            raise CheckpointError(
                f"{where}: archive entry {name[:80]!r} uses compression {info.compress_type}"
            )
        if info.file_size > MAX_ENTRY_BYTES:
            raise CheckpointError(
                f"{where}: archive entry {name[:80]!r} declares {info.file_size} bytes "
                f"(the limit is {MAX_ENTRY_BYTES})"
            )
        if name.endswith("/data.pkl") and info.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{where}: the pickle {name[:80]!r} has {info.file_size} bytes "
                f"(the limit is {MAX_PICKLE_BYTES})"
            )
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise CheckpointError(f"{where}: archive entry {name[:80]!r} has inconsistent sizes")
        total += info.file_size
    if total > file_size + EXPANSION_SLACK:
        raise CheckpointError(
            f"{where}: archive entries expand to {total} bytes from a {file_size}-byte file "
            "(a decompression bomb?): refusing to read it"
        )


def _copy_entry(src: IO[bytes], out: memoryview | None, size: int) -> int:
    """Read exactly ``size`` bytes from ``src`` (into ``out`` if given) and return their CRC-32."""
    crc, done = 0, 0
    while done < size:
        chunk = src.read(min(_CHUNK, size - done))
        if not chunk:
            raise CheckpointError(f"entry ends after {done} of its {size} bytes")
        crc = zlib.crc32(chunk, crc)
        if out is not None:
            out[done : done + len(chunk)] = chunk
        done += len(chunk)
    return crc


def _read_checked(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: memoryview | None, where: str) -> None:
    try:
        with zf.open(info) as src:
            crc = _copy_entry(src, out, info.file_size)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, NotImplementedError) as e:
        if isinstance(e, PermissionError):
            raise
        reason = str(e).splitlines()[0][:120] if str(e) else type(e).__name__
        raise CheckpointError(f"{where}: archive entry {info.filename[:80]!r} is corrupt: {reason}") from None
    if crc != info.CRC:
        raise CheckpointError(
            f"{where}: archive entry {info.filename[:80]!r} is corrupt (CRC-32 mismatch: bit rot or a "
            "damaged copy)"
        )


def read_entry(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str, limit: int = MAX_ENTRY_BYTES
) -> bytearray:
    """The bytes of one entry, CRC-checked; at most ``limit`` bytes are allocated, before reading."""
    if info.file_size > limit:
        raise CheckpointError(
            f"{where}: archive entry {info.filename[:80]!r} declares {info.file_size} bytes "
            f"(the limit for it is {limit})"
        )
    data = bytearray(info.file_size)
    _read_checked(zf, info, memoryview(data), where)
    return data


def verify_crcs(zf: zipfile.ZipFile, where: str) -> None:
    """Read every entry in bounded chunks and refuse the first whose CRC-32 does not match."""
    for info in zf.infolist():
        _read_checked(zf, info, None, where)
