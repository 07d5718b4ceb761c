"""The errors that mean "bad input", as opposed to a bug in yolov9k.

Every error a user can cause - an option, a file, a data set, a checkpoint, a device that is not
there - is a :class:`Yolov9kError` whose message says in one line what is wrong and where. The
command line prints such an error as that one line; any other exception is a bug and keeps its
traceback (``yolov9k.cli``). Each class also derives from the built-in error a Python caller would
expect (``ValueError``, ``FileNotFoundError``, ...), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

import errno as _errno
from typing import Any

__all__ = [
    "Yolov9kError",
    "ConfigError",
    "OptionError",
    "InputError",
    "InputNotFoundError",
    "OutputError",
    "NotAFolderError",
    "IsAFolderError",
    "PathExistsError",
    "TrainingDivergedError",
    "is_user_error",
]


class Yolov9kError(Exception):
    """Bad input: the message names what is wrong and where, in one line."""


class ConfigError(Yolov9kError, ValueError):
    """Options that cannot work together, or with this machine (a run that cannot resume, fp16 on CPU)."""


class OptionError(ConfigError):
    """One option that does not exist, has a value of the wrong type or range, or has no effect.

    Attributes:
        option: the option's name (``max_det``); ``value``: what was given; ``reason``: why it is
            refused. ``cli``: spell the option as a command-line flag (``--max-det 1e9``).
    """

    def __init__(self, option: str, value: Any, reason: str, cli: bool = False) -> None:
        self.option, self.value, self.reason, self.cli = option, value, reason, cli
        super().__init__(option, value, reason, cli)

    @classmethod
    def unknown(cls, option: str, value: Any, what: str, hint: str = "", cli: bool = False) -> OptionError:
        """``unknown <what> 'lr'; did you mean 'lr0'?`` (``what``: "option", "training option", ...)."""
        error = cls(option, value, f"unknown {what}{hint}", cli)
        error.unknown_what, error.hint = what, hint
        return error

    def __str__(self) -> str:
        what = getattr(self, "unknown_what", None)
        if what is not None:
            name = "--" + self.option.replace("_", "-") if self.cli else repr(self.option)
            return f"unknown {what} {name}{self.hint}"
        if self.cli:
            flag = "--" + self.option.replace("_", "-")
            given = f"{flag} {self.value}" if self.value is not None else flag
        else:
            given = f"{self.option}={self.value!r}"
        return f"{given}: {self.reason}"


class InputError(Yolov9kError, ValueError):
    """A file or data that is not what it should be (a data set YAML, a label file, a model config)."""


class InputNotFoundError(Yolov9kError, FileNotFoundError):
    """A file or folder the user named is not there (the message names it)."""


class NotAFolderError(Yolov9kError, NotADirectoryError):
    """A file where a folder must be (an output folder, or a folder above an output file)."""


class IsAFolderError(Yolov9kError, IsADirectoryError):
    """A folder where a file must be (an output file)."""


class PathExistsError(Yolov9kError, FileExistsError):
    """A path that holds something else and must not be overwritten without being asked to."""


class OutputError(Yolov9kError, OSError):
    """An output that cannot be written (the message names it)."""


class TrainingDivergedError(Yolov9kError, FloatingPointError):
    """Training stopped: too many steps had non-finite losses or gradients (``max_nan_skips``)."""


# errno values of an OSError that describe the user's files or machine rather than a bug: the
# message (with the path the OS names) is all a user needs.
USER_ERRNOS = frozenset(
    {
        _errno.ENOENT, _errno.EACCES, _errno.EPERM, _errno.ENOSPC, _errno.EROFS, _errno.EISDIR,
        _errno.ENOTDIR, _errno.EEXIST, _errno.ENAMETOOLONG, _errno.ELOOP, _errno.EDQUOT,
        _errno.ENOTEMPTY, _errno.EMFILE, _errno.ENFILE, _errno.EIO,
    }
)  # fmt: skip


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the user's to fix (print one line) rather than a bug (print the traceback).

    A :class:`Yolov9kError`, an ``OSError`` from the operating system about a file or the disk (no such
    file, no permission, disk full, ...; see ``USER_ERRNOS``), or torch's ``OutOfMemoryError`` (the
    device is too small for the batch or image size asked for).
    """
    if isinstance(exc, Yolov9kError):
        return True
    if any(c.__name__ == "OutOfMemoryError" and c.__module__.startswith("torch") for c in type(exc).__mro__):
        return True
    return isinstance(exc, OSError) and exc.errno in USER_ERRNOS
