"""Markdown tables from the JSON files of ``train_run.py``, ``ultralytics_run.py`` and ``official_run.py``.

    python benchmarks/summarize_runs.py label=auto.json label2=torch.json ul=ul.json

First table: one row per run (whole-run wall-clock, sum of epochs, setup, final validation, mean
epoch, best and final mAP50, and the whole run's wall-clock over the first run's). Second table: the
phase split (seconds summed over epochs; ``step`` = forward_backward + loss + optimizer);
ultralytics and official runs fill only the columns their callbacks can see (data, step, validation +
save; official runs also setup and final validation).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(spec: str) -> tuple[str, dict[str, Any]]:
    label, _, path = spec.rpartition("=")
    data = json.loads(Path(path).read_text())
    return label or Path(path).stem, data


def _f(v: Any, fmt: str = ".1f") -> str:
    return "—" if v is None else format(v, fmt)


def run_row(label: str, d: dict[str, Any]) -> dict[str, Any]:
    if "timing" not in d:  # ultralytics_run.py / official_run.py (the same shape)
        total, n = d["total"], len(d["epochs"])
        return {
            "label": label, "wall": d["wall_s"], "epochs_s": total["wall"], "setup": d.get("setup_s"),
            "final": d.get("finish_s"),
            "per_epoch": total["wall"] / max(n, 1), "best": d["best_map50"],
            "final_map50": d["final_metrics"].get("map50"),
            "split": {"data": total["data"], "step": total["step"], "validation+save": total["val_save"],
                      "save": total.get("save"), "other": total["other"]},
        }  # fmt: skip
    t = d["timing"]
    total, n = t["total"], len(t["epochs"])
    return {
        "label": label, "wall": d["wall_s"], "epochs_s": total["wall"], "setup": t.get("setup_s"),
        "final": t.get("finish_s"), "per_epoch": total["wall"] / max(n, 1), "best": d["best_map50"],
        "final_map50": d["final_metrics"].get("map50"),
        "split": {"data": total["data"],
                  "step": total["forward_backward"] + total["loss"] + total["optimizer"],
                  "forward_backward": total["forward_backward"], "loss": total["loss"],
                  "optimizer": total["optimizer"], "validation+save": total["validation"] + total["save"],
                  "validation": total["validation"], "val_model": total["val_model"],
                  "val_postprocess": total["val_postprocess"], "val_metrics": total["val_metrics"],
                  "val_data": total["val_data"], "save": total["save"], "other": total["other"]},
    }  # fmt: skip


def main(specs: list[str]) -> str:
    rows = [run_row(*load(s)) for s in specs]
    base = rows[0]["wall"]
    out = [
        "| run | whole run s | epochs s | s/epoch | setup s | final val s | best mAP50 | final mAP50 | "
        f"whole run / {rows[0]['label']}'s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        cells = [
            r["label"], f"{r['wall']:.1f}", f"{r['epochs_s']:.1f}", f"{r['per_epoch']:.1f}", _f(r["setup"]),
            _f(r["final"]), _f(r["best"], ".3f"), _f(r["final_map50"], ".3f"), f"{r['wall'] / base:.2f}",
        ]  # fmt: skip
        out.append("| " + " | ".join(cells) + " |")
    cols = ("data", "step", "forward_backward", "loss", "optimizer", "validation+save", "val_data",
            "val_model", "val_postprocess", "val_metrics", "save", "other")  # fmt: skip
    out += ["", "| run | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for r in rows:
        out.append(f"| {r['label']} | " + " | ".join(_f(r["split"].get(c)) for c in cols) + " |")
    text = "\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
