"""Options of the user-facing verbs: one table per verb (name, type, help, range or choices).

Each verb's module holds its table (``yolov9k.api.val.OPTIONS``, ...; ``DEMO_DATA`` here, for the
data layer's generator). The default of an option is the default of the same-named parameter of the
verb's function, read from its signature, so the Python API, the command line and its ``--help``
cannot drift apart. ``yolov9k.cli`` builds every verb's parser from the tables, and the functions
check their arguments against them with :func:`check_options`.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Option",
    "check_options",
    "defaults_of",
    "parse_bool",
    "optional_str",
    "DEMO_DATA",
    "MODEL",
    "DEVICE",
    "HALF",
    "RUN_NAME",
    "CONF",
    "IOU",
    "MAX_DET",
    "POSITIVE",
    "UNIT",
]

POSITIVE = (1, None)
UNIT = (0.0, 1.0)


def parse_bool(text: str) -> bool:
    """A command-line boolean: 1/true/yes/on/y or 0/false/no/off/n (any case)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on", "y"):
        return True
    if value in ("0", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def optional_str(text: str) -> str | None:
    """A command-line string where none / null / an empty value mean None."""
    return None if text.strip().lower() in ("none", "null", "") else text


@dataclass(frozen=True)
class Option:
    """One option of a verb.

    Attributes:
        name: the parameter name (``--name-with-dashes`` on the command line).
        help: one line for ``--help``.
        type: parses one command-line value (int, float, str, :func:`parse_bool`, :func:`optional_str`).
        range: (low, high) inclusive bounds of a number, None for no bound; checked for API calls too.
        choices: the allowed values. nargs: argparse ``nargs`` ("+" for lists).
        required: the option has no default (a required parameter of the function).
        default: overrides the signature's default (for options the function does not take).
    """

    name: str
    help: str
    type: Callable[[str], Any] = str
    range: tuple[float | None, float | None] | None = None
    choices: tuple[Any, ...] | None = None
    nargs: str | None = None
    required: bool = False
    default: Any = inspect.Parameter.empty


MODEL = Option("model", "checkpoint file (official or yolov9k) or zoo name", required=True)
DEVICE = Option("device", "cpu, cuda, cuda:N or N (default: CUDA when available)", optional_str)
HALF = Option("half", "fp16 inference (CUDA only)", parse_bool)
RUN_NAME = Option("name", "run name (default exp, numbered when taken)", optional_str)
CONF = Option("conf", "confidence threshold", float, UNIT)
IOU = Option("iou", "NMS IoU threshold", float, UNIT)
MAX_DET = Option("max_det", "detections kept per image", int, POSITIVE)


DEMO_DATA: tuple[Option, ...] = (
    Option("root", "output folder (default: $YOLOV9K_HOME/demo or ~/.cache/yolov9k/demo)", default=None),
    Option("num_train", "training images", int),
    Option("num_val", "validation images", int),
    Option("imgsz", "image size (long side) in pixels", int),
    Option("seed", "random seed", int),
    Option("overwrite", "replace another data set in root", parse_bool),
)


def defaults_of(fn: Callable[..., Any], options: tuple[Option, ...]) -> dict[str, Any]:
    """{name: default} of the options that are not required: the table's own default, else the
    default of ``fn``'s parameter of that name."""
    params = inspect.signature(fn).parameters
    return {
        o.name: o.default if o.default is not inspect.Parameter.empty else params[o.name].default
        for o in options
        if not o.required
    }


def _range_error(o: Option, value: Any) -> str | None:
    """Why ``value`` is out of ``o``'s type or range, or None when it fits."""
    low, high = o.range  # type: ignore[misc]
    if o.type is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return "a positive int" if (low, high) == POSITIVE else "an int"
    elif isinstance(value, bool) or not isinstance(value, int | float):
        return "a number"
    if (low, high) == POSITIVE and o.type is int:
        return None if value >= 1 else "a positive int"
    if low is not None and high is not None:
        return None if low <= value <= high else f"in [{low:g}, {high:g}]"
    if low is not None:
        return None if value >= low else f">= {low:g}"
    return None if high is None or value <= high else f"<= {high:g}"


def check_options(options: tuple[Option, ...], values: Mapping[str, Any]) -> None:
    """Check the ranges and choices of ``options`` for the given ``values`` (others are ignored).

    Raises:
        ValueError: ``"<name> must be a positive int, got <value>"``, ``"... must be in [0, 1] ..."``,
        ``"... must be one of (...) ..."``.
    """
    for o in options:
        if o.name not in values:
            continue
        value = values[o.name]
        if o.range is not None and o.nargs is None:
            why = _range_error(o, value)
            if why is not None:
                raise ValueError(f"{o.name} must be {why}, got {value!r}")
        if o.choices is not None and o.nargs is None and value not in o.choices:
            raise ValueError(f"{o.name} must be one of {o.choices}, got {value!r}")
