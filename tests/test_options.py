"""The verbs' options tables: every option is a parameter of its verb's function, ranges are checked."""

from __future__ import annotations

import inspect

import pytest

from yolov9k.api.options import Option, check_options, defaults_of
from yolov9k.cli import VERB_TABLE, build_parser

# every command: the verbs and their modes ("bench train")
COMMANDS = {
    **VERB_TABLE,
    **{f"{verb} {mode}": spec for verb, v in VERB_TABLE.items() for mode, spec in v.modes.items()},
}


def test_every_mode_has_a_parser():
    assert "bench train" in COMMANDS
    assert set(build_parser().verb_parsers) == set(COMMANDS)


@pytest.mark.parametrize("verb", list(COMMANDS))
def test_every_option_is_a_parameter_with_its_default(verb):
    spec = COMMANDS[verb]
    params = inspect.signature(spec.fn).parameters
    names = [o.name for o in spec.options]
    assert len(names) == len(set(names)), f"{verb}: an option is declared twice"
    for o in spec.options:
        if o.default is inspect.Parameter.empty:
            assert o.name in params, f"{verb} --{o.name} is not a parameter of {spec.fn.__name__}"
            assert o.required == (params[o.name].default is inspect.Parameter.empty), o.name
    parsed = vars(build_parser().verb_parsers[verb].parse_args(
        [arg for o in spec.options if o.required for arg in (f"--{o.name.replace('_', '-')}", "x")]
    ))  # fmt: skip
    for name, default in defaults_of(spec.fn, spec.options).items():
        assert parsed[name] == default, f"{verb} --{name}"


def test_check_options_ranges_and_choices():
    table = (
        Option("imgsz", "", int, (1, None)),
        Option("conf", "", float, (0.0, 1.0)),
        Option("split", "", choices=("train", "val")),
    )
    check_options(table, {"imgsz": 32, "conf": 0.5, "split": "val", "other": -1})
    for values, message in (
        ({"imgsz": 0}, "imgsz must be a positive int, got 0"),
        ({"imgsz": True}, "imgsz must be a positive int, got True"),
        ({"imgsz": 3.0}, "imgsz must be a positive int, got 3.0"),
        ({"conf": 1.5}, r"conf must be in \[0, 1\], got 1.5"),
        ({"conf": "0.5"}, "conf must be a number"),
        ({"split": "dev"}, "split must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            check_options(table, values)
