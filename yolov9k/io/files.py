"""Output files: atomic writes with the usual permissions, stale temp files, and readable errors.

Every file yolov9k writes for the user goes through :func:`atomic_output`: the content is written to
``.<name>.<host>-<pid>-<random>.tmp`` in the target folder, fsynced, renamed over the target and the
folder fsynced, so a reader (or a resumed run) sees the old file or the new one, never half of one, and
the rename survives a power cut. A process killed mid-write leaves such a temp file behind;
:func:`remove_stale_temp_files` deletes the ones whose writer is gone (its pid is not running on this
host) or that are older than :data:`STALE_TEMP_AGE_S`, and :func:`atomic_output` runs it once per
folder per process. Paths blocked by a file where a folder is needed (or the reverse), a full disk and
an output that is one of the inputs give one-line ``OSError`` / ``ValueError`` messages naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from yolov9k.errors import ConfigError, IsAFolderError, NotAFolderError

__all__ = [
    "TEMP_SUFFIX",
    "STALE_TEMP_AGE_S",
    "file_mode",
    "atomic_output",
    "atomic_write_text",
    "save_figure",
    "temp_prefix",
    "is_stale_temp",
    "remove_stale_temp_files",
    "make_output_dir",
    "check_output_file",
    "check_not_an_input",
    "disk_full_error",
    "fsync_dir",
]

TEMP_SUFFIX = ".tmp"
STALE_TEMP_AGE_S = 24 * 3600  # a temp file this old is stale whoever wrote it (pid reuse, other hosts)
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]
# ".last.pt.1a2b3c-4242-k2j_9x0a.tmp": "." + target name + "." + host tag + "-" + pid + "-" + mkstemp's 8
# random characters + ".tmp". Older versions wrote ".last.pt.k2j_9x0a.tmp" (no owner) and demo folders
# ".demo.tmp-k2j_9x0a": those are only matched where the caller says nothing else writes (``legacy``).
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d{1,10})-[a-z0-9_]{8}\.tmp$")
_LEGACY_NAME = re.compile(r"^\.(?P<target>.+)\.(?:[a-z0-9_]{8}\.tmp|tmp-[a-z0-9_]{8})$")
_SHORT_WRITE = ("unexpected pos", "file write failed", "no space left on device")
_cleaned: set[str] = set()  # folders whose stale temp files this process removed already
_cleaned_lock = threading.Lock()


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


def check_not_an_input(
    output: str | os.PathLike, inputs: tuple[str | os.PathLike | None, ...], what: str = "output"
) -> Path:
    """``output`` as a Path after checking it is none of ``inputs`` (the same file by any path: a
    symlink, a hard link or another spelling), so that writing it cannot destroy what was read.

    Raises:
        ConfigError: ``output`` names one of the inputs (one line with both paths).
    """
    output = Path(output)
    for src in inputs:
        if src is None:
            continue
        try:
            same = os.path.samefile(output, src)
        except (OSError, ValueError):  # either does not exist (yet): not the same file
            same = False
        if same:
            raise ConfigError(f"{what} {output} is the source file {src}: write it elsewhere (it is kept)")
    return output


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


def temp_prefix(name: str) -> str:
    """The name start of this process's temp files (or folders) for the target ``name``:
    ``.<name>.<host>-<pid>-`` (``tempfile.mkstemp``/``mkdtemp`` add 8 random characters and the
    :data:`TEMP_SUFFIX` given to them), so that :func:`is_stale_temp` can tell when its writer is gone."""
    return f".{name}.{_HOST}-{os.getpid()}-"


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is fsynced, given :func:`file_mode`, renamed
    over ``path`` and the folder fsynced (the rename is durable). On failure it is removed, and a full
    disk raises ``OSError(ENOSPC)`` naming ``path``. The first write into a folder in this process
    removes the stale temp files that killed writers left there (:func:`remove_stale_temp_files`).

    Example:
        >>> with atomic_output("weights/last.pt") as tmp:
        ...     torch.save(state, tmp)
    """
    path = check_output_file(path)
    make_output_dir(path.parent)
    _remove_stale_once(path.parent)
    fd, name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600 files whatever the umask
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = disk_full_error(e, path)
        if full is not None:
            raise full from e
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_output`; returns ``path``."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_figure(fig: object, path: str | os.PathLike, dpi: int) -> Path:
    """A matplotlib figure saved to ``path`` through :func:`atomic_output` (format from its suffix)."""
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")  # type: ignore[attr-defined]
    return path


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened or synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its files
    return True


def is_stale_temp(path: str | os.PathLike, legacy: bool = False, now: float | None = None) -> bool:
    """Whether ``path`` is a temp file or folder of ours that no live writer will finish.

    Only our own names count: :func:`temp_prefix` + 8 random characters + ``.tmp``; such an entry is
    stale when its writer was a process of this host that is not running any more, or when it is older
    than :data:`STALE_TEMP_AGE_S` (pids are reused; a writer on another host cannot be asked). With
    ``legacy`` (for folders that nothing else writes to, such as a locked run folder) the ownerless names
    of older versions, ``.<name>.<random>.tmp`` and ``.<name>.tmp-<random>``, are stale too: no current
    writer makes them.
    """
    p = Path(path)
    m = _TEMP_NAME.match(p.name)
    old_name = m is None and legacy and _LEGACY_NAME.match(p.name) is not None
    if m is None and not old_name:
        return False
    try:
        st = p.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode):
        return False  # never ours
    if old_name or (time.time() if now is None else now) - st.st_mtime > STALE_TEMP_AGE_S:
        return True
    return m["host"] == _HOST and not _pid_running(int(m["pid"]))


def remove_stale_temp_files(
    folder: str | os.PathLike, legacy: bool = False, target: str | None = None
) -> list[Path]:
    """Delete the temp files and folders in ``folder`` that :func:`is_stale_temp` calls stale (those
    that killed writers left); ``target``: only those of that file name. Returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        if target is not None and not p.name.startswith(f".{target}."):
            continue
        if not is_stale_temp(p, legacy):
            continue
        try:
            if stat.S_ISDIR(p.lstat().st_mode):
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _remove_stale_once(folder: Path) -> None:
    key = str(folder.resolve())
    with _cleaned_lock:
        if key in _cleaned:
            return
        _cleaned.add(key)
    remove_stale_temp_files(folder)
