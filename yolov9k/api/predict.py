"""``yolov9k.predict``: detections on images, folders, globs and videos, with annotated, txt and JSON output.

A run is a pipeline of three stages:

1. **prepare** (:func:`_prepare`, before any image is read): options checked, sources listed, the
   model loaded, fused and copied once per worker, the output folder made.
2. **per chunk** (:func:`_infer_chunk`, in a worker thread; up to ``batch`` consecutive frames):
   decode; letterbox (long side resized to ``imgsz`` as the validation loader does, then centred
   padding to the next multiple of the stride, as both peers pad: not to a square); one forward pass
   per run of same-shape frames; NMS for the batch (``postprocess_fixed``: no host sync on CUDA); boxes
   mapped back to original-image pixels for the batch; annotated images and label files written.
3. **in order** (:func:`_finish`, in the calling thread): video frames appended, predictions.json
   rows, the progress line, each result yielded; at the end the speed line.

Workers (:class:`Plan`): on CPU two, each running whole images on half the threads, the model in
channels_last (on a 2-core AMD EPYC whose ATen kernels are AVX-512: 2.9 images/s NCHW on two
threads, 4.4 channels_last, 6.6 with two one-thread workers; not measured on an AVX2-only CPU:
``benchmarks/RESULTS.md``, issue 21), the 1x1 convs through oneDNN (ATen's own one-thread path is
slower there: gelan-c 2.23 vs 2.09 images/s); OpenCV and torch release the GIL, so one worker decodes and
annotates while the other runs its forward pass. On CUDA two workers, each on its own stream with
pinned input buffers, 8 images per batch and fp16 by default. At most ``workers + 1`` chunks are in
flight, so memory stays bounded however long the input (``stream=True`` keeps no results either).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from yolov9k.api.annotate import class_name, draw_detections
from yolov9k.api.model_source import LOGGER, cpu_workers, inference_copies, resolve_model
from yolov9k.api.outputs import PredictOutputs, json_row, txt_lines
from yolov9k.api.sources import Frame, collect_sources, iter_frames, load
from yolov9k.data.geometry import letterbox, resize_long_side, scale_boxes
from yolov9k.data.splits import round_imgsz
from yolov9k.errors import ConfigError
from yolov9k.io.opencv import printable
from yolov9k.ops.nms import postprocess_fixed
from yolov9k.options import check_options
from yolov9k.options.verbs import PREDICT
from yolov9k.run_setup import run_dir, select_device

__all__ = ["predict", "prepare_image", "letterbox_image", "to_original", "PredictResults", "PredictStream"]
__all__ += ["Plan", "plan_for", "run_cli"]

RatioPad = tuple[tuple[float, float], tuple[float, float]]


# --------------------------------------------------------------------------------------------------
# geometry: the network image and back
# --------------------------------------------------------------------------------------------------


def letterbox_image(img: np.ndarray, imgsz: int, stride: int | None = None) -> tuple[np.ndarray, RatioPad]:
    """Resize the long side to ``imgsz`` (as validation does) and pad with grey 114, centred.

    Args:
        img: (H0, W0, 3) uint8 BGR.
        imgsz: long side in pixels (a multiple of the model stride).
        stride: pad each side only to the next multiple of ``stride`` (what predict does); None pads
            to ``imgsz`` x ``imgsz`` (the square of validation).
    Returns:
        (boxed, ratio_pad): (H, W, 3) uint8 BGR, and ``((gain_h, gain_w), (pad_w, pad_h))`` such that
        a point of the original maps to ``(x0 * gain_w + pad_w, y0 * gain_h + pad_h)``.
    """
    h0, w0 = img.shape[:2]
    resized = resize_long_side(img, imgsz)
    h1, w1 = resized.shape[:2]
    auto = stride is not None
    boxed, _, pad = letterbox(resized, (imgsz, imgsz), auto=auto, scaleup=False, stride=stride or 32)
    return boxed, ((h1 / h0, w1 / w0), pad)


def prepare_image(img: np.ndarray, imgsz: int, stride: int | None = None) -> tuple[np.ndarray, RatioPad]:
    """One BGR image -> (3, H, W) uint8 RGB network input and its ratio_pad (see :func:`letterbox_image`;
    stride None: the ``imgsz`` square of validation)."""
    boxed, ratio_pad = letterbox_image(img, imgsz, stride)
    return np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1)), ratio_pad


def to_original(
    boxes: torch.Tensor, imgsz: int | tuple[int, int], shape0: tuple[int, int], ratio_pad: RatioPad
) -> torch.Tensor:
    """Map xyxy boxes (n, 4) from the network image back to the original image (a copy, clipped)."""
    shape = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    return scale_boxes(shape, boxes[:, :4].clone().float(), shape0, ratio_pad)


def _to_original_batch(
    dets: torch.Tensor, ratio_pads: Sequence[RatioPad], shapes0: Sequence[tuple[int, int]]
):
    """:func:`to_original` for a batch at once: dets (B, n, >=4) -> xyxy (B, n, 4) clipped, same ops."""
    gains = [(gw, gh, gw, gh) for (gh, gw), _ in ratio_pads]
    pads = [(pw, ph, pw, ph) for _, (pw, ph) in ratio_pads]
    limits = [(w, h, w, h) for h, w in shapes0]
    gain, pad, limit = (
        torch.tensor(v, dtype=torch.float32, device=dets.device)[:, None] for v in (gains, pads, limits)
    )
    return torch.minimum(((dets[..., :4].float() - pad) / gain).clamp_(min=0), limit)


# --------------------------------------------------------------------------------------------------
# how a run executes
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a run executes, chosen from the device (not user options; benchmarks vary it).

    Attributes: workers (threads running chunks), threads (torch threads per worker; None: leave
    as they are), batch (frames per chunk), dtype (model and input), channels_last (NHWC model),
    square (letterbox to ``imgsz`` x ``imgsz`` instead of the stride: validation's shape), onednn_1x1
    (1x1 convs through oneDNN on CPU: ``model_source.OneDNNConv2d``).
    """

    workers: int
    threads: int | None
    batch: int
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    square: bool = False
    onednn_1x1: bool = False


def plan_for(device: torch.device, half: bool | None = None, batch: int | None = None) -> Plan:
    """The default :class:`Plan` on ``device`` (see the module docstring for the figures behind it)."""
    if device.type == "cuda":
        return Plan(2, None, batch or 8, torch.float32 if half is False else torch.float16)
    workers, threads = cpu_workers(torch.get_num_threads())
    return Plan(workers, threads, batch or 1, torch.float32, channels_last=True, onednn_1x1=True)


@dataclass
class _Stats:
    """Per-stage time sums (seconds) over the frames done, and the network input shapes."""

    frames: int = 0
    pre: float = 0.0
    inference: float = 0.0
    post: float = 0.0
    save: float = 0.0
    shapes: Counter = field(default_factory=Counter)
    start: float = field(default_factory=time.perf_counter)

    def speed(self) -> dict[str, float]:
        n = max(self.frames, 1)
        keys = ("preprocess", "inference", "postprocess", "save")
        return {k: 1e3 * v / n for k, v in zip(keys, (self.pre, self.inference, self.post, self.save))}


@dataclass
class _Run:
    """One prediction run, prepared: everything the stages read (workers only read it)."""

    items: list
    device: torch.device
    plan: Plan
    models: queue.SimpleQueue
    stride: int
    imgsz: int
    names: dict[int, str]
    nms: dict[str, Any]
    vid_stride: int
    outputs: PredictOutputs
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: _Stats = field(default_factory=_Stats)
    speed: dict[str, float] = field(default_factory=dict)
    local: threading.local = field(default_factory=threading.local)

    def init_worker(self) -> None:
        """Worker thread start: its own model copy, torch threads and CUDA stream."""
        self.local.model = self.models.get()
        if self.plan.threads is not None:
            torch.set_num_threads(self.plan.threads)
        self.local.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def stream_context(self) -> contextlib.AbstractContextManager:
        stream = self.local.stream
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


@dataclass
class _Task:
    frame: Frame
    stem: str


@dataclass
class _Done:
    """A frame after its chunk: ``result`` (None: skipped, ``frame.error`` says why), the annotated
    video frame to append, the seconds of each stage and the network input shape."""

    frame: Frame
    stem: str
    result: dict[str, Any] | None = None
    annotated: np.ndarray | None = None
    times: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    shape: tuple[int, ...] = ()


# --------------------------------------------------------------------------------------------------
# stage 1: prepare
# --------------------------------------------------------------------------------------------------


def _prepare(model: nn.Module | str | os.PathLike, source: Any, **kw: Any) -> _Run:
    """Check everything and load the model before any image is read (the arguments of :func:`predict`)."""
    check_options(PREDICT, {k: v for k, v in kw.items() if k not in ("device", "plan")})
    dev = select_device(kw["device"])
    if kw["half"] and dev.type != "cuda":
        raise ConfigError("half=True (fp16 inference) needs a CUDA device")
    items = collect_sources(source)
    net = resolve_model(model, dev)
    stride = int(max(float(s) for s in net.stride))
    plan = kw.get("plan") or plan_for(dev, kw["half"], kw["batch"])
    models: queue.SimpleQueue = queue.SimpleQueue()
    for m in inference_copies(
        net, plan.workers, plan.dtype, plan.channels_last, not isinstance(model, nn.Module), plan.onednn_1x1
    ):
        models.put(m)
    save, save_txt, save_json = kw["save"], kw["save_txt"], kw["save_json"]
    save_dir = run_dir(kw["project"], "predict", kw["name"]) if (save or save_txt or save_json) else None
    return _Run(
        items=items,
        device=dev,
        plan=plan,
        models=models,
        stride=stride,
        imgsz=round_imgsz(kw["imgsz"], stride, LOGGER.warning),
        names={int(k): str(v) for k, v in dict(net.names).items()},
        nms={k: kw[k] for k in ("conf", "iou", "max_det", "classes", "agnostic")},
        vid_stride=kw["vid_stride"],
        outputs=PredictOutputs(save_dir, save, save_txt, save_json),
    )


# --------------------------------------------------------------------------------------------------
# stage 2: one chunk of frames, in a worker thread
# --------------------------------------------------------------------------------------------------


def _input(run: _Run, images: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, 3, H, W) network input, RGB 0-1, from letterboxed BGR uint8 images of one shape (pinned
    host buffer and an asynchronous copy on CUDA; channels_last when the plan says so)."""
    cuda = run.device.type == "cuda"
    host = torch.empty((len(images), *images[0].shape), dtype=torch.uint8, pin_memory=cuda)
    buf = host.numpy()
    for i, im in enumerate(images):
        cv2.cvtColor(im, cv2.COLOR_BGR2RGB, dst=buf[i])
    x = host.to(run.device, non_blocking=True) if cuda else host
    x = x.permute(0, 3, 1, 2).to(run.plan.dtype).div_(255)
    return x if run.plan.channels_last else x.contiguous()


def _same_shape_runs(shapes: Sequence[tuple[int, ...]]) -> list[list[int]]:
    """Indices grouped into runs of consecutive equal shapes."""
    runs: list[list[int]] = []
    for i, s in enumerate(shapes):
        if runs and shapes[runs[-1][-1]] == s:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _detect(run: _Run, boxed: list[np.ndarray], pads: list[RatioPad], shapes0: list[tuple[int, int]]):
    """Forward + NMS + mapping back for frames of one shape: (B, max_det, 6) host tensor, counts (B,),
    and the seconds of inference and of post-processing."""
    t0 = time.perf_counter()
    y = run.local.model(_input(run, boxed))
    t1 = time.perf_counter()
    nms = run.nms
    dets, counts = postprocess_fixed(
        y, nms["conf"], nms["iou"], max_det=nms["max_det"], classes=nms["classes"], agnostic=nms["agnostic"]
    )
    dets = torch.cat([_to_original_batch(dets, pads, shapes0), dets[..., 4:].float()], -1)
    dets, counts = dets.cpu(), counts.cpu()  # the one host sync of the batch
    return dets, counts, t1 - t0, time.perf_counter() - t1


def _result(run: _Run, frame: Frame, det: torch.Tensor) -> dict[str, Any]:
    d = det.numpy()
    cls = d[:, 5].astype(np.int64)
    return {
        "path": frame.path,
        "frame": frame.frame,
        "shape": (int(frame.image.shape[0]), int(frame.image.shape[1])),
        "boxes": d[:, :4].astype(np.float32),
        "scores": d[:, 4].astype(np.float32),
        "classes": cls,
        "labels": [class_name(run.names, int(c)) for c in cls],
        "names": run.names,
    }


def _save(run: _Run, done: _Done) -> None:
    """Annotate and write one frame's image and labels (video frames are appended later, in order)."""
    out, frame, r = run.outputs, done.frame, done.result
    if out.save:
        img = draw_detections(
            frame.image, r["boxes"], r["scores"], r["classes"], run.names, inplace=frame.kind != "array"
        )
        if frame.kind == "video":
            done.annotated = img
        else:
            out.write_image(frame, done.stem, img)
    if out.save_txt:
        out.write_labels(frame, done.stem, txt_lines(r["boxes"], r["scores"], r["classes"], r["shape"]))


def _infer_chunk(run: _Run, tasks: list[_Task]) -> list[_Done]:
    """Decode, letterbox, detect and save a chunk of consecutive frames (in a worker thread)."""
    with torch.inference_mode(), run.stream_context():
        t0 = time.perf_counter()
        done = [_Done(load(t.frame), t.stem) for t in tasks]
        ok = [d for d in done if d.frame.image is not None]
        boxed = [
            letterbox_image(d.frame.image, run.imgsz, None if run.plan.square else run.stride) for d in ok
        ]
        pre = (time.perf_counter() - t0) / max(len(ok), 1)
        for group in _same_shape_runs([b.shape for b, _ in boxed]):
            sel = [ok[i] for i in group]
            shapes0 = [d.frame.image.shape[:2] for d in sel]
            dets, counts, t_inf, t_post = _detect(
                run, [boxed[i][0] for i in group], [boxed[i][1] for i in group], shapes0
            )
            for d, det, n in zip(sel, dets, counts.tolist()):
                t = time.perf_counter()
                d.result = _result(run, d.frame, det[:n])
                d.shape = (len(group), 3, *boxed[group[0]][0].shape[:2])
                t_res = time.perf_counter() - t
                _save(run, d)
                t_save = time.perf_counter() - t - t_res
                d.times = (pre, t_inf / len(group), t_post / len(group) + t_res, t_save)
                d.frame = replace(d.frame, image=None)  # the result keeps no pixels
    return done


# --------------------------------------------------------------------------------------------------
# stage 3: in order, in the calling thread
# --------------------------------------------------------------------------------------------------


def _chunks(run: _Run) -> Iterator[list[_Task]]:
    """Consecutive frames in chunks of up to ``plan.batch``, each with its output stem (source order)."""
    chunk: list[_Task] = []
    for frame in iter_frames(run.items, run.vid_stride):
        chunk.append(_Task(frame, run.outputs.names.stem(frame)))
        if len(chunk) >= run.plan.batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _progress(d: _Done, classes: np.ndarray, names: dict[int, str]) -> str:
    f = d.frame
    where = f"image {f.item + 1}/{f.items}" if f.frame is None else f"video {f.item + 1}/{f.items} "
    if f.frame is not None:
        where += f"(frame {f.frame + 1}/{f.frames})" if f.frames else f"(frame {f.frame + 1})"
    if len(classes):
        ids, counts = np.unique(classes, return_counts=True)
        found = ", ".join(f"{n} {class_name(names, int(i))}" for i, n in zip(ids, counts))
    else:
        found = "no detections"
    ms = 1e3 * sum(d.times[:3])
    return f"{where} {printable(f.path)}: {d.shape[2]}x{d.shape[3]} {found}, {ms:.1f}ms"


def _finish(run: _Run, done: list[_Done]) -> Iterator[dict[str, Any]]:
    """Skips counted, video frames and JSON rows written, progress logged, results yielded (in order)."""
    for d in done:
        if d.result is None:
            why = d.frame.error or f"{d.frame.path}: unreadable"
            run.skipped.append((d.frame.path, why))
            LOGGER.warning("skipped %s", printable(why))
            continue
        t = time.perf_counter()
        if d.annotated is not None:
            run.outputs.write_video_frame(d.frame, d.stem, d.annotated)
        run.outputs.add_json(d.result)
        s = run.stats
        s.frames += 1
        s.pre, s.inference, s.post = s.pre + d.times[0], s.inference + d.times[1], s.post + d.times[2]
        s.save += d.times[3] + time.perf_counter() - t
        s.shapes[d.shape] += 1
        if LOGGER.isEnabledFor(logging.INFO):
            LOGGER.info("%s", _progress(d, d.result["classes"], run.names))
        yield d.result


def _log_speed(run: _Run) -> None:
    s, p = run.stats, run.plan
    run.speed.update(s.speed())
    wall = time.perf_counter() - s.start
    shape = s.shapes.most_common(1)[0][0] if s.shapes else (p.batch, 3, run.imgsz, run.imgsz)
    mixed = f" ({len(s.shapes)} shapes)" if len(s.shapes) > 1 else ""
    threads = f" x {p.threads} thread{'s' * (p.threads != 1)}" if p.threads else ""
    where = f"; results in {printable(run.outputs.save_dir)}" if run.outputs.save_dir else ""
    LOGGER.info(
        "Speed: %.1fms pre-process, %.1fms inference, %.1fms post-process, %.1fms save per image "
        "at shape %s%s; %d image(s)/frame(s) in %.1f s (%.1f/s, %d worker(s)%s), %d skipped%s",
        *run.speed.values(), tuple(shape), mixed, s.frames, wall, s.frames / max(wall, 1e-9),
        p.workers, threads, len(run.skipped), where,
    )  # fmt: skip


def _run_frames(run: _Run) -> Iterator[dict[str, Any]]:
    """The pipeline: chunks to the workers, at most ``workers + 1`` in flight, results in source order."""
    pool = ThreadPoolExecutor(
        run.plan.workers, thread_name_prefix="yolov9k-predict", initializer=run.init_worker
    )
    pending: deque = deque()
    ok = False
    try:
        for chunk in _chunks(run):
            pending.append(pool.submit(_infer_chunk, run, chunk))
            while len(pending) > run.plan.workers:
                yield from _finish(run, pending.popleft().result())
        while pending:
            yield from _finish(run, pending.popleft().result())
        ok = True
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        run.outputs.close(ok)
    _log_speed(run)


# --------------------------------------------------------------------------------------------------
# the API
# --------------------------------------------------------------------------------------------------


class PredictResults(list):
    """The per-image result dicts (a list), plus ``save_dir``, ``skipped`` [(path, reason)] and
    ``speed`` (ms per image: preprocess, inference, postprocess, save)."""

    def __init__(self) -> None:
        super().__init__()
        self.save_dir: Path | None = None
        self.skipped: list[tuple[str, str]] = []
        self.speed: dict[str, float] = {}


class PredictStream(Iterator[dict[str, Any]]):
    """``predict(..., stream=True)``: the results one at a time as they are done; none are kept.

    ``save_dir``, ``skipped`` (grows as skips happen) and ``speed`` (filled at the end) as in
    :class:`PredictResults`. ``close()`` (or leaving a ``with`` block) stops the run early: files of
    frames already done stay, an unfinished video and predictions.json are dropped.
    """

    def __init__(self, run: _Run) -> None:
        self._frames = _run_frames(run)
        self.save_dir, self.skipped, self.speed = run.outputs.save_dir, run.skipped, run.speed

    def __next__(self) -> dict[str, Any]:
        return next(self._frames)

    def close(self) -> None:
        self._frames.close()

    def __enter__(self) -> PredictStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def predict(
    model: nn.Module | str | os.PathLike,
    source: Any,
    imgsz: int = 640,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: Sequence[int] | None = None,
    max_det: int = 300,
    device: str | int | torch.device | None = None,
    half: bool | None = None,
    save: bool = True,
    save_txt: bool = False,
    save_json: bool = False,
    project: str | os.PathLike | None = None,
    name: str | None = None,
    batch: int | None = None,
    agnostic: bool = False,
    vid_stride: int = 1,
    stream: bool = False,
) -> PredictResults | PredictStream:
    """Detect objects in images and videos.

    Args:
        model: a DetectionModel (not modified: a fused copy runs), a checkpoint file (official or
            yolov9k) or a zoo name.
        source: image / video file, folder, glob, .txt list of paths, BGR array, or a list of these.
        imgsz: long side of the network input in pixels (rounded up to a multiple of the stride).
        conf: score threshold. iou: NMS IoU threshold. classes: keep only these class ids.
        max_det: detections per image. agnostic: NMS across classes.
        device: "cpu", "cuda", "0", ... (default: CUDA when available).
        half: fp16 inference, CUDA only (None: fp16 on CUDA, fp32 on CPU).
        save, save_txt, save_json: annotated images / videos, ``labels/*.txt`` (cls cx cy w h conf,
            normalized), ``predictions.json`` (xyxy pixels of the original), in ``project/name``
            (default ``runs/predict/exp``, numbered when taken); names by ``yolov9k.api.outputs``.
        batch: frames per forward pass (None: 1 on CPU, 8 on CUDA). vid_stride: every n-th frame.
        stream: return a :class:`PredictStream` (results one at a time, none kept) instead of a list.
    Returns:
        PredictResults (or PredictStream): one dict per image or video frame read: ``path``,
        ``frame`` (None for images), ``shape`` (h, w), ``boxes`` (n, 4) float32 xyxy pixels of the
        original image, ``scores`` (n,) float32, ``classes`` (n,) int64, ``labels``, ``names``.
        Unreadable inputs are skipped, logged and listed in ``.skipped``.
    Raises:
        OptionError: an argument out of its range (``docs/options.md``), before any work.
        FileNotFoundError: no source / model file. ValueError: bad arguments.
    """
    run = _prepare(
        model, source, imgsz=imgsz, conf=conf, iou=iou, classes=classes, max_det=max_det, device=device,
        half=half, save=save, save_txt=save_txt, save_json=save_json, project=project, name=name,
        batch=batch, agnostic=agnostic, vid_stride=vid_stride,
    )  # fmt: skip
    results = PredictStream(run)
    if stream:
        return results
    out = PredictResults()
    out.extend(results)
    out.save_dir, out.skipped, out.speed = results.save_dir, results.skipped, results.speed
    return out


def run_cli(stream: bool = False, **kwargs: Any) -> PredictStream:
    """``yolov9k predict``: the run as a stream (memory bounded however long the input); with
    ``stream`` each result is printed as one JSON line on stdout (the summary then goes to stderr)."""
    results = predict(stream=True, **kwargs)
    n = 0
    for r in results:
        n += 1
        if stream:
            print(json.dumps(json_row(r)), flush=True)
    if results.skipped:
        print(f"skipped {len(results.skipped)} unreadable input(s):", file=sys.stderr)
        for _, why in results.skipped:
            print(f"  {printable(why)}", file=sys.stderr)
    where = f", results in {printable(results.save_dir)}" if results.save_dir else ""
    print(f"{n} image(s) done{where}", file=sys.stderr if stream else sys.stdout)
    return results
