"""The ``yolov9k`` command: ``yolov9k <verb> --key value ...``.

Verbs: train, val, predict, export, convert, demo-data, bench, info; ``bench train`` is a mode of
``bench`` (a mode follows its verb and has its own options). Every option is a ``--key value``
flag (``--key=value`` works too; ``--save-json`` and ``--save_json`` are the same flag). Boolean
flags may be given alone (``--half``) or with a value (``--half false``). Unknown options are
rejected with the closest known ones.

The parsers, their ``--help`` and ``docs/options.md`` come from one schema (``yolov9k.options``):
every value is read by its option's parser (decimal numbers: ``--imgsz 0640`` is 640) and checked
against its range before any work starts. ``train`` takes every training option
(hyperparameters included); so does ``bench train``, over the README demo run's schedule.

Errors: bad input (``yolov9k.errors.Yolov9kError``, or the OS refusing a file) prints one line and
exits 1; anything else is a bug in yolov9k and prints its traceback and a request to report it.

Examples::

    yolov9k demo-data
    yolov9k train --model gelan-t --epochs 10 --imgsz 320 --batch 16
    yolov9k val --model runs/train/exp/weights/best.pt --data coco.yaml --save-json
    yolov9k predict --model best.pt --source images/ --conf 0.3 --save-txt
    yolov9k export --model best.pt --format onnx --nms --max-det 100
    yolov9k convert --source yolov9-c.pt --output yolov9-c-safe.pt --reparameterize
    yolov9k bench train --epochs 2 --out run.json
"""

from __future__ import annotations

import argparse
import difflib
import logging
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yolov9k.api.bench import bench
from yolov9k.api.bench_train import SCHEDULE, bench_train
from yolov9k.api.convert import convert
from yolov9k.api.export import export
from yolov9k.api.info import info
from yolov9k.api.predict import predict, run_cli
from yolov9k.api.val import val
from yolov9k.data.demo import default_demo_root, generate_demo_dataset
from yolov9k.engine import train
from yolov9k.errors import is_user_error
from yolov9k.options import TRAIN_OPTIONS, Option, parse_texts
from yolov9k.options.schema import inactive_options
from yolov9k.options.verbs import BENCH, BENCH_TRAIN, CONVERT, DEMO_DATA, EXPORT, INFO, PREDICT, VAL
from yolov9k.version import __version__

__all__ = ["main", "build_parser", "VERBS", "VERB_TABLE"]

LOGGER = logging.getLogger("yolov9k")
BUG_REPORT = (
    "this is a bug in yolov9k {version}, not a problem with your input: please report it with the "
    "command line and the traceback above"
)


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that names the closest known options when it meets unknown ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    verb_parsers: dict[str, _Parser] = {}

    def known_options(self, hidden: bool = True) -> list[str]:
        """The ``--flags`` of this parser (without the hidden, no-effect ones unless ``hidden``)."""
        return [
            s
            for a in self._actions
            for s in a.option_strings
            if s.startswith("--") and (hidden or a.help is not argparse.SUPPRESS)
        ]


_METAVAR = {"int": "INT", "float": "FLOAT", "bool": "BOOL", "path": "PATH", "str": "TEXT"}


def _help_text(o: Option, default: Any) -> str:
    """``--help`` of one option: its meaning, kind and range, and its default."""
    kind = f"; {o.type_text()} in {o.range}" if o.range else ""  # numbers: their kind and range
    shown = "required" if o.required else f"default: {_show_default(default)}"
    return f"{o.help}{kind} ({shown})".replace("%", "%%")


def _show_default(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else str(value)


def _add_options(
    parser: argparse.ArgumentParser, options: Sequence[Option], defaults: Mapping[str, Any] | None = None
) -> None:
    """One ``--name`` per option, in argument groups by ``Option.group``. Values stay text here (a key
    not given stays out of the namespace): :func:`yolov9k.options.parse_texts` reads and checks them."""
    groups: dict[str, Any] = {"": parser}
    for o in options:
        group = groups.get(o.group)
        if group is None:
            group = groups[o.group] = parser.add_argument_group(o.group)
        default = (defaults or {}).get(o.name, o.default)
        kw: dict[str, Any] = {"dest": o.name, "default": argparse.SUPPRESS}
        if o.kind == "choice":
            kw["metavar"] = "{" + ",".join(_show_default(c) for c in o.choices) + "}"
        else:
            kw["metavar"] = _METAVAR[o.kind]
        kw["help"] = argparse.SUPPRESS if o.hidden else _help_text(o, default)
        if o.required:
            kw["required"] = True
        if o.count is not None:
            kw["nargs"] = "+"
        elif o.flag:
            kw.update(nargs="?", const="true")
        group.add_argument(o.cli_name, **kw)


# --------------------------------------------------------------------------------------------------
# what each verb runs and prints
# --------------------------------------------------------------------------------------------------


def _run_train(args: dict[str, Any]) -> Any:
    result = train(**args)
    print(f"results in {result.get('save_dir')}")
    return result


def _run_bench_train(args: dict[str, Any]) -> Any:
    own = {o.name: args.pop(o.name) for o in BENCH_TRAIN if o.name in args}
    record = bench_train(**own, **args)
    if own.get("out"):
        print(f"wrote {own['out']}")
    return record


def _run_export(args: dict[str, Any]) -> Any:
    imgsz = args.pop("imgsz", None)
    if isinstance(imgsz, list):  # one size (square) or H W
        imgsz = imgsz[0] if len(imgsz) == 1 else tuple(imgsz)
    path = export(**args, **({} if imgsz is None else {"imgsz": imgsz}))
    print(f"exported {path}")
    return path


def _run_convert(args: dict[str, Any]) -> Any:
    path = convert(**args)
    print(f"wrote {path}")
    return path


def _run_demo_data(args: dict[str, Any]) -> Any:
    root = args.pop("root", None) or default_demo_root()
    path = generate_demo_dataset(root, **args)
    print(f"demo data set: {path}")
    return path


@dataclass(frozen=True)
class Verb:
    """A command: its one-line help, the function whose docstring it shows (unless ``description``),
    its options (``yolov9k.options.verbs``), and what it runs. ``train_defaults``: it also takes every
    training option, these defaults shown in its help. ``modes``: sub-commands
    (``yolov9k <verb> <mode> ...``), each with its own options."""

    help: str
    fn: Callable[..., Any]
    options: tuple[Option, ...]
    run: Callable[[dict[str, Any]], Any]
    train_defaults: Mapping[str, Any] | None = None
    description: str | None = None
    modes: Mapping[str, Verb] = field(default_factory=dict)

    @property
    def all_options(self) -> tuple[Option, ...]:
        """Its own options, then the training options when it takes them."""
        return self.options + (TRAIN_OPTIONS if self.train_defaults is not None else ())


def _call(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda args: fn(**args)


_TRAIN_DESCRIPTION = (
    "Train a detection model with yolov9k.train; each --key VALUE is one training option "
    "(docs/options.md; hyperparameters below). With no --data the generated demo data set is used. "
    "Five entries of the official hyp files (obj, obj_pw, iou_t, anchor_t, copy_paste) have no effect in "
    "YOLOv9: they are refused here and ignored with a warning in a --hyp file."
)

_BENCH_TRAIN_DESCRIPTION = (
    "Train once with yolov9k.engine.profile.TimedTrainer and print where each epoch's wall-clock goes "
    "(data wait, forward + backward, loss, optimizer + EMA, validation data / model / NMS / metrics, "
    "saving, other) and the whole run's wall-clock; --out writes it all as JSON "
    "(benchmarks/summarize_runs.py tabulates such files). Every option of 'yolov9k train' is taken; the "
    "defaults are the README demo run's: gelan-t on the generated demo data set, batch 16, "
    + " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in SCHEDULE.items())
    + ". Without --project the run folder is a temporary one, deleted after the run."
)

VERB_TABLE: dict[str, Verb] = {
    "train": Verb(
        "train a model (every training option, hyperparameters included)",
        train,
        (),
        _run_train,
        train_defaults={},
        description=_TRAIN_DESCRIPTION,
    ),
    "val": Verb("COCO mAP of a model on a dataset split", val, VAL, _call(val)),
    "predict": Verb("detect objects in images, folders, globs and videos", predict, PREDICT, _call(run_cli)),
    "export": Verb("export to ONNX (optionally with NMS) or TorchScript", export, EXPORT, _run_export),
    "convert": Verb(
        "official checkpoint -> safe yolov9k checkpoint (weights_only)", convert, CONVERT, _run_convert
    ),
    "demo-data": Verb(
        "generate the synthetic demo detection data set", generate_demo_dataset, DEMO_DATA, _run_demo_data
    ),
    "bench": Verb(
        "time each op on every available backend, and a model forward; 'bench train': a whole training run",
        bench,
        BENCH,
        _call(bench),
        modes={
            "train": Verb(
                "a whole training run timed phase by phase (table and JSON); any option of 'yolov9k train'",
                bench_train,
                BENCH_TRAIN,
                _run_bench_train,
                train_defaults=SCHEDULE,
                description=_BENCH_TRAIN_DESCRIPTION,
            )
        },
    ),
    "info": Verb("model summary (layers, params, GFLOPs) and kernel backends", info, INFO, _call(info)),
}
VERBS = tuple(VERB_TABLE)


def build_parser() -> _Parser:
    """The argument parser of every verb, generated from the option schema.

    ``verb_parsers`` maps each command (``"val"``, ``"bench train"``) to its parser; a mode's parser
    stands alone (it reads the tokens after the mode), so the verb's options never mix into it.
    """
    parser = _Parser(prog="yolov9k", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    commands: dict[str, _Parser] = {}
    for name, verb in VERB_TABLE.items():
        commands[name] = _fill_parser(sub.add_parser(name, help=verb.help), verb)
        for mode, spec in verb.modes.items():
            commands[f"{name} {mode}"] = _fill_parser(_Parser(prog=f"yolov9k {name} {mode}"), spec)
    parser.verb_parsers = commands
    return parser


def _fill_parser(parser: _Parser, verb: Verb) -> _Parser:
    """A command's description, options (its own, then the training options) and list of modes."""
    parser.description = verb.description or verb.fn.__doc__
    _add_options(parser, verb.options)
    if verb.train_defaults is not None:
        _add_options(parser, TRAIN_OPTIONS, verb.train_defaults)
    if verb.modes:
        lines = [f"  {parser.prog} {mode}: {spec.help}" for mode, spec in verb.modes.items()]
        parser.epilog = "modes (each with its own options, see --help after the mode):\n" + "\n".join(lines)
    return parser


def _command(parser: _Parser, tokens: Sequence[str]) -> tuple[str | None, list[str]]:
    """The command that ``tokens`` start with (``"val"``, ``"bench train"``; None: no verb first) and
    the tokens after it."""
    if not tokens or tokens[0] not in parser.verb_parsers:
        return None, list(tokens)
    if len(tokens) > 1 and f"{tokens[0]} {tokens[1]}" in parser.verb_parsers:
        return f"{tokens[0]} {tokens[1]}", list(tokens[2:])
    return tokens[0], list(tokens[1:])


def _spec(command: str) -> Verb:
    """The :class:`Verb` of a command (``"bench train"`` -> the ``train`` mode of ``bench``)."""
    verb, _, mode = command.partition(" ")
    return VERB_TABLE[verb].modes[mode] if mode else VERB_TABLE[verb]


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------


def _normalize(argv: Sequence[str]) -> list[str]:
    """``--save_json`` -> ``--save-json`` (flags only; values are left alone)."""
    out = []
    for tok in argv:
        if tok.startswith("--") and len(tok) > 2:
            key, eq, value = tok[2:].partition("=")
            tok = "--" + key.replace("_", "-") + eq + value
        out.append(tok)
    return out


def _reject_unknown(target: _Parser, argv: Sequence[str]) -> None:
    """Fail on options the command (``target``) does not have, naming the closest ones (before
    argparse's own checks, so that a misspelt required option is reported as misspelt rather than
    missing)."""
    known = set(target.known_options()) | {"-h"}
    bad = [t.split("=", 1)[0] for t in argv if t.startswith("-") and t.split("=", 1)[0] not in known]
    bad = [t for t in bad if not _is_number(t)]  # negative numbers are values
    if not bad:
        return
    visible = sorted(set(target.known_options(hidden=False)) | {"-h"})
    hints = []
    for opt in bad:
        close = difflib.get_close_matches(opt, visible, n=3, cutoff=0.5)
        hints.append(opt + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    target.error("unrecognized arguments: " + ", ".join(hints))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _parse(parser: _Parser, tokens: list[str]) -> tuple[str, dict[str, Any]] | int:
    """(command, its options as text) from the command line, or an exit status (``--version``, no verb)."""
    command, rest = _command(parser, tokens)
    if command is not None:
        _reject_unknown(parser.verb_parsers[command], rest)
    if command is not None and " " in command:  # a mode: its own parser reads what follows it
        return command, vars(parser.verb_parsers[command].parse_args(rest))
    args = parser.parse_args(tokens)
    if args.version:
        print(f"yolov9k {__version__}")
        return 0
    if args.verb is None:
        parser.print_help()
        return 2
    return args.verb, {k: v for k, v in vars(args).items() if k not in ("verb", "version")}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yolov9k`` console script; returns the exit status.

    0: done. 1: an error - one line for bad input, the traceback and a request for a bug report for
    anything else. 2: a usage error (unknown option, missing required option). 130: interrupted.
    """
    parser = build_parser()
    parsed = _parse(parser, _normalize(sys.argv[1:] if argv is None else argv))
    if isinstance(parsed, int):
        return parsed
    command, texts = parsed
    spec = _spec(command)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        options = parse_texts(spec.all_options, texts)  # every value checked before any work
        for line in inactive_options(spec.all_options, texts, options):
            LOGGER.warning(f"yolov9k {command}: warning: {line}")
        spec.run(options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - sorted into the user's errors and our bugs right here
        if is_user_error(e):
            print(f"yolov9k {command}: error: {_one_line(e)}", file=sys.stderr)
            return 1
        traceback.print_exc()
        print(
            f"yolov9k {command}: {type(e).__name__}: " + BUG_REPORT.format(version=__version__),
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
