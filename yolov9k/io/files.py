"""Output files: atomic writes with the usual permissions, stale temp files, and readable errors.

Every file yolov9k writes for the user goes through :func:`atomic_output`: the content is written to
``.<name>.<random>.tmp`` in the target folder, then renamed over the target, so a reader (or a resumed
run) sees the old file or the new one, never half of one. A process killed mid-write leaves such a temp
file behind; :func:`remove_stale_temp_files` deletes them. Paths blocked by a file where a folder is
needed (or the reverse) and a full disk give one-line ``OSError`` messages naming the path.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yolov9k.errors import IsAFolderError, NotAFolderError

__all__ = [
    "TEMP_SUFFIX",
    "file_mode",
    "atomic_output",
    "remove_stale_temp_files",
    "make_output_dir",
    "check_output_file",
    "disk_full_error",
]

TEMP_SUFFIX = ".tmp"
# ".last.pt.k2j_9x0a.tmp": our prefix "." + target name + "." + mkstemp's 8 random characters
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_SHORT_WRITE = ("unexpected pos", "file write failed", "no space left on device")


def file_mode() -> int:
    """The mode ``open()`` would give a new file: ``0o666`` minus the process umask."""
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask: from /proc on Linux (thread-safe), else by setting it and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _blocking_file(folder: Path) -> Path | None:
    """The first of ``folder`` and its parents that exists but is not a folder, if any."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def make_output_dir(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``mkdir -p folder``; a file in the way gives ``NotADirectoryError`` naming it (one line)."""
    folder = Path(folder)
    blocker = _blocking_file(folder)
    if blocker is not None:
        raise NotAFolderError(f"cannot create {what} {folder}: {blocker} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def check_output_file(file: str | os.PathLike, what: str = "output file") -> Path:
    """``file`` as a Path after checking it can be a file: not a folder, no file among its parents."""
    file = Path(file)
    if file.is_dir():
        raise IsAFolderError(f"{what} {file} is a folder; give a file name inside it")
    blocker = _blocking_file(file.parent)
    if blocker is not None:
        raise NotAFolderError(f"cannot write {what} {file}: {blocker} is a file, not a folder")
    return file


def disk_full_error(error: BaseException, path: str | os.PathLike) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming ``path`` when ``error`` is a full disk, else None.

    torch reports a short write as ``RuntimeError: [enforce fail at inline_container.cc:...] unexpected
    pos ...`` or ``file write failed``; Python as ``OSError(ENOSPC)``.
    """
    if not _is_disk_full(error):
        return None
    return OSError(errno.ENOSPC, f"no space left on device writing {path}{_free_space(Path(path).parent)}")


def _is_disk_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(error, RuntimeError | OSError) and any(s in str(error).lower() for s in _SHORT_WRITE)


def _free_space(folder: Path) -> str:
    try:
        return f" ({shutil.disk_usage(folder).free / 1e6:.1f} MB free there)"
    except OSError:
        return ""


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is fsynced, given :func:`file_mode` and
    renamed over ``path``. On failure it is removed, and a full disk raises ``OSError(ENOSPC)``.

    Example:
        >>> with atomic_output("weights/last.pt") as tmp:
        ...     torch.save(state, tmp)
    """
    path = check_output_file(path)
    make_output_dir(path.parent)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 files whatever the umask
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(e, path)
        if full is not None:
            raise full from e
        raise


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files of :func:`atomic_output` left in ``folder`` by killed writers."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        if _TEMP_NAME.match(p.name) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
