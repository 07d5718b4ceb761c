"""Whole training run with the phase split of ``TimedTrainer``: a thin wrapper of ``yolov9k bench train``.

Kept for the commands in ``benchmarks/RESULTS.md``: every option of ``yolov9k bench train`` is taken
(see its ``--help``: the README demo run's schedule by default, any ``yolov9k train`` option,
``--backend``, ``--threads``, ``--out``), plus this script's older spellings ``--no-plots``,
``--no-val`` and ``--quiet`` (``--cv2-threads``, for one experiment of RESULTS.md, is gone). Unlike
``yolov9k bench train`` (first CUDA device when present), the device defaults to the CPU, as the
runs of RESULTS.md did.

    python benchmarks/train_run.py --backend auto --out /tmp/auto.json
    python benchmarks/train_run.py --data tiny/demo.yaml --epochs 1 --imgsz 64   # tool check only

Timings are only meaningful on an otherwise idle machine (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import sys

from yolov9k.cli import main as cli_main

OLD_FLAGS = {
    "--no-plots": ["--plots", "false"],
    "--no-val": ["--val", "false"],
    "--quiet": ["--verbose", "false"],
}


def command_line(argv: list[str]) -> list[str]:
    """``argv`` of this script as the arguments of ``yolov9k`` (``bench train ...``)."""
    args = [token for t in argv for token in OLD_FLAGS.get(t, [t])]
    if not any(a == "--device" or a.startswith("--device=") for a in args):
        args += ["--device", "cpu"]
    return ["bench", "train", *args]


def main(argv: list[str] | None = None) -> int:
    return cli_main(command_line(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
