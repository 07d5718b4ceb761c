"""Where predict's time goes, and what each lever of issue 21 buys: in-process, one model, rounds alternating.

Two parts, both over the inputs of ``predict_data.py`` and the calibrated random model of
``predict_run.py`` (so that images have 10-35 detections):

* ``stages``: each step of predicting one photo timed alone, one after the other on one thread
  as a plain loop would run them: read (file bytes), decode, letterbox (resize + pad to the stride),
  input tensor, forward, NMS, boxes back to the original, annotate, encode (JPEG), write (atomic).
  Medians in ms per image, split by the photos' long side (640 / 1280).
* ``plans``: ``predict()`` over the same photos (or the video) under execution plans that switch
  one lever at a time: square letterbox -> stride padding, NCHW -> channels_last, one worker on
  every thread -> two workers on half each, batch sizes, 1x1 convs through oneDNN. Images per
  second, median over rounds.

    python benchmarks/predict_levers.py stages --model gelan-s
    python benchmarks/predict_levers.py plans --model gelan-s --photos 30 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_data import make_photos, make_video  # noqa: E402
from predict_run import calibrated_model  # noqa: E402

from yolov9k.api.annotate import draw_detections  # noqa: E402
from yolov9k.api.predict import Plan, PredictStream, _prepare, letterbox_image, to_original  # noqa: E402
from yolov9k.io.files import atomic_output  # noqa: E402
from yolov9k.ops.nms import postprocess  # noqa: E402


def stages(model: torch.nn.Module, photos: list[Path], channels_last: bool) -> dict[str, dict[str, float]]:
    """Median ms per step and long side, one photo at a time on the current thread."""
    net = model.fuse()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    names = dict(net.names)
    times: dict[str, dict[str, list[float]]] = {}
    out_dir = Path(tempfile.mkdtemp(prefix="predict-stages-"))

    def clock(step: str, side: str, fn, *a, **kw):
        t = time.perf_counter()
        r = fn(*a, **kw)
        times.setdefault(step, {}).setdefault(side, []).append(1e3 * (time.perf_counter() - t))
        return r

    with torch.inference_mode():
        for i, p in enumerate(photos):
            data = clock("read", "?", p.read_bytes)
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            side = str(max(img.shape[:2]))
            times["read"].setdefault(side, []).append(times["read"].pop("?")[0])
            img = clock("decode", side, cv2.imdecode, np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            boxed, ratio_pad = clock("letterbox", side, letterbox_image, img, 640, 32)

            def tensor(b):
                x = torch.from_numpy(cv2.cvtColor(b, cv2.COLOR_BGR2RGB)).permute(2, 0, 1)[None]
                x = x.float().div_(255)
                return x if channels_last else x.contiguous()

            x = clock("input tensor", side, tensor, boxed)
            y = clock("forward", side, net, x)
            det = clock("nms", side, postprocess, y, 0.25, 0.45)[0]
            boxes = clock("to original", side, to_original, det, boxed.shape[:2], img.shape[:2], ratio_pad)
            b, s, c = boxes.numpy(), det[:, 4].numpy(), det[:, 5].numpy().astype(np.int64)
            ann = clock("annotate", side, draw_detections, img, b, s, c, names, inplace=True)
            ok, buf = clock("encode jpg", side, cv2.imencode, ".jpg", ann)

            def write(data: bytes, path: Path) -> None:
                with atomic_output(path) as tmp:
                    tmp.write_bytes(data)

            clock("write", side, write, buf.tobytes(), out_dir / f"{i}.jpg")
            times.setdefault("detections", {}).setdefault(side, []).append(float(len(det)))
    return {k: {s: statistics.median(v[1:] or v) for s, v in sorted(by.items())} for k, by in times.items()}


PLANS = {
    "square nchw 1x2 b8 (before)": Plan(1, 2, 8, channels_last=False, square=True),
    "stride nchw 1x2 b8": Plan(1, 2, 8, channels_last=False),
    "stride nchw 1x2 b1": Plan(1, 2, 1, channels_last=False),
    "stride nhwc 1x2 b1": Plan(1, 2, 1, channels_last=True),
    "stride nhwc 1x2 b4": Plan(1, 2, 4, channels_last=True),
    "stride nhwc 2x1 b1 (default before 1x1 oneDNN)": Plan(2, 1, 1, channels_last=True),
    "stride nhwc 2x1 b4": Plan(2, 1, 4, channels_last=True),
    "stride nchw 2x1 b1": Plan(2, 1, 1, channels_last=False),
    "stride nhwc 1x2 b1 onednn1x1": Plan(1, 2, 1, channels_last=True, onednn_1x1=True),
    "stride nhwc 2x1 b1 onednn1x1 (default)": Plan(2, 1, 1, channels_last=True, onednn_1x1=True),
}


def plans(
    model: torch.nn.Module, source: Path | list[Path], rounds: int, names: list[str], save: bool
) -> dict:
    """Images per second of ``predict()`` under each plan, rounds alternating (order rotated)."""
    logging.getLogger("yolov9k").setLevel(logging.WARNING)
    rates: dict[str, list[float]] = {k: [] for k in names}
    project = Path(tempfile.mkdtemp(prefix="predict-levers-"))
    for r in range(rounds):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            kw = dict(imgsz=640, conf=0.25, iou=0.45, classes=None, max_det=300, device="cpu", half=None)
            kw.update(save=save, save_txt=False, save_json=False, project=project, name="x", batch=None)
            run = _prepare(model, source, agnostic=False, vid_stride=1, plan=PLANS[k], **kw)
            t = time.perf_counter()
            n = sum(1 for _ in PredictStream(run))
            rates[k].append(n / (time.perf_counter() - t))
            print(f"round {r} {k}: {rates[k][-1]:.2f} images/s", flush=True)
    return {
        k: {"median_per_s": statistics.median(v), "all": [round(x, 3) for x in v]} for k, v in rates.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("stages", "plans"))
    p.add_argument("--work", type=Path, default=Path("/tmp/predict-bench"))
    p.add_argument("--model", default="gelan-s")
    p.add_argument("--photos", type=int, default=30, help="photos used (the first n of the folder)")
    p.add_argument("--video", action="store_true", help="plans: the video instead of the photos")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--save", action="store_true", help="plans: write annotated outputs")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--plans", default=",".join(PLANS), help="comma-separated names of PLANS")
    p.add_argument("--channels-last", action="store_true", help="stages: NHWC model")
    p.add_argument("--out", type=Path, default=None, help="append the result as one JSON line")
    a = p.parse_args()
    folder = make_photos(a.work / "data" / "photos", max(a.photos, 100))
    photos = sorted(folder.glob("*.jpg"))[: a.photos]
    model = calibrated_model(a.model, photos[0], -5.0).eval()
    if a.part == "stages":
        res = stages(model, photos, a.channels_last)
        for k, v in res.items():
            print(f"{k:14s} " + "  ".join(f"{s}: {ms:7.2f}" for s, ms in v.items()))
    else:
        source = make_video(a.work / "data" / "video.mp4", a.frames) if a.video else photos
        res = plans(model, source, a.rounds, a.plans.split(","), a.save)
        for k, v in res.items():
            print(f"{k:32s} {v['median_per_s']:.2f} images/s  {v['all']}")
    if a.out:
        with open(a.out, "a") as f:
            record = {"part": a.part, "model": a.model, "video": a.video, "save": a.save, "result": res}
            f.write(
                json.dumps({**record, "torch": torch.__version__, "threads": torch.get_num_threads()}) + "\n"
            )


if __name__ == "__main__":
    main()
