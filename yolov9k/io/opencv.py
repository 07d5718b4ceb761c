"""Strings we hand to OpenCV: file paths and label text it takes without crashing the process.

OpenCV's Python bindings (checked with opencv-python 5.1) encode every ``str`` argument as UTF-8 in C++
and segfault on a lone surrogate. Python holds one in any file name that is not valid UTF-8 (bytes
``\\xff`` decode to ``'\\udcff'``, PEP 383) and in any label text built from such names, so a run
folder, a video or a class name can take the whole process down. Images never need this module
(``cv2.imdecode`` / ``cv2.imencode`` on bytes that Python reads and writes); videos and text do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["cv2_text", "cv2_path", "printable"]


def cv2_text(text: object) -> str:
    """``text`` as ASCII for ``cv2.putText`` / ``cv2.getTextSize``: every other character becomes "?".

    OpenCV's Hershey fonts draw ASCII only (it prints "?" for the rest itself); doing it here also
    removes the lone surrogates that crash it.
    """
    return "".join(c if " " <= c <= "~" else "?" for c in str(text))


def printable(text: object) -> str:
    """``text`` safe to print on a strict UTF-8 stream: undecodable file-name bytes become U+FFFD."""
    s = str(text)
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _safe(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@contextmanager
def cv2_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """A path string that OpenCV can open (``VideoCapture``, ``VideoWriter``) and that reaches ``path``.

    ``str(path)`` itself when it is valid UTF-8 and ends with ``suffix`` (OpenCV picks a video
    container from the file name). Otherwise a symbolic link ``media<suffix>`` to ``path`` in a fresh
    temporary folder, removed on exit; what is written through it lands in ``path``.

    Args:
        path: the file to read or write (it need not exist yet for writing).
        suffix: the extension OpenCV must see (".mp4"); None keeps ``path``'s own when that is safe.
    Raises:
        OSError: no link can be made (no writable temporary folder, or no symlinks on this system).
    """
    text = str(path)
    own = Path(text).suffix
    want = suffix if suffix is not None else (own if _safe(own) else "")
    if _safe(text) and text.endswith(want):
        yield text
        return
    folder = tempfile.mkdtemp(prefix="yolov9k-cv2-")
    try:
        link = os.path.join(folder, f"media{want}")
        os.symlink(os.path.abspath(path), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)
