"""``docs/options.md``, generated from the option schema.

``python -m yolov9k.options.docs`` rewrites the file; ``--check`` exits 1 when it is not current
(``tests/test_options.py`` checks the same).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from yolov9k.io.files import atomic_write_text
from yolov9k.options.schema import Option
from yolov9k.options.train import HYP_OPTIONS, TRAIN_OPTIONS
from yolov9k.options.verbs import COMMANDS

__all__ = ["render", "DOC_PATH"]

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "options.md"

_INTRO = """\
# Options of every command

Generated from the option schema (`yolov9k/options/`) by `python -m yolov9k.options.docs`; a test
fails when this file is not current. Edit the schema, not this file. The command line, its `--help`
and the checks of the Python functions (`yolov9k.train(**options)`, `yolov9k.val(...)`, ...) come
from the same tables, and every parameter of those functions has the default listed here.

## How values are read

- **One parser for every command.** Numbers are decimal: `--imgsz 0640` is 640, `--epochs 010` is 10,
  `1e-3`, `1E3` and `.5` work; `6:40`, `0x10`, `1_000`, `inf` and `nan` are errors. An integer option
  takes an exponent whose value is whole (`--epochs 1e2` is 100) and refuses a fraction (`1.5`).
- **Booleans**: `true|false|yes|no|on|off|1|0` (any case); a boolean flag alone means true
  (`--save-json`). **None**: `none`, `null` or an empty value, where the type says `| none`.
- **Ranges** are written as in mathematics: `[a, b]` includes both ends, `(a, b)` excludes them.
  Every value is checked before any work starts (before a run folder exists, before a model is
  loaded), and an error names the option: `yolov9k train: error: --seed -1: expected an integer in
  [0, 4294967295]`. From Python the same checks raise `yolov9k.errors.OptionError` (a `ValueError`);
  there an int option takes an int (not `3.0`), while `train(**options)` also takes the text a hyp
  file would hold (`lr0="1e-3"`).
- A **hyp file** (`--hyp file.yaml`, e.g. the official `data/hyps/hyp.scratch-high.yaml`) is read the
  same way: every value as text through the parser above, unknown names refused with the closest
  known ones. Options given explicitly win over it.
- Some options act only together with another one (*only with* below); the command line warns when
  one is given without it.
"""

_SMOOTHING = """\
### Label smoothing

`label_smoothing` = ε smooths the targets of the classification BCE as yolov5 defines it
(`smooth_BCE(eps)`: a positive target becomes `1 - ε/2`, a negative one `ε/2`; Szegedy et al. 2016
for two classes per BCE term). YOLOv9's targets are TAL's soft scores `t` in [0, 1], so every class
target of a foreground anchor becomes

    t' = t · (1 - ε) + ε / 2        (t = 1 → 1 - ε/2,  t = 0 → ε/2)

Background anchors keep the target 0, as yolov5 smooths the class targets of matched predictions
only (its background is left to the objectness loss). The normaliser (the sum of the unsmoothed
scores) and the box / DFL weights are unchanged. ε = 0, the default, is the official loss exactly;
the official YOLOv9 computes `smooth_BCE` and never applies it. `fl_gamma` = γ > 0 multiplies each
BCE term by `α_t (1 - p_t)^γ` (`p_t = t·p + (1 - t)(1 - p)`, `α_t = 0.25 t + 0.75 (1 - t)`), the
official `FocalLoss`.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default(o: Option, defaults: dict | None = None) -> str:
    value = (defaults or {}).get(o.name, o.default)
    if o.required:
        return "*required*"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return "`none`" if value is None else f"`{value}`"


def _limits(o: Option) -> str:
    if o.range:
        return f"`{o.range}`"
    if o.choices:
        return " ".join(f"`{str(c).lower() if isinstance(c, bool) else c}`" for c in o.choices)
    return ""


def _meaning(o: Option) -> str:
    text = o.help
    if o.only_with is not None:
        other, value = o.only_with
        shown = str(value).lower() if isinstance(value, bool) else value
        text += f" (only with `--{other.replace('_', '-')} {shown}`)"
    return _cell(text)


def _table(options: Iterable[Option], defaults: dict | None = None) -> list[str]:
    rows = ["| option | type | default | range / choices | meaning |", "| --- | --- | --- | --- | --- |"]
    for o in options:
        if o.no_effect:
            continue
        rows.append(
            f"| `{o.cli_name}` | {_cell(o.type_text())} | {_default(o, defaults)} | {_cell(_limits(o))} | "
            f"{_meaning(o)} |"
        )
    return rows


def render() -> str:
    """The whole of ``docs/options.md``."""
    lines = [_INTRO]
    run = [o for o in TRAIN_OPTIONS if o not in HYP_OPTIONS]
    lines += ["## train", "", "`yolov9k train`, `yolov9k.train(**options)`.", ""]
    lines += _table(run)
    lines += ["", "### Hyperparameters", "", "Defaults: the official `hyp.scratch-high.yaml`.", ""]
    lines += _table(HYP_OPTIONS)
    lines += ["", "### No effect in YOLOv9", ""]
    lines += [
        "These entries of the official hyp files belong to YOLOv5/v7 parts that YOLOv9 does not have. "
        "Given as options they are refused (`--obj 0.7: has no effect in YOLOv9 ...`); in a hyp file they "
        "are ignored with one warning that names them.",
        "",
        "| entry | official value | why it has no effect |",
        "| --- | --- | --- |",
    ]
    lines += [f"| `{o.name}` | `{o.default}` | {_cell(o.no_effect)} |" for o in HYP_OPTIONS if o.no_effect]
    lines += ["", _SMOOTHING]
    for command, options in COMMANDS.items():
        if command == "train":
            continue
        lines += [f"## {command}", ""]
        if command == "bench train":
            lines += ["Also every option of `train`, with the README demo run's schedule as defaults.", ""]
        lines += _table(options)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolov9k.options.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not current")
    parser.add_argument("--path", type=Path, default=DOC_PATH)
    args = parser.parse_args(argv)
    text = render()
    current = args.path.read_text(encoding="utf-8") if args.path.is_file() else None
    if args.check:
        if current != text:
            print(f"{args.path} is not current: run python -m yolov9k.options.docs", file=sys.stderr)
            return 1
        return 0
    if current != text:
        atomic_write_text(args.path, text)
        print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
