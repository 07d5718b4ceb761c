"""Where a run happens: the torch device from what users type, the memory format that suits it, the
run's output folder, the lock that keeps two runs out of one folder, and a data loader worker's error
told as the one line it is.

Below both ``yolov9k.engine`` (training) and ``yolov9k.api`` (the user-facing verbs), which use them.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import torch

from yolov9k.errors import ConfigError, InputError, InputNotFoundError, Yolov9kError
from yolov9k.io.files import make_output_dir

__all__ = [
    "select_device",
    "use_channels_last",
    "run_dir",
    "default_project",
    "RunFolderLock",
    "RunFolderBusy",
    "one_line_worker_error",
]


def select_device(device: str | int | torch.device | None = None) -> torch.device:
    """A ``torch.device`` from what users type.

    Args:
        device: None or "" (CUDA device 0 when available, else CPU), "cpu", "cuda", "cuda:1",
            "0", "1" or an int (CUDA device index), "mps".
    Raises:
        ValueError: an unknown spelling, or a CUDA device that this machine does not have.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    elif device is None or (isinstance(device, str) and not device.strip()):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    elif isinstance(device, int):
        spec = f"cuda:{device}"
    else:
        spec = str(device).strip().lower()
        if re.fullmatch(r"\d+", spec):
            spec = f"cuda:{spec}"
        elif re.fullmatch(r"\d+(,\d+)+", spec):
            raise ConfigError(
                f"device={device!r}: one device per process here; use torchrun for several GPUs"
            )
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'N' or 'mps'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} asks for CUDA, but torch sees no CUDA device; use 'cpu'")
        index = dev.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) here")
        dev = torch.device("cuda", index)
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError("device='mps' is not available on this machine")
    return dev


def use_channels_last(setting: bool | str, device: torch.device) -> bool:
    """Whether a training run on ``device`` keeps its model and inputs in channels_last (NHWC).

    ``setting`` True or False is the answer. ``"auto"`` chooses NHWC on a CPU whose ATen kernels are
    AVX-512 (``torch.backends.cpu.get_cpu_capability()``): there oneDNN's NHWC convolutions made the
    train step 1.18-1.28x faster than NCHW, while on an AVX2-only CPU they were slower (596 vs 519 ms
    of oneDNN time per step); benchmarks/RESULTS.md, issue 14. Elsewhere (CUDA included, not measured
    yet) NCHW.
    """
    if setting != "auto":
        return bool(setting)
    return device.type == "cpu" and torch.backends.cpu.get_cpu_capability() == "AVX512"


def run_dir(
    project: str | os.PathLike | None, task: str, name: str | None = None, exist_ok: bool = False
) -> Path:
    """A new output folder ``project/name`` (``runs/<task>/name`` when ``project`` is None, as the
    official code and ultralytics); ``name2``, ``name3``... when it exists already.

    Args:
        project: root of the runs; None = ``runs/<task>``. task: "train", "val", "predict", ...
        name: run name (default "exp"). exist_ok: reuse ``project/name`` when it exists.
    Raises:
        NotADirectoryError: a file is in the way (one line naming it).
    """
    base = default_project(task) if project is None else Path(project).expanduser()
    stem = name or "exp"
    make_output_dir(base, "project folder")
    if exist_ok:
        return make_output_dir(base / stem, "run folder")
    n = 1
    while True:  # mkdir without exist_ok claims the folder atomically, even against a parallel run
        out = base / (stem if n == 1 else f"{stem}{n}")
        try:
            out.mkdir()
            return out
        except FileExistsError:
            n += 1


def default_project(task: str) -> Path:
    """Where runs of ``task`` go when no project is given: ``runs/<task>``."""
    return Path("runs") / task


class RunFolderBusy(Yolov9kError, BlockingIOError):
    """Another process holds the run folder (a second ``train --exist-ok`` or ``--resume`` of it)."""


class RunFolderLock:
    """An exclusive lock on a run folder for the life of a run: ``<folder>/.lock``, locked with
    ``fcntl.flock`` so that the kernel releases it when the process ends, however it ends (a kill leaves
    no stale lock). Where ``fcntl`` is missing (Windows) the lock is not taken.

    Example:
        >>> lock = RunFolderLock(save_dir)  # RunFolderBusy if another run holds it
        >>> ...
        >>> lock.release()
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / self.NAME
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusy(
                f"run folder {Path(folder)} is in use by another run ({holder}); wait for it to end, or "
                "give another --name (--exist-ok reuses a folder only when no run is using it)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (the lock file stays: removing it could let two later runs lock different files)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


_WORKER_ERROR = re.compile(r"^Caught (\w+) in DataLoader worker process (\d+)\.")
_USER_ERRORS_IN_WORKERS = frozenset(
    {"ImageReadError", "InputError", "InputNotFoundError", "FileNotFoundError", "PermissionError"}
)


def one_line_worker_error(error: BaseException) -> BaseException:
    """A user's error raised in a DataLoader worker as the one line it is: torch re-raises a worker's
    exception in the main process as a ``RuntimeError`` whose message is the worker's whole traceback
    (20+ lines). A worker's ``ImageReadError``, ``InputError`` or missing / unreadable file becomes an
    :class:`~yolov9k.errors.InputError` (``InputNotFoundError`` for a missing file) with the worker's last
    line; anything else (a bug) is returned as it is, traceback and all.
    """
    text = str(error)
    m = _WORKER_ERROR.match(text)
    if not isinstance(error, RuntimeError) or m is None or m[1] not in _USER_ERRORS_IN_WORKERS:
        return error
    last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), m[1])
    detail = last.partition(": ")[2] or last  # "yolov9k.data.images.ImageReadError: x.jpg: missing"
    kind = InputNotFoundError if m[1] in ("FileNotFoundError", "InputNotFoundError") else InputError
    return kind(f"{detail} ({m[1]} in data loader worker {m[2]})")
