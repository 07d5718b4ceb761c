"""The option schema: one :class:`Option` per option of every command, typed, with its default,
range or choices and help; and the one parser and checker they all go through.

A value comes in one of two ways, and both end in :meth:`Option.check`:

* as **text** (the command line, a hyp file, ``key=value`` strings): :meth:`Option.from_text` reads it
  with one decimal parser for every command (``0640`` is 640, ``010`` is 10, ``1e-3`` and ``1E3``
  work, ``6:40``, ``0x10`` and ``1_000`` are errors), ``true|false|yes|no|on|off|1|0`` for booleans
  and ``none|null`` (or nothing) for an option that may be None;
* as a **Python value** (the API): checked strictly against the kind (an int option takes an int, not
  ``3.0`` nor ``True``) and the range.

Every refusal is an :class:`~yolov9k.errors.OptionError` that names the option, says what was
expected and is raised before any work starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import operator
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from yolov9k.errors import OptionError

__all__ = [
    "REQUIRED",
    "Option",
    "Range",
    "check_options",
    "defaults",
    "parse_decimal",
    "parse_texts",
    "inactive_options",
    "suggest",
]

KINDS = ("int", "float", "bool", "str", "path", "choice")
TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", "n"})
NONE_WORDS = frozenset({"none", "null", ""})
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()  # the default of an option that must be given


def parse_decimal(text: str) -> Decimal | None:
    """``text`` as a decimal number (sign, digits, point, exponent; leading zeros allowed), else None.

    Not numbers here: ``6:40`` (YAML 1.1's base 60), ``0x10``, ``0o17``, ``1_000``, ``inf``, ``nan``.
    """
    text = text.strip()
    return Decimal(text) if _DECIMAL.fullmatch(text) else None


@dataclass(frozen=True)
class Range:
    """Bounds of a number, written as in mathematics: ``[0, 1]``, ``(0, inf)``, ``[1, 8192]``."""

    low: float
    high: float
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, spec: str) -> Range:
        m = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*", spec)
        if m is None:
            raise ValueError(f"bad range {spec!r}: expected e.g. '[0, 1]' or '(0, inf)'")
        low, high = float(m.group(2)), float(m.group(3))
        return cls(low, high, m.group(1) == "(", m.group(4) == ")")

    def __contains__(self, x: float) -> bool:
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        def num(v: float) -> str:
            if math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:g}"

        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"{left}{num(self.low)}, {num(self.high)}{right}"


@dataclass(frozen=True)
class Option:
    """One option of a command.

    Attributes:
        name: the parameter name (``--name-with-dashes`` on the command line).
        kind: ``int`` | ``float`` | ``bool`` | ``str`` | ``path`` | ``choice``.
        default: the value when the option is not given (:data:`REQUIRED`: it must be given); the
            parameter of the command's Python function has the same default (a test checks it).
        help: one line for ``--help`` and ``docs/options.md``.
        range: bounds of a number (``"[0, 1]"``, ``"(0, inf)"``; see :class:`Range`).
        choices: the values of a ``choice`` option (strings, and True/False where those are allowed).
        aliases: ``(given, meaning)`` pairs accepted besides the choices (``amp=True`` is ``"auto"``).
        nullable: None is a value (``none`` / ``null`` / nothing on the command line).
        count: several values, ``(min, max)`` of them (max None: no limit); one token each on the
            command line; from Python a list or tuple (or one value where ``min`` is 1).
        mapping: from Python, a dict is accepted too (a data set or hyp given inline).
        bools: a ``path`` option that also takes True / False (``resume``).
        group: heading in ``--help`` and the docs (``"hyperparameters"``).
        no_effect: why the option does nothing in YOLOv9: it is refused from the command line and the
            API, and ignored with one warning when an official hyp file holds it.
        only_with: ``(option, value)``: the option acts only when that other option has that value;
            the command line warns when it is given without it.
        expect: what a valid value is, in error messages, where the kind says too little.
        hidden: kept out of ``--help`` (the no-effect options).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    help: str = ""
    range: str | None = None
    choices: tuple[Any, ...] = ()
    aliases: tuple[tuple[Any, Any], ...] = ()
    nullable: bool = False
    count: tuple[int, int | None] | None = None
    mapping: bool = False
    bools: bool = False
    group: str = ""
    no_effect: str = ""
    only_with: tuple[str, Any] | None = None
    expect: str = ""
    bounds: Range | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"option {self.name}: choices go with kind 'choice' (and only there)")
        if self.range is not None:
            if self.kind not in ("int", "float"):
                raise ValueError(f"option {self.name}: a range needs kind int or float")
            object.__setattr__(self, "bounds", Range.parse(self.range))
        elif self.kind in ("int", "float") and not self.no_effect:
            raise ValueError(f"option {self.name}: a number needs a range")

    def but(self, **changes: Any) -> Option:
        """A copy with ``changes`` (another default or help for the same rule in another command)."""
        return dataclasses.replace(self, **changes)

    # ---- description ---------------------------------------------------------------------------
    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def flag(self) -> bool:
        """The command line may give it alone (``--half`` = ``--half true``)."""
        return self.kind == "bool" or (self.kind == "choice" and True in self.choices) or self.bools

    @property
    def hidden(self) -> bool:
        return bool(self.no_effect)

    @property
    def cli_name(self) -> str:
        return "--" + self.name.replace("_", "-")

    def type_text(self) -> str:
        """The kind as ``--help`` and the docs show it: ``int``, ``path | bool``, ``float x 1-2``, ..."""
        if self.kind == "choice":
            text = "choice"
        else:
            text = {"str": "text"}.get(self.kind, self.kind)
            if self.bools:
                text += " | bool"
            if self.mapping:
                text += " | dict (Python)"
        if self.count is not None:
            low, high = self.count
            text += f" x {low}" + ("+" if high is None else "" if high == low else f"-{high}")
        if self.nullable:
            text += " | none"
        return text

    def expected(self) -> str:
        """What a valid value is, for error messages: ``an integer in [1, 8192]``, ``true or false``, ..."""
        if self.expect:
            text = self.expect
        elif self.kind == "int":
            text = f"an integer in {self.bounds}"
        elif self.kind == "float":
            text = f"a number in {self.bounds}"
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "choice":
            text = f"one of {tuple(self.choices)}"
        elif self.kind == "path":
            text = (
                "a path" + (", True or False" if self.bools else "") + (" or a dict" if self.mapping else "")
            )
        else:
            text = "text"
        if self.count is not None:
            low, high = self.count
            many = f"{low} or more" if high is None else f"{low}" if high == low else f"{low} to {high}"
            text = f"{many} values, each {text}"
        return text + (" (or None)" if self.nullable else "")

    # ---- values ----------------------------------------------------------------------------------
    def error(self, value: Any, reason: str | None = None, cli: bool = False) -> OptionError:
        return OptionError(self.name, value, reason or f"expected {self.expected()}", cli=cli)

    def refuse_if_no_effect(self, value: Any, cli: bool = False) -> None:
        if self.no_effect:
            raise self.error(value, f"has no effect in YOLOv9 ({self.no_effect}); remove it", cli)

    def from_text(self, text: str | list[str], cli: bool = True) -> Any:
        """A command-line (or file) value: ``text`` (a list of tokens for a ``count`` option) -> value."""
        self.refuse_if_no_effect(text if isinstance(text, str) else " ".join(text), cli)
        shown = text if isinstance(text, str) else " ".join(text)
        if self.count is not None:
            tokens = [text] if isinstance(text, str) else list(text)
            if self.nullable and len(tokens) == 1 and tokens[0].strip().lower() in NONE_WORDS:
                return None
            values = [self._scalar_from_text(t, shown, cli) for t in tokens]
            return self.check(values, cli=cli, shown=shown)
        if isinstance(text, list):
            raise self.error(shown, "takes one value", cli)
        if self.nullable and text.strip().lower() in NONE_WORDS:
            return None
        return self.check(self._scalar_from_text(text, shown, cli), cli=cli, shown=shown)

    def _scalar_from_text(self, text: str, shown: str, cli: bool) -> Any:
        word = text.strip().lower()
        if self.kind in ("int", "float"):
            number = parse_decimal(text)
            if number is None:
                raise self.error(shown, cli=cli)
            if self.kind == "float":
                return float(number)  # 1e999 becomes inf and is refused by check() as not finite
            if number != number.to_integral_value():
                raise self.error(shown, cli=cli)
            return int(number)
        if self.kind == "bool" or (self.bools and word in TRUE_WORDS | FALSE_WORDS):
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
            raise self.error(shown, cli=cli)
        if self.kind == "choice":
            for c in self.choices:
                if isinstance(c, bool) and word in (TRUE_WORDS if c else FALSE_WORDS):
                    return c
                if isinstance(c, str) and c == text.strip():
                    return c
            for given, meaning in self.aliases:
                if isinstance(given, bool) and word in (TRUE_WORDS if given else FALSE_WORDS):
                    return meaning
                if isinstance(given, str) and given == text.strip():
                    return meaning
            raise self.error(shown, cli=cli)
        return text

    def check(self, value: Any, cli: bool = False, shown: Any = None) -> Any:
        """``value`` (a Python value) checked for kind and range; returns it normalized (a path as
        ``str``, an int given for a float as ``float``, a list for a ``count`` option)."""
        shown = value if shown is None else shown
        self.refuse_if_no_effect(shown, cli)
        if value is None:
            if self.nullable:
                return None
            raise self.error(shown, cli=cli)
        if self.count is not None:
            low, high = self.count
            many = isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping)
            items = list(value) if many else [value] if low <= 1 else None
            if items is None or len(items) < low or (high is not None and len(items) > high):
                raise self.error(shown, cli=cli)
            return [self._check_scalar(v, shown, cli) for v in items]
        return self._check_scalar(value, shown, cli)

    def _check_scalar(self, value: Any, shown: Any, cli: bool) -> Any:
        bad = self.error(shown, cli=cli)
        kind = self.kind
        if kind in ("int", "float"):
            if isinstance(value, bool):
                raise bad
            if kind == "int":  # int, numpy and 0-d tensor integers (anything with __index__)
                try:
                    value = operator.index(value)
                except TypeError:
                    raise bad from None
            else:
                if not isinstance(value, numbers.Real):
                    raise bad
                value = float(value)
                if not math.isfinite(value):
                    raise self.error(shown, f"expected a finite number in {self.bounds}", cli)
            if value not in self.bounds:  # type: ignore[operator]
                raise bad
            return value
        if kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if kind == "choice":
            for c in self.choices:
                if type(value) is type(c) and value == c:
                    return c
            for given, meaning in self.aliases:
                if type(value) is type(given) and value == given:
                    return meaning
            raise bad
        if self.bools and isinstance(value, bool):
            return value
        if self.mapping and isinstance(value, Mapping):
            return dict(value)
        if kind == "path" and isinstance(value, os.PathLike):
            return os.fspath(value)
        if not isinstance(value, str):
            raise bad
        return value


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def suggest(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'lr0'?"`` for the closest known names, or ``""``."""
    close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def defaults(options: Iterable[Option]) -> dict[str, Any]:
    """``{name: default}`` of the options that have a default and an effect."""
    return {o.name: o.default for o in options if not o.required and not o.no_effect}


def check_options(options: Iterable[Option], values: Mapping[str, Any]) -> dict[str, Any]:
    """Check Python values against ``options``; returns them normalized (see :meth:`Option.check`).

    Raises:
        OptionError: a name that is not among ``options`` (with the closest ones), or a value of the
        wrong kind or range (naming the option and what is expected).
    """
    table = {o.name: o for o in options}
    out = {}
    for name, value in values.items():
        if name not in table:
            raise OptionError.unknown(name, value, "option", suggest(name, table))
        out[name] = table[name].check(value)
    return out


def parse_texts(options: Iterable[Option], texts: Mapping[str, str | list[str]]) -> dict[str, Any]:
    """Command-line values (``{name: text}``, a list of tokens for a ``count`` option) -> checked values.

    Raises:
        OptionError: as :func:`check_options`, spelt as the command line has it (``--max-det 1e9``).
    """
    table = {o.name: o for o in options}
    out = {}
    for name, text in texts.items():
        if name not in table:
            raise OptionError.unknown(name, text, "option", suggest(name, table), cli=True)
        out[name] = table[name].from_text(text)
    return out


def inactive_options(options: Iterable[Option], given: Iterable[str], values: Mapping[str, Any]) -> list[str]:
    """One line per option in ``given`` that acts only with another option's value (``only_with``)
    while ``values`` (given values over the defaults) do not have it."""
    table = {o.name: o for o in options}
    lines = []
    for name in given:
        o = table.get(name)
        if o is None or o.only_with is None:
            continue
        other, wanted = o.only_with
        if values.get(other, table[other].default) != wanted:
            shown = _show(wanted)
            lines.append(f"{o.cli_name} has no effect without --{other.replace('_', '-')} {shown}")
    return lines
