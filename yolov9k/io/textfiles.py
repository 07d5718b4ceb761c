"""Reading the small text files users hand us (dataset YAMLs, image lists, COCO json): bounded in size
before reading, YAML bounded in what its aliases expand to, and errors that name the file in one line.

Only regular files are read (a FIFO would block forever, ``/dev/zero`` never ends): the file is opened
without blocking and checked with ``fstat`` before a byte is read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml

from yolov9k.errors import InputError, InputNotFoundError, IsAFolderError
from yolov9k.io.limits import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

__all__ = ["read_bytes_file", "read_text_file", "load_yaml_file", "load_yaml_text", "one_line"]

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace runs (newlines included) made single spaces, at most ``limit`` chars."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_bytes_file(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, refused before reading when larger than ``max_bytes``.

    Raises:
        InputNotFoundError: no such file. IsAFolderError: a folder. PermissionError: not readable.
        InputError: not a regular file (FIFO, device, socket) or larger than ``max_bytes``.
        Each names ``what`` and the path.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InputNotFoundError(f"{what} not found: {p}") from None
    except IsADirectoryError:
        raise IsAFolderError(f"{what} {p} is a folder, not a file") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsAFolderError(f"{what} {p} is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {p} is not a regular file (a FIFO, device or socket): not read")
        if st.st_size > max_bytes:
            raise InputError(f"{what} {p} has {st.st_size} bytes (the limit is {max_bytes}): not read")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(max_bytes + 1)  # a file that grew meanwhile is still cut at the bound
    if len(data) > max_bytes:
        raise InputError(f"{what} {p} has more than {max_bytes} bytes (the limit): not read")
    return data


def read_text_file(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    """:func:`read_bytes_file` decoded as UTF-8 (a leading byte-order mark is dropped).

    Raises:
        ValueError: also when the file is not UTF-8 text (the offset of the first bad byte is named).
    """
    data = read_bytes_file(path, what, max_bytes)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = data[e.start : e.start + 1].hex()
        raise InputError(f"{what} {path} is not UTF-8 text (byte 0x{bad} at offset {e.start})") from None


def load_yaml_file(path: str | os.PathLike, what: str, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """The YAML document in ``path`` (safe loader), bounded: at most ``max_bytes`` bytes, and at most
    :data:`MAX_YAML_NODES` nodes and :data:`MAX_YAML_DEPTH` levels once every alias is followed.

    Raises:
        ValueError: not UTF-8, invalid YAML, or over a bound (one line naming the file). The
        ``read_bytes_file`` errors for the path.
    """
    return load_yaml_text(read_text_file(path, what, max_bytes), f"{what} {path}")


def load_yaml_text(text: str, where: str) -> Any:
    """The YAML document in ``text`` with the bounds of :func:`load_yaml_file`; ``where`` names it."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise InputError(f"invalid YAML in {where}: {one_line(str(e))}") from None
    except RecursionError:
        raise InputError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a node graph that expands (every alias followed) to more than MAX_YAML_NODES nodes or
    MAX_YAML_DEPTH levels, or that contains itself; the cost is linear in the graph as written."""
    size: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, finished = stack.pop()
        key = id(node)
        if finished:
            visiting.discard(key)
            total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_YAML_NODES:
                raise InputError(
                    f"{where}: the YAML expands to more than {MAX_YAML_NODES} values (aliases followed): "
                    "refusing it"
                )
            size[key] = total
            continue
        if key in size:
            continue
        if key in visiting:
            raise InputError(f"{where}: a YAML alias contains itself (a recursive structure): refusing it")
        if depth > MAX_YAML_DEPTH:
            raise InputError(f"{where}: YAML nested deeper than {MAX_YAML_DEPTH} levels: refusing it")
        visiting.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in _children(node) if id(c) not in size)
