"""The ``yolov9k`` command: ``yolov9k <verb> --key value ...``.

Verbs: train, val, predict, export, convert, demo-data, bench, info. Every option is a ``--key value``
flag (``--key=value`` works too; ``--save-json`` and ``--save_json`` are the same flag). Boolean
flags may be given alone (``--half``) or with a value (``--half false``). Unknown options are
rejected with the closest known ones. ``train`` takes every training option of
``yolov9k.engine.config.DEFAULTS`` (hyperparameters included) and passes them to
``yolov9k.engine.train`` unchanged.

Examples::

    yolov9k demo-data
    yolov9k train --model gelan-t --epochs 10 --imgsz 320 --batch 16
    yolov9k val --model runs/train/exp/weights/best.pt --data coco.yaml --save-json
    yolov9k predict --model best.pt --source images/ --conf 0.3 --save-txt
    yolov9k export --model best.pt --format onnx --nms --max-det 100
    yolov9k convert --source yolov9-c.pt --output yolov9-c-safe.pt --reparameterize
"""

from __future__ import annotations

import argparse
import difflib
import logging
import pickle
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from yolov9k.api.bench import OPTIONS as BENCH_OPTIONS
from yolov9k.api.bench import bench
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
from yolov9k.engine.config import DEFAULTS, HELP, HYP_KEYS, parse_cli_overrides, resolve_config
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


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Every key of the training table; values are read as YAML scalars and type-checked there."""
    hyp = parser.add_argument_group("hyperparameters (hyp.scratch-high defaults)")
    for key, default in DEFAULTS.items():
        group = hyp if key in HYP_KEYS else parser
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": "VALUE"}
        if isinstance(default, bool):
            kw.update(nargs="?", const="true", metavar="BOOL")
        group.add_argument(
            f"--{key.replace('_', '-')}", dest=key, help=f"{HELP[key]} (default: {default})", **kw
        )


# --------------------------------------------------------------------------------------------------
# what each verb runs and prints
# --------------------------------------------------------------------------------------------------


def _run_train(args: dict[str, Any]) -> Any:
    overrides = parse_cli_overrides([f"{k}={v}" for k, v in args.items()])
    resolve_config(overrides)  # key and type errors before any work starts
    result = train(**overrides)
    print(f"results in {result.get('save_dir')}")
    return result


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
    """A command: its one-line help, the function whose docstring and defaults it shows, its options
    table (None: the training table), and what it runs."""

    help: str
    fn: Callable[..., Any]
    options: tuple[Option, ...] | None
    run: Callable[[dict[str, Any]], Any]


def _call(fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda args: fn(**args)


VERB_TABLE: dict[str, Verb] = {
    "train": Verb("train a model (every option of yolov9k.engine.config.DEFAULTS)", train, None, _run_train),
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
        "time each op on every available backend, and a model forward",
        bench,
        BENCH_OPTIONS,
        _call(bench),
    ),
    "info": Verb(
        "model summary (layers, params, GFLOPs) and kernel backends",
        info,
        INFO_OPTIONS,
        _call(info),
    ),
}
VERBS = tuple(VERB_TABLE)

_TRAIN_DESCRIPTION = (
    "Train a detection model with yolov9k.engine.train; each --key VALUE is one option of "
    "yolov9k.engine.config.DEFAULTS (values read as YAML scalars and type-checked there). "
    "With no --data the generated demo data set is used."
)


def build_parser() -> _Parser:
    """The argument parser of every verb, generated from the verbs' options tables."""
    parser = _Parser(prog="yolov9k", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name, verb in VERB_TABLE.items():
        p = sub.add_parser(name, help=verb.help)
        if verb.options is None:
            p.description = _TRAIN_DESCRIPTION
            _add_train_options(p)
        else:
            p.description = verb.fn.__doc__
            _add_options(p, verb.fn, verb.options)
    parser.verb_parsers = dict(sub.choices)
    return parser


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


def _reject_unknown(parser: _Parser, argv: Sequence[str]) -> None:
    """Fail on options the verb does not have, naming the closest ones (before argparse's own checks,
    so that a misspelt required option is reported as misspelt rather than missing)."""
    verb = next((t for t in argv if not t.startswith("-")), None)
    target = parser.verb_parsers.get(verb) if verb else None
    if target is None:
        return
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


def _run(verb: str, args: dict[str, Any]) -> Any:
    return VERB_TABLE[verb].run(args)


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
    _reject_unknown(parser, tokens)
    args = parser.parse_args(tokens)
    if args.version:
        print(f"yolov9k {__version__}")
        return 0
    if args.verb is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = {k: v for k, v in vars(args).items() if k not in ("verb", "version")}
    try:
        _run(args.verb, options)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        print(f"yolov9k {args.verb}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
