"""``yolov9k.predict``: detections on images, folders, globs and videos, with annotated, txt and JSON output.

Images are prepared as the validation loader prepares them (long side resized to ``imgsz`` with the
same interpolation, then centred letterbox padding to ``imgsz`` x ``imgsz`` without upscaling), run
in batches, post-processed with ``yolov9k.ops`` (the official ``non_max_suppression``) and mapped
back to the pixels of the original image.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from yolov9k.api.annotate import class_name, draw_detections
from yolov9k.api.model_source import LOGGER, resolve_model
from yolov9k.api.sources import Frame, collect_sources, iter_frames
from yolov9k.data.geometry import letterbox, resize_long_side, scale_boxes
from yolov9k.data.splits import round_imgsz
from yolov9k.errors import ConfigError, OutputError
from yolov9k.io.files import disk_full_error
from yolov9k.ops import postprocess
from yolov9k.options import check_options
from yolov9k.options.verbs import PREDICT
from yolov9k.run_setup import run_dir, select_device

__all__ = ["predict", "prepare_image", "to_original", "PredictResults"]

RatioPad = tuple[tuple[float, float], tuple[float, float]]


def prepare_image(img: np.ndarray, imgsz: int) -> tuple[np.ndarray, RatioPad]:
    """One BGR image -> the network input, as validation prepares it.

    Args:
        img: (H0, W0, 3) uint8 BGR.
        imgsz: square network size in pixels (a multiple of the model stride).
    Returns:
        (chw, ratio_pad): (3, imgsz, imgsz) uint8 RGB, and ``((gain_h, gain_w), (pad_w, pad_h))``
        such that a network pixel point is ``(x0 * gain_w + pad_w, y0 * gain_h + pad_h)``.
    """
    h0, w0 = img.shape[:2]
    resized = resize_long_side(img, imgsz)
    h1, w1 = resized.shape[:2]
    boxed, _, pad = letterbox(resized, (imgsz, imgsz), auto=False, scaleup=False)
    chw = np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
    return chw, ((h1 / h0, w1 / w0), pad)


def to_original(
    boxes: torch.Tensor, imgsz: int, shape0: tuple[int, int], ratio_pad: RatioPad
) -> torch.Tensor:
    """Map xyxy boxes (n, 4) from the network image back to the original image (a copy, clipped)."""
    return scale_boxes((imgsz, imgsz), boxes[:, :4].clone().float(), shape0, ratio_pad)


@dataclass
class _Pending:
    frame: Frame
    chw: np.ndarray
    ratio_pad: RatioPad


class PredictResults(list):
    """The per-image result dicts (a list), plus ``save_dir``, ``skipped`` [(path, reason)] and
    ``speed`` (ms per image: preprocess, inference, postprocess)."""

    def __init__(self) -> None:
        super().__init__()
        self.save_dir: Path | None = None
        self.skipped: list[tuple[str, str]] = []
        self.speed: dict[str, float] = {}


@dataclass
class _Writers:
    """Output files of one run."""

    save_dir: Path | None
    save: bool
    save_txt: bool
    used_names: set[str] = field(default_factory=set)
    image_names: dict[str, str] = field(default_factory=dict)
    videos: dict[str, cv2.VideoWriter] = field(default_factory=dict)

    def stem_for(self, path: str) -> str:
        """A unique output name per input path (two folders may hold the same file name)."""
        if path not in self.image_names:
            base = Path(path).name if not path.startswith("array") else f"{path}.png"
            name, n = base, 2
            while name in self.used_names:
                name = f"{Path(base).stem}_{n}{Path(base).suffix}"
                n += 1
            self.used_names.add(name)
            self.image_names[path] = name
        return self.image_names[path]

    def write(self, frame: Frame, annotated: np.ndarray | None, txt_lines: list[str]) -> None:
        assert self.save_dir is not None
        name = self.stem_for(frame.path)
        if self.save and annotated is not None:
            if frame.frame is None:
                out = self.save_dir / name
                if out.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"):
                    out = out.with_suffix(".png")
                if not cv2.imwrite(str(out), annotated):
                    raise OutputError(f"could not write {out}")
            else:
                self._video_writer(frame, name, annotated.shape).write(annotated)
        if self.save_txt:
            labels = self.save_dir / "labels"
            labels.mkdir(exist_ok=True)
            stem = Path(name).stem + ("" if frame.frame is None else f"_{frame.frame}")
            _write_text(labels / f"{stem}.txt", "".join(txt_lines))

    def _video_writer(self, frame: Frame, name: str, shape: tuple[int, ...]) -> cv2.VideoWriter:
        writer = self.videos.get(frame.path)
        if writer is None:
            for other in list(self.videos):  # videos come one after the other: close the finished ones
                self.videos.pop(other).release()
            out = self.save_dir / f"{Path(name).stem}.mp4"
            fourcc = cv2.VideoWriter_fourcc(*"mp4v")
            writer = cv2.VideoWriter(str(out), fourcc, frame.fps or 30.0, (shape[1], shape[0]))
            if not writer.isOpened():
                raise OutputError(f"could not open a video writer for {out}")
            self.videos[frame.path] = writer
        return writer

    def close(self) -> None:
        for w in self.videos.values():
            w.release()
        self.videos.clear()


def _txt_lines(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, shape0: tuple[int, int]
) -> list[str]:
    """YOLO label rows ``cls cx cy w h conf`` normalized to the original image."""
    h, w = shape0
    lines = []
    for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {s:.6f}\n")
    return lines


def _summary(classes: np.ndarray, names: dict[int, str]) -> str:
    if len(classes) == 0:
        return "no detections"
    ids, counts = np.unique(classes, return_counts=True)
    return ", ".join(f"{n} {class_name(names, int(i))}" for i, n in zip(ids, counts))


def predict(
    model: nn.Module | str | os.PathLike,
    source: Any,
    imgsz: int = 640,
    conf: float = 0.25,
    iou: float = 0.45,
    classes: Sequence[int] | None = None,
    max_det: int = 300,
    device: str | int | torch.device | None = None,
    half: bool = False,
    save: bool = True,
    save_txt: bool = False,
    save_json: bool = False,
    project: str | os.PathLike | None = None,
    name: str | None = None,
    batch: int = 8,
    agnostic: bool = False,
) -> PredictResults:
    """Detect objects in images and videos.

    Args:
        model: a DetectionModel, a checkpoint file (official or yolov9k) or a zoo name.
        source: image / video file, folder, glob, .txt list of paths, BGR array, or a list of these.
        imgsz: square inference size in pixels (rounded up to a multiple of the stride).
        conf: score threshold. iou: NMS IoU threshold. classes: keep only these class ids.
        max_det: detections per image. agnostic: NMS across classes.
        device: "cpu", "cuda", "0", ... (default: CUDA when available). half: fp16 inference (CUDA only).
        save: write annotated images (videos: an annotated .mp4) to ``project/name``.
        save_txt: write ``labels/<stem>.txt`` per image: ``cls cx cy w h conf`` normalized.
        save_json: write ``predictions.json`` with every detection in original-image pixels.
        project, name: output folder ``project/name``; project None = ``runs/predict``, name default
            "exp" (numbered when taken).
        batch: images per forward pass.
    Returns:
        PredictResults, a list with one dict per image or video frame read: ``path``, ``frame``
        (None for images), ``shape`` (h, w), ``boxes`` (n, 4) float32 xyxy pixels of the original
        image, ``scores`` (n,) float32, ``classes`` (n,) int64, ``labels`` (n names), ``names``
        (class id -> name). Unreadable inputs are skipped, logged and listed in ``.skipped``.
    Raises:
        OptionError: an argument out of its range (``docs/options.md``), before any work.
        FileNotFoundError: no source / model file. ValueError: bad arguments.
    """
    check_options(PREDICT, dict(
        imgsz=imgsz, conf=conf, iou=iou, classes=classes, max_det=max_det, half=half, save=save,
        save_txt=save_txt, save_json=save_json, project=project, name=name, batch=batch, agnostic=agnostic,
    ))  # fmt: skip
    dev = select_device(device)
    if half and dev.type != "cuda":
        raise ConfigError("half=True (fp16 inference) needs a CUDA device")
    items = collect_sources(source)
    net = resolve_model(model, dev)
    stride = int(max(float(s) for s in net.stride))
    imgsz = round_imgsz(imgsz, stride, LOGGER.warning)
    dtype = torch.float16 if half else torch.float32
    if half:  # never convert the caller's own model object
        net = (copy.deepcopy(net) if isinstance(model, nn.Module) else net).half()
    names = {int(k): str(v) for k, v in dict(net.names).items()}

    results = PredictResults()
    save_dir = run_dir(project, "predict", name) if (save or save_txt or save_json) else None
    results.save_dir = save_dir
    out = _Writers(save_dir, save, save_txt)
    times = np.zeros(3)
    pending: list[_Pending] = []

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        x = torch.from_numpy(np.stack([p.chw for p in pending])).to(dev, non_blocking=True)
        x = x.to(dtype) / 255.0
        t1 = time.perf_counter()
        with torch.inference_mode():
            y = net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t2 = time.perf_counter()
            dets = postprocess(y.float(), conf, iou, max_det=max_det, classes=classes, agnostic=agnostic)
        for p, det in zip(pending, dets):
            shape0 = p.frame.image.shape[:2]
            boxes = to_original(det[:, :4], imgsz, shape0, p.ratio_pad).cpu().numpy().astype(np.float32)
            scores = det[:, 4].cpu().numpy().astype(np.float32)
            cls = det[:, 5].cpu().numpy().astype(np.int64)
            results.append(
                {
                    "path": p.frame.path,
                    "frame": p.frame.frame,
                    "shape": (int(shape0[0]), int(shape0[1])),
                    "boxes": boxes,
                    "scores": scores,
                    "classes": cls,
                    "labels": [class_name(names, int(c)) for c in cls],
                    "names": names,
                }
            )
            if save_dir is not None and (save or save_txt):
                annotated = draw_detections(p.frame.image, boxes, scores, cls, names) if save else None
                out.write(p.frame, annotated, _txt_lines(boxes, scores, cls, shape0))
            where = p.frame.path if p.frame.frame is None else f"{p.frame.path} frame {p.frame.frame}"
            LOGGER.info("%s: %s", where, _summary(cls, names))
        t3 = time.perf_counter()
        times[:] += (t1 - t0, t2 - t1, t3 - t2)
        pending.clear()

    try:
        for frame in iter_frames(items):
            if frame.image is None:
                results.skipped.append((frame.path, frame.error or "unreadable"))
                LOGGER.warning("skipped %s", frame.error)
                continue
            t = time.perf_counter()
            chw, ratio_pad = prepare_image(frame.image, imgsz)
            times[0] += time.perf_counter() - t
            pending.append(_Pending(frame, chw, ratio_pad))
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        out.close()

    n = max(len(results), 1)
    results.speed = {k: float(1e3 * v / n) for k, v in zip(("preprocess", "inference", "postprocess"), times)}
    if save_json and save_dir is not None:
        _write_json(save_dir / "predictions.json", results)
    LOGGER.info(
        "%d image(s)/frame(s) done, %d skipped; per image: %.1f ms pre, %.1f ms inference, %.1f ms post%s",
        len(results),
        len(results.skipped),
        *results.speed.values(),
        f"; results in {save_dir}" if save_dir is not None else "",
    )
    return results


def _write_json(path: Path, results: Sequence[dict[str, Any]]) -> Path:
    """One JSON file: per image its path, frame, size and detections (xyxy pixels of the original)."""
    rows = []
    for r in results:
        rows.append(
            {
                "path": r["path"],
                "frame": r["frame"],
                "height": r["shape"][0],
                "width": r["shape"][1],
                "detections": [
                    {
                        "box": [round(float(v), 3) for v in b],
                        "score": round(float(s), 5),
                        "class": int(c),
                        "name": lab,
                    }
                    for b, s, c, lab in zip(r["boxes"], r["scores"], r["classes"], r["labels"])
                ],
            }
        )
    _write_text(path, json.dumps(rows, indent=1))
    return path


def _write_text(path: Path, text: str) -> None:
    """``path.write_text(text)``; a full disk raises ``OSError(ENOSPC)`` naming ``path``."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        full = disk_full_error(e, path)
        if full is None:
            raise
        raise full from e
