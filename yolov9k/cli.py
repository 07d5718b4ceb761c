"""The ``yolov9k`` command: ``yolov9k <verb> --key value ...``.

Verbs: train, val, predict, export, convert, demo-data, bench, info; ``bench train`` is a mode of
``bench`` (a mode follows its verb and has its own options). Every option is a ``--key value``
flag (``--key=value`` works too; ``--save-json`` and ``--save_json`` are the same flag). Boolean
flags may be given alone (``--half``) or with a value (``--half false``). Unknown options are
rejected with the closest known ones. ``train`` takes every training option of
``yolov9k.engine.config.DEFAULTS`` (hyperparameters included) and passes them to
``yolov9k.engine.train`` unchanged; so does ``bench train``, over the README demo run's schedule.

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
import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from yolov9k.api.bench import OPTIONS as BENCH_OPTIONS
from yolov9k.api.bench import bench
from yolov9k.api.bench_train import OPTIONS as BENCH_TRAIN_OPTIONS
from yolov9k.api.bench_train import SCHEDULE, bench_train
from yolov9k.api.convert import OPTIONS as CONVERT_OPTIONS
from yolov9k.api.convert import convert
from yolov9k.api.export import OPTIONS as EXPORT_OPTIONS
from yolov9k.api.export import export
from yolov9k.api.info import OPTIONS as INFO_OPTIONS
from yolov9k.api.info import info
from yolov9k.api.options import DEMO_DATA, Option, defaults_of, parse_bool
from yolov9k.api.predict import OPTIONS as PREDICT_OPTIONS
from yolov9k.api.predict import predict
from yolov9k.api.val import OPTIONS as VAL_OPTIONS
from yolov9k.api.val import val
from yolov9k.data.demo import default_demo_root, generate_demo_dataset
from yolov9k.engine import train
from yolov9k.engine.config import DEFAULTS, FLAG_KEYS, HELP, HYP_KEYS, parse_cli_overrides, resolve_config
from yolov9k.version import __version__

__all__ = ["main", "build_parser", "VERBS"]


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that names the closest known options when it meets unknown ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    verb_parsers: dict[str, _Parser] = {}

    def known_options(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def _add_options(parser: argparse.ArgumentParser, fn: Callable[..., Any], options: Sequence[Option]) -> None:
    """One ``--name`` per option of the table; defaults from ``fn``'s signature (or the table)."""
    defaults = defaults_of(fn, tuple(options))
    for o in options:
        kw: dict[str, Any] = {"type": o.type, "help": o.help}
        if o.required:
            kw["required"] = True
        else:
            kw["default"] = defaults[o.name]
            kw["help"] = f"{o.help} (default: {defaults[o.name]})"
        if o.choices is not None:
            kw["choices"] = o.choices
        if o.nargs is not None:
            kw["nargs"] = o.nargs
        if o.type is parse_bool:
            kw.update(nargs="?", const=True, metavar="BOOL")
        parser.add_argument(f"--{o.name.replace('_', '-')}", dest=o.name, **kw)


def _add_train_options(parser: argparse.ArgumentParser, defaults: Mapping[str, Any]) -> None:
    """Every key of the training table, with ``defaults`` in the help; values are read as YAML scalars
    and type-checked there (a key not given stays out of the parsed namespace)."""
    hyp = parser.add_argument_group("hyperparameters (hyp.scratch-high defaults)")
    for key, default in defaults.items():
        group = hyp if key in HYP_KEYS else parser
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": "VALUE"}
        if key in FLAG_KEYS:
            kw.update(nargs="?", const="true", metavar="BOOL" if isinstance(default, bool) else "VALUE")
        group.add_argument(
            f"--{key.replace('_', '-')}", dest=key, help=f"{HELP[key]} (default: {default})", **kw
        )


# --------------------------------------------------------------------------------------------------
# what each verb runs and prints
# --------------------------------------------------------------------------------------------------


def _train_overrides(args: dict[str, Any]) -> dict[str, Any]:
    """The training options given on the command line, typed and checked (before any work starts)."""
    overrides = parse_cli_overrides([f"{k}={v}" for k, v in args.items()])
    resolve_config(overrides)
    return overrides


def _run_train(args: dict[str, Any]) -> Any:
    result = train(**_train_overrides(args))
    print(f"results in {result.get('save_dir')}")
    return result


def _run_bench_train(args: dict[str, Any]) -> Any:
    own = {o.name: args.pop(o.name) for o in BENCH_TRAIN_OPTIONS}
    record = bench_train(**own, **_train_overrides(args))
    if own["out"]:
        print(f"wrote {own['out']}")
    return record


def _run_predict(args: dict[str, Any]) -> Any:
    results = predict(**args)
    if results.skipped:
        print(f"skipped {len(results.skipped)} unreadable input(s):", file=sys.stderr)
        for _, why in results.skipped:
            print(f"  {why}", file=sys.stderr)
    print(f"{len(results)} image(s) done" + (f", results in {results.save_dir}" if results.save_dir else ""))
    return results


def _run_export(args: dict[str, Any]) -> Any:
    imgsz = args.pop("imgsz")
    if isinstance(imgsz, list):
        if len(imgsz) not in (1, 2):
            raise ValueError(f"--imgsz takes one or two sizes, got {imgsz}")
        imgsz = imgsz[0] if len(imgsz) == 1 else tuple(imgsz)
    path = export(imgsz=imgsz, **args)
    print(f"exported {path}")
    return path


def _run_convert(args: dict[str, Any]) -> Any:
    path = convert(**args)
    print(f"wrote {path}")
    return path


def _run_demo_data(args: dict[str, Any]) -> Any:
    root = args.pop("root") or default_demo_root()
    path = generate_demo_dataset(root, **args)
    print(f"demo data set: {path}")
    return path


@dataclass(frozen=True)
class Verb:
    """A command: its one-line help, the function whose defaults (and docstring, unless
    ``description``) it shows, its options table, and what it runs. ``train_defaults``: it also takes
    every training option, these defaults shown in its help. ``modes``: sub-commands
    (``yolov9k <verb> <mode> ...``), each with its own options."""

    help: str
    fn: Callable[..., Any]
    options: tuple[Option, ...]
    run: Callable[[dict[str, Any]], Any]
    train_defaults: Mapping[str, Any] | None = None
    description: str | None = None
    modes: Mapping[str, Verb] = field(default_factory=dict)


def _call(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda args: fn(**args)


_TRAIN_DESCRIPTION = (
    "Train a detection model with yolov9k.engine.train; each --key VALUE is one option of "
    "yolov9k.engine.config.DEFAULTS (values read as YAML scalars and type-checked there). "
    "With no --data the generated demo data set is used."
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
        "train a model (every option of yolov9k.engine.config.DEFAULTS)",
        train,
        (),
        _run_train,
        train_defaults=DEFAULTS,
        description=_TRAIN_DESCRIPTION,
    ),
    "val": Verb("COCO mAP of a model on a dataset split", val, VAL_OPTIONS, _call(val)),
    "predict": Verb(
        "detect objects in images, folders, globs and videos",
        predict,
        PREDICT_OPTIONS,
        _run_predict,
    ),
    "export": Verb(
        "export to ONNX (optionally with NMS) or TorchScript",
        export,
        EXPORT_OPTIONS,
        _run_export,
    ),
    "convert": Verb(
        "official checkpoint -> safe yolov9k checkpoint (weights_only)",
        convert,
        CONVERT_OPTIONS,
        _run_convert,
    ),
    "demo-data": Verb(
        "generate the synthetic demo detection data set", generate_demo_dataset, DEMO_DATA, _run_demo_data
    ),
    "bench": Verb(
        "time each op on every available backend, and a model forward; 'bench train': a whole training run",
        bench,
        BENCH_OPTIONS,
        _call(bench),
        modes={
            "train": Verb(
                "a whole training run timed phase by phase (table and JSON); any option of 'yolov9k train'",
                bench_train,
                BENCH_TRAIN_OPTIONS,
                _run_bench_train,
                train_defaults={**DEFAULTS, **SCHEDULE},
                description=_BENCH_TRAIN_DESCRIPTION,
            )
        },
    ),
    "info": Verb(
        "model summary (layers, params, GFLOPs) and kernel backends",
        info,
        INFO_OPTIONS,
        _call(info),
    ),
}
VERBS = tuple(VERB_TABLE)


def build_parser() -> _Parser:
    """The argument parser of every verb, generated from the verbs' options tables.

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
    """A command's description, options (its table, then the training options) and list of modes."""
    parser.description = verb.description or verb.fn.__doc__
    _add_options(parser, verb.fn, verb.options)
    if verb.train_defaults is not None:
        _add_train_options(parser, verb.train_defaults)
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
    hints = []
    for opt in bad:
        close = difflib.get_close_matches(opt, sorted(known), n=3, cutoff=0.5)
        hints.append(opt + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    target.error("unrecognized arguments: " + ", ".join(hints))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported in one line, not as a traceback."""
    errors: list[type[BaseException]] = [FileNotFoundError, ValueError, TypeError, NotImplementedError]
    errors.append(OSError)  # a file where a folder goes, a full disk, no permission: the path is named
    errors.append(pickle.UnpicklingError)  # UnsafeCheckpointError derives from it
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``yolov9k`` console script; returns the exit status."""
    parser = build_parser()
    tokens = _normalize(sys.argv[1:] if argv is None else argv)
    command, rest = _command(parser, tokens)
    if command is not None:
        _reject_unknown(parser.verb_parsers[command], rest)
    if command is not None and " " in command:  # a mode: its own parser reads what follows it
        options = vars(parser.verb_parsers[command].parse_args(rest))
    else:
        args = parser.parse_args(tokens)
        if args.version:
            print(f"yolov9k {__version__}")
            return 0
        if args.verb is None:
            parser.print_help()
            return 2
        command = args.verb
        options = {k: v for k, v in vars(args).items() if k not in ("verb", "version")}
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        _spec(command).run(options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        print(f"yolov9k {command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
