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
import inspect
import logging
import pickle
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["main", "build_parser"]

VERBS = ("train", "val", "predict", "export", "convert", "demo-data", "bench", "info")


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on", "y"):
        return True
    if value in ("0", "false", "no", "off", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _none_or_str(text: str) -> str | None:
    return None if text.strip().lower() in ("none", "null", "") else text


class _Parser(argparse.ArgumentParser):
    """ArgumentParser that names the closest known options when it meets unknown ones."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    verb_parsers: dict[str, _Parser] = {}

    def known_options(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]


def _option(parser: argparse.ArgumentParser, fn: Callable | None, name: str, help: str, **kw: Any) -> None:
    """Add ``--name`` with the default of parameter ``name`` of ``fn`` (so help cannot drift from the API)."""
    if fn is not None and "default" not in kw and not kw.get("required"):
        kw["default"] = inspect.signature(fn).parameters[name].default
    if kw.get("type") is _bool:
        kw.setdefault("nargs", "?")
        kw.setdefault("const", True)
        kw.setdefault("metavar", "BOOL")
    if "default" in kw and not kw.get("required"):
        help = f"{help} (default: {kw['default']})"
    parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=help, **kw)


# --------------------------------------------------------------------------------------------------
# verbs
# --------------------------------------------------------------------------------------------------


def _add_val(sub: Any) -> None:
    from yolov9k.api.val import val

    p = sub.add_parser("val", help="COCO mAP of a model on a dataset split", description=val.__doc__)
    _option(p, val, "model", "checkpoint file (official or yolov9k) or zoo name", required=True)
    _option(p, val, "data", "dataset YAML (default: the generated demo data set)", type=_none_or_str)
    _option(p, val, "imgsz", "image size in pixels", type=int)
    _option(p, val, "batch", "images per batch", type=int)
    _option(p, val, "conf", "confidence threshold", type=float)
    _option(p, val, "iou", "NMS IoU threshold", type=float)
    _option(p, val, "max_det", "detections kept per image", type=int)
    _option(p, val, "device", "cpu, cuda, cuda:N or N (default: CUDA when available)", type=_none_or_str)
    _option(p, val, "half", "fp16 inference (CUDA only)", type=_bool)
    _option(p, val, "save_json", "write predictions.json in COCO result format", type=_bool)
    _option(p, val, "project", "results go to <project>/<name> (none: runs/val)", type=_none_or_str)
    _option(p, val, "name", "run name (default exp, numbered when taken)", type=_none_or_str)
    _option(p, val, "split", "dataset split", choices=("train", "val", "test"))
    _option(p, val, "workers", "dataloader worker processes", type=int)
    _option(p, val, "rect", "rectangular batches (as the official val.py)", type=_bool)
    _option(p, val, "plots", "write the PR curve and confusion matrix", type=_bool)


def _add_predict(sub: Any) -> None:
    from yolov9k.api.predict import predict

    p = sub.add_parser("predict", help="detect objects in images, folders, globs and videos")
    p.description = predict.__doc__
    _option(p, predict, "model", "checkpoint file (official or yolov9k) or zoo name", required=True)
    _option(p, predict, "source", "image, video, folder, glob or .txt list of paths", required=True)
    _option(p, predict, "imgsz", "inference size in pixels", type=int)
    _option(p, predict, "conf", "confidence threshold", type=float)
    _option(p, predict, "iou", "NMS IoU threshold", type=float)
    _option(p, predict, "classes", "keep only these class ids", type=int, nargs="+")
    _option(p, predict, "max_det", "detections kept per image", type=int)
    _option(p, predict, "agnostic", "class-agnostic NMS", type=_bool)
    _option(p, predict, "device", "cpu, cuda, cuda:N or N (default: CUDA when available)", type=_none_or_str)
    _option(p, predict, "half", "fp16 inference (CUDA only)", type=_bool)
    _option(p, predict, "save", "write annotated images / videos", type=_bool)
    _option(p, predict, "save_txt", "write labels/<stem>.txt: cls cx cy w h conf (normalized)", type=_bool)
    _option(p, predict, "save_json", "write predictions.json (boxes in original-image pixels)", type=_bool)
    _option(p, predict, "project", "results go to <project>/<name> (none: runs/predict)", type=_none_or_str)
    _option(p, predict, "name", "run name (default exp, numbered when taken)", type=_none_or_str)
    _option(p, predict, "batch", "images per forward pass", type=int)


def _add_export(sub: Any) -> None:
    from yolov9k.api.export import export

    p = sub.add_parser("export", help="export to ONNX (optionally with NMS) or TorchScript")
    p.description = export.__doc__
    _option(p, export, "model", "checkpoint file (official or yolov9k) or zoo name", required=True)
    _option(p, export, "format", "output format", choices=("onnx", "torchscript"))
    _option(p, export, "imgsz", "input size: one int (square) or H W", type=int, nargs="+")
    _option(p, export, "file", "output file (default: beside the checkpoint)", type=_none_or_str)
    _option(p, export, "nms", "ONNX: NMS in the graph (EfficientNMS-style outputs)", type=_bool)
    _option(p, export, "half", "fp16 (needs --device cuda)", type=_bool)
    _option(p, export, "dynamic", "ONNX: dynamic batch axis", type=_bool)
    _option(p, export, "opset", "ONNX opset", type=int)
    _option(p, export, "conf", "with --nms: score threshold", type=float)
    _option(p, export, "iou", "with --nms: IoU threshold", type=float)
    _option(p, export, "max_det", "with --nms: detections per image", type=int)
    _option(p, export, "batch", "batch size of the example input", type=int)
    _option(p, export, "device", "device used for tracing", type=_none_or_str)


def _add_convert(sub: Any) -> None:
    from yolov9k.api.convert import convert

    p = sub.add_parser("convert", help="official checkpoint -> safe yolov9k checkpoint (weights_only)")
    p.description = convert.__doc__
    _option(p, convert, "source", "checkpoint to read (official, yolov9k or state dict)", required=True)
    _option(p, convert, "output", "yolov9k checkpoint to write", required=True)
    _option(p, convert, "reparameterize", "drop the PGI branch (yolov9-X -> gelan-X)", type=_bool)
    _option(p, convert, "half", "store fp16 weights", type=_bool)


def _add_demo_data(sub: Any) -> None:
    from yolov9k.data.demo import generate_demo_dataset

    p = sub.add_parser("demo-data", help="generate the synthetic demo detection data set")
    p.description = generate_demo_dataset.__doc__
    _option(
        p, None, "root", "output folder (default: $YOLOV9K_HOME/demo or ~/.cache/yolov9k/demo)", default=None
    )
    _option(p, generate_demo_dataset, "num_train", "training images", type=int)
    _option(p, generate_demo_dataset, "num_val", "validation images", type=int)
    _option(p, generate_demo_dataset, "imgsz", "image size (long side) in pixels", type=int)
    _option(p, generate_demo_dataset, "seed", "random seed", type=int)
    _option(p, generate_demo_dataset, "overwrite", "replace another data set in root", type=_bool)


def _add_bench(sub: Any) -> None:
    from yolov9k.api.bench import CASES, bench

    p = sub.add_parser("bench", help="time each op on every available backend, and a model forward")
    p.description = bench.__doc__
    _option(p, bench, "full", "benchmark sizes instead of small ones", type=_bool)
    _option(p, bench, "device", "cpu, cuda, ... (default: CUDA when available)", type=_none_or_str)
    _option(p, bench, "model", "zoo model for the forward timing ('none' to skip)", type=_none_or_str)
    _option(p, bench, "imgsz", "model input size (default 160, 640 with --full)", type=int)
    _option(p, bench, "repeat", "timed calls per entry (median)", type=int)
    _option(p, bench, "ops", "only these ops", nargs="+", choices=CASES)


def _add_info(sub: Any) -> None:
    from yolov9k.api.info import info

    p = sub.add_parser("info", help="model summary (layers, params, GFLOPs) and kernel backends")
    p.description = info.__doc__
    _option(p, info, "model", "zoo name or checkpoint file")
    _option(p, info, "imgsz", "image size for the GFLOPs", type=int)
    _option(p, info, "fuse", "fold BN and RepConvN first", type=_bool)
    _option(p, info, "num_classes", "classes of a zoo model (default: 80)", type=int)


def _add_train(sub: Any) -> None:
    from yolov9k.engine.config import DEFAULTS, HELP, HYP_KEYS

    p = sub.add_parser("train", help="train a model (every option of yolov9k.engine.config.DEFAULTS)")
    p.description = (
        "Train a detection model with yolov9k.engine.train; each --key VALUE is one option of "
        "yolov9k.engine.config.DEFAULTS (values read as YAML scalars and type-checked there). "
        "With no --data the generated demo data set is used."
    )
    hyp = p.add_argument_group("hyperparameters (hyp.scratch-high defaults)")
    for key, default in DEFAULTS.items():
        group = hyp if key in HYP_KEYS else p
        text = f"{HELP[key]} (default: {default})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "metavar": "VALUE"}
        if isinstance(default, bool):
            kw.update(nargs="?", const="true", metavar="BOOL")
        group.add_argument(f"--{key.replace('_', '-')}", dest=key, help=text, **kw)


def build_parser() -> _Parser:
    """The argument parser of every verb (train's options come from the engine's defaults table)."""
    parser = _Parser(prog="yolov9k", description=__doc__)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for add in (_add_train, _add_val, _add_predict, _add_export, _add_convert, _add_demo_data, _add_bench):
        add(sub)
    _add_info(sub)
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
    if verb == "train":
        from yolov9k.engine import train
        from yolov9k.engine.config import parse_cli_overrides, resolve_config

        overrides = parse_cli_overrides([f"{k}={v}" for k, v in args.items()])
        resolve_config(overrides)  # key and type errors before any work starts
        result = train(**overrides)
        print(f"results in {result.get('save_dir')}")
        return result
    if verb == "val":
        from yolov9k.api.val import val

        return val(**args)
    if verb == "predict":
        from yolov9k.api.predict import predict

        results = predict(**args)
        if results.skipped:
            print(f"skipped {len(results.skipped)} unreadable input(s):", file=sys.stderr)
            for _, why in results.skipped:
                print(f"  {why}", file=sys.stderr)
        print(
            f"{len(results)} image(s) done" + (f", results in {results.save_dir}" if results.save_dir else "")
        )
        return results
    if verb == "export":
        from yolov9k.api.export import export

        imgsz = args.pop("imgsz")
        if isinstance(imgsz, list):
            if len(imgsz) not in (1, 2):
                raise ValueError(f"--imgsz takes one or two sizes, got {imgsz}")
            imgsz = imgsz[0] if len(imgsz) == 1 else tuple(imgsz)
        path = export(imgsz=imgsz, **args)
        print(f"exported {path}")
        return path
    if verb == "convert":
        from yolov9k.api.convert import convert

        path = convert(**args)
        print(f"wrote {path}")
        return path
    if verb == "demo-data":
        from yolov9k.data.demo import default_demo_root, generate_demo_dataset

        root = args.pop("root") or default_demo_root()
        path = generate_demo_dataset(root, **args)
        print(f"demo data set: {path}")
        return path
    if verb == "bench":
        from yolov9k.api.bench import bench

        return bench(**args)
    if verb == "info":
        from yolov9k.api.info import info

        return info(**args)
    raise AssertionError(verb)


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
        from yolov9k.version import __version__

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
