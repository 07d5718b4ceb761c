"""Whole ``predict`` commands side by side: yolov9k, ultralytics ``yolo predict``, official ``detect.py``.

What a user runs, timed from process start to exit (interpreter start, imports, model load, every
image, the outputs), over the inputs of ``predict_data.py`` (a folder of photo-like JPEGs and a
1280x720 video). Series: ``photos`` / ``video`` x ``nosave`` / ``save`` (annotated images or video
written). Rounds alternate the tools (the order rotates each round); the ratios come from one run.

Models and weights. The same GELAN in each tool at random initialisation, made to detect something
(random weights give class logits of ~1e-7 spread, hence no or every box): the last class conv of each
level is scaled so that its logits have unit standard deviation on the first photo, and its bias is
set to ``--cls-bias`` (-5: about 10-35 detections per image at conf 0.25). yolov9k and the official
``detect.py`` read the very same file (an official-format checkpoint written by the official code from
our state dict; our own checkpoint when the official tree is not given). ultralytics builds its own
``yolov9s.yaml`` / ``yolov9c.yaml`` (same layers; its Detect head has ungrouped box convs and another
width) with seed 0 and the same calibration. Settings everywhere: imgsz 640, conf 0.25, IoU 0.45, CPU.

Peers run in their own environments and are optional (a missing one is left out)::

    python benchmarks/predict_run.py --work /tmp/predict-bench --series photos-nosave --model gelan-s \\
        --rounds 3 --ul-python /tmp/venv-ul/bin/python \\
        --official /tmp/official-yolov9 --official-python /tmp/venv-official/bin/python --out runs.jsonl

``--before DIR`` adds yolov9k as it was (a folder holding an older ``yolov9k`` package, found first
on ``PYTHONPATH``; e.g. ``git archive <commit> yolov9k kernels`` with ``kernels`` moved into it and the
built ``_C`` copied in). ``--ours-python`` runs yolov9k with another interpreter (e.g. a venv with
the peers' torch and this tree installed). Each timed command appends one JSON line to ``--out``
(tool, series, model, torch versions, round, wall seconds, peak RSS of the process, exit code, the
speed line it printed); ``--summary`` prints the table of medians and ratios of such files. The
official tree is copied to ``<work>/official`` and patched there (``torch.load(...,
weights_only=False)`` in ``models/experimental.py``: torch >= 2.6 refuses its pickled checkpoints
otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_data import make_photos, make_video  # noqa: E402

UL_CFG = {"gelan-s": "yolov9s.yaml", "gelan-c": "yolov9c.yaml", "gelan-m": "yolov9m.yaml"}
SERIES = ("photos-nosave", "photos-save", "video-nosave", "video-save")
COMMON = {"imgsz": 640, "conf": 0.25, "iou": 0.45}

# Runs in the ultralytics environment: its model at seed 0, calibrated like ours, saved as a checkpoint
# its ``yolo predict`` loads.
UL_WEIGHTS = r"""
import sys, cv2, numpy as np, torch
from ultralytics.nn.tasks import DetectionModel
cfg, image, bias, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
m = DetectionModel(cfg, nc=80, verbose=False).eval()
head = m.model[-1]
img = cv2.imread(image)
h, w = img.shape[:2]
r = 640 / max(h, w)
img = cv2.resize(img, (round(w * r), round(h * r)))
h, w = img.shape[:2]
img = cv2.copyMakeBorder(img, 0, -h % 32, 0, -w % 32, cv2.BORDER_CONSTANT, value=(114, 114, 114))
x = torch.from_numpy(img[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255
outs = []
hooks = [s[-1].register_forward_hook(lambda mod, i, o: outs.append(o)) for s in head.cv3]
with torch.no_grad():
    for s in head.cv3:
        s[-1].bias.zero_()
    m(x)
    std = torch.cat([o.flatten() for o in outs]).std().item()
    for s in head.cv3:
        s[-1].weight.mul_(1 / std)
        s[-1].bias.fill_(bias)
for hk in hooks:
    hk.remove()
m.names = {i: f"class{i}" for i in range(80)}
m.args = {"imgsz": 640}
torch.save({"model": m, "train_args": {}, "epoch": -1, "date": None, "version": "8"}, out)
"""

# Runs in the official environment (cwd: its tree): the official model with our state dict, pickled
# the way its train.py saves checkpoints.
OFFICIAL_WEIGHTS = r"""
import sys, torch
sys.path.insert(0, ".")
from models.yolo import DetectionModel
cfg, state, out = sys.argv[1:4]
m = DetectionModel(cfg, ch=3, nc=80)
m.load_state_dict(torch.load(state, map_location="cpu"), strict=True)
m.names = {i: f"class{i}" for i in range(80)}
torch.save({"model": m, "epoch": -1}, out)
"""

UL_ENTRY = (
    "import sys; from ultralytics.cfg import entrypoint; sys.argv = ['yolo'] + sys.argv[1:]; entrypoint()"
)
SPEED = re.compile(r"^Speed:.*$", re.M)


def calibrated_model(model_name: str, image: Path, bias: float) -> dict:
    """Our model at seed 0 with its class logits scaled to unit std on ``image`` and bias ``bias``."""
    from yolov9k.api.predict import prepare_image
    from yolov9k.data.images import read_image
    from yolov9k.models import build_model

    torch.manual_seed(0)
    m = build_model(model_name, num_classes=80).eval()
    chw, _ = prepare_image(read_image(image), COMMON["imgsz"], 32)
    with torch.no_grad():
        for s in m.head.cv3:
            s[-1].bias.zero_()
        maps = m.forward_main(torch.from_numpy(chw)[None].float() / 255)
        std = torch.cat([f[:, m.head.reg_max * 4 :].flatten() for f in maps]).std().item()
        for s in m.head.cv3:
            s[-1].weight.mul_(1 / std)
            s[-1].bias.fill_(bias)
    m.names = {i: f"class{i}" for i in range(80)}
    return m


def official_tree(src: Path, work: Path) -> Path:
    """A patched copy of the official tree under ``work`` (made once)."""
    dst = work / "official"
    if not dst.exists():
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".git", "runs"))
        exp = dst / "models" / "experimental.py"
        text = exp.read_text()
        old = "torch.load(attempt_download(w), map_location='cpu')"
        exp.write_text(text.replace(old, old[:-1] + ", weights_only=False)"))
    return dst


def make_weights(args: argparse.Namespace, image: Path) -> dict[str, Path]:
    """Weight files per tool for ``args.model`` (made once under ``<work>/weights``)."""
    from yolov9k.checkpoint import save_checkpoint

    folder = args.work / "weights"
    folder.mkdir(parents=True, exist_ok=True)
    tag = f"{args.model}_bias{args.cls_bias:g}"
    out: dict[str, Path] = {}
    if args.official:
        off = folder / f"{tag}_official.pt"
        if not off.exists():
            state = folder / f"{tag}_state.pt"
            torch.save(calibrated_model(args.model, image, args.cls_bias).state_dict(), state)
            cfg = f"models/detect/{args.model}.yaml"
            cmd = [args.official_python, "-c", OFFICIAL_WEIGHTS, cfg, str(state), str(off)]
            subprocess.run(cmd, cwd=official_tree(args.official, args.work), check=True, capture_output=True)
        out["official"] = out["yolov9k"] = off
    else:
        ours = folder / f"{tag}_yolov9k.pt"
        if not ours.exists():
            save_checkpoint(ours, calibrated_model(args.model, image, args.cls_bias))
        out["yolov9k"] = ours
    if args.ul_python:
        ul = folder / f"{tag}_ultralytics.pt"
        if not ul.exists():
            cmd = [
                args.ul_python,
                "-c",
                UL_WEIGHTS,
                UL_CFG[args.model],
                str(image),
                str(args.cls_bias),
                str(ul),
            ]
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "YOLO_OFFLINE": "1"})
        out["ultralytics"] = ul
    return out


def command(tool: str, args: argparse.Namespace, weights: Path, source: Path, save: bool, out: Path):
    """(argv, cwd, env) of one tool's predict command."""
    imgsz, conf, iou = COMMON["imgsz"], COMMON["conf"], COMMON["iou"]
    if tool in ("yolov9k", "yolov9k-before"):
        python = args.ours_python or sys.executable
        argv = [python, "-m", "yolov9k", "predict", "--model", str(weights), "--source", str(source)]
        argv += ["--imgsz", str(imgsz), "--conf", str(conf), "--iou", str(iou), "--device", "cpu"]
        argv += ["--save", str(save).lower(), "--project", str(out), "--name", "r"]
        before = {**os.environ, "PYTHONPATH": str(args.before)} if tool == "yolov9k-before" else None
        # another interpreter imports its installed yolov9k, not this tree's (cwd is on sys.path for -m)
        return argv, args.work if args.ours_python else None, before
    if tool == "ultralytics":
        argv = [args.ul_python, "-c", UL_ENTRY, "predict", f"model={weights}", f"source={source}"]
        argv += [f"imgsz={imgsz}", f"conf={conf}", f"iou={iou}", "device=cpu", f"save={save}"]
        argv += [f"project={out}", "name=r", "exist_ok=True"]
        return argv, None, {**os.environ, "YOLO_OFFLINE": "1"}
    argv = [args.official_python, "detect.py", "--weights", str(weights), "--source", str(source)]
    argv += ["--imgsz", str(imgsz), "--conf-thres", str(conf), "--iou-thres", str(iou), "--device", "cpu"]
    argv += ["--project", str(out), "--name", "r", "--exist-ok"] + ([] if save else ["--nosave"])
    return argv, official_tree(args.official, args.work), None


def timed(argv: list[str], cwd: Path | None, env: dict | None, timeout: float, log: Path) -> dict:
    """Wall seconds, peak RSS (MB), exit code and the speed line of one command (output in ``log``)."""
    with open(log, "w") as f:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
        while True:  # reaped here, not by Popen, to read the child's own resource usage
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - t0 > timeout:
                proc.kill()
            time.sleep(0.02)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    speed = SPEED.findall(text)
    return {
        "wall_s": round(wall, 3),
        "rc": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "speed": speed[-1] if speed else None,
        "tail": None if proc.returncode == 0 else text[-2000:],
    }


def run_series(args: argparse.Namespace) -> None:
    data = args.work / "data"
    photos = make_photos(data / "photos", args.photos)
    video = make_video(data / "video.mp4", args.frames)
    weights = make_weights(args, sorted(photos.glob("*.jpg"))[0])
    if args.before:
        weights["yolov9k-before"] = weights["yolov9k"]
    names = ("yolov9k", "yolov9k-before", "ultralytics", "official")
    tools = [t for t in names if t in weights and t in args.tools]
    kind, mode = args.series.split("-")
    source, save = (photos if kind == "photos" else video), mode == "save"
    info = {"machine": machine(), "commit": commit(), "series": args.series, "model": args.model}
    info["torch"] = {t: torch_version(args.ours_python or sys.executable) for t in tools if t == "yolov9k"}
    if args.ul_python and "ultralytics" in tools:
        info["torch"]["ultralytics"] = torch_version(args.ul_python)
    if args.official and "official" in tools:
        info["torch"]["official"] = torch_version(args.official_python)
    for r in range(args.first_round, args.first_round + args.rounds):
        for tool in tools[r % len(tools) :] + tools[: r % len(tools)]:
            out = args.work / "runs" / tool
            shutil.rmtree(out, ignore_errors=True)
            argv, cwd, env = command(tool, args, weights[tool], source, save, out)
            log = args.work / f"{tool}.log"
            rec = {**info, "tool": tool, "round": r, **timed(argv, cwd, env, args.timeout, log)}
            print(json.dumps({k: v for k, v in rec.items() if k != "tail"}), flush=True)
            if rec["rc"] != 0:
                print(rec["tail"], file=sys.stderr)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            shutil.rmtree(out, ignore_errors=True)


def torch_version(python: str) -> str:
    """``torch.__version__`` in the environment of ``python``."""
    r = subprocess.run(
        [python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    )
    return r.stdout.strip() or "?"


def machine() -> str:
    cpu = "?"
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}"


def commit() -> str:
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=root, capture_output=True, text=True)
    return r.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def summary(paths: list[Path]) -> str:
    """Markdown table: median wall per (series, model, tool), and each peer's median over ours (the
    ratio of medians; in brackets the range of the per-round ratios, rounds paired by index)."""
    recs = [json.loads(ln) for p in paths for ln in p.read_text().splitlines() if ln.strip()]
    groups: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for r in recs:
        if r["rc"] == 0:
            groups.setdefault((r["series"], r["model"]), {}).setdefault(r["tool"], {})[r["round"]] = r[
                "wall_s"
            ]
    lines = ["| series | model | yolov9k s | before s | ultralytics s | official s | before / yolov9k "]
    lines[0] += "| ultralytics / yolov9k | official / yolov9k | rounds |"
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for (series, model), by in sorted(groups.items()):
        med = {t: statistics.median(v.values()) for t, v in by.items()}
        tools = ("yolov9k", "yolov9k-before", "ultralytics", "official")
        cells = [f"{med[t]:.1f}" if t in med else "-" for t in tools]
        for peer in tools[1:]:
            if peer not in med or "yolov9k" not in med:
                cells.append("-")
                continue
            pairs = [by[peer][i] / by["yolov9k"][i] for i in by[peer] if i in by["yolov9k"]]
            cells.append(f"{med[peer] / med['yolov9k']:.2f}x ({min(pairs):.2f}-{max(pairs):.2f})")
        n = min(len(v) for v in by.values())
        lines.append(f"| {series} | {model} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/predict-bench"), help="data, weights and runs")
    p.add_argument("--series", choices=SERIES, default="photos-nosave")
    p.add_argument("--model", choices=tuple(UL_CFG), default="gelan-s")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--first-round", type=int, default=0, help="index of the first round (splits a series)")
    p.add_argument(
        "--tools", default="yolov9k,yolov9k-before,ultralytics,official", help="comma-separated subset"
    )
    p.add_argument("--photos", type=int, default=100)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--cls-bias", type=float, default=-5.0)
    p.add_argument(
        "--ours-python", default=None, help="python that runs yolov9k (default: this one), e.g. another torch"
    )
    p.add_argument("--ul-python", default=None, help="python of an environment with ultralytics")
    p.add_argument("--official", type=Path, default=None, help="a WongKinYiu/yolov9 work tree")
    p.add_argument("--official-python", default=None, help="python that runs the official code")
    p.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a folder holding an older yolov9k package: tool yolov9k-before",
    )
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, default=Path("predict_runs.jsonl"))
    p.add_argument("--summary", type=Path, nargs="*", help="print the table of these JSONL files and exit")
    args = p.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    if args.ul_python and not Path(args.ul_python).exists():
        print(f"no {args.ul_python}: ultralytics left out", file=sys.stderr)
        args.ul_python = None
    if (
        args.official
        and not (args.official / "detect.py").exists()
        or (args.official and not args.official_python)
    ):
        print("no official tree / python: detect.py left out", file=sys.stderr)
        args.official = None
    args.tools = args.tools.split(",")
    run_series(args)


if __name__ == "__main__":
    main()
