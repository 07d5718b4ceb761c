"""The files of one prediction run: names that never collide, each file written atomically.

Naming rule (every input gets its own outputs):

* Each input gets a **stem**: its file name without the extension (``a`` for ``a.jpg``; ``array3``
  for the in-memory image at index 3). When an earlier input of the same kind (images and arrays, or
  videos: an image ``clip.png`` and a video's ``clip.mp4`` do not collide) already took that stem
  (compared case-insensitively, as macOS and Windows file systems compare names: ``a.jpg`` and
  ``a.png``, ``a.mpo`` and ``a.png``, ``a.jpg`` in two folders), or when the stem is a frame-label name
  of an earlier video (``clip_3`` after ``clip.mp4``) or the reverse, the input gets the first free
  ``<stem>_2``, ``<stem>_3``, ... (``<stem>-2``, ... for an image whose own stem is a video's: those
  would all be frame labels) and the log says so.
* Annotated image: ``<stem><ext>`` with the input's extension when OpenCV writes that format (.jpg,
  .jpeg, .png, .bmp, .webp, .tif, .tiff), else ``<stem>.png``. Annotated video: ``<stem>.mp4``.
* Labels (``save_txt``): ``labels/<stem>.txt`` per image, ``labels/<stem>_<frame>.txt`` per frame.
* ``predictions.json``: one row per image / frame, written as the run goes (bounded memory).

Every file goes through :func:`yolov9k.io.files.atomic_output` (a temp file beside the target, fsynced
and renamed): a run killed mid-save leaves no partial image, video or JSON under its final name, and
a full disk is a one-line ``OSError`` naming the file. Images are encoded in memory and written by
Python, videos through :func:`yolov9k.io.opencv.cv2_path`: no file name reaches OpenCV as a string it
cannot take.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import cv2
import numpy as np

from yolov9k.api.model_source import LOGGER
from yolov9k.api.sources import Frame
from yolov9k.errors import OutputError
from yolov9k.io.files import atomic_output
from yolov9k.io.opencv import cv2_path, printable

__all__ = ["OutputNames", "PredictOutputs", "IMAGE_SUFFIXES", "txt_lines", "json_row"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what cv2.imencode writes


class OutputNames:
    """Output stems by the naming rule of this module, assigned in source order."""

    def __init__(self) -> None:
        self._by_input: dict[tuple[str, int], str] = {}
        self._images: set[str] = set()  # casefolded stems of images and arrays
        self._videos: set[str] = set()  # casefolded stems of videos

    def _taken(self, stem: str, video: bool) -> bool:
        key = stem.casefold()
        if video:  # <stem>.mp4, and its frame labels <stem>_<n> must not be an earlier image's stem
            frame_label = re.compile(re.escape(key) + r"_\d+")
            return key in self._videos or any(frame_label.fullmatch(s) for s in self._images)
        base, sep, digits = key.rpartition("_")  # an image <v>_<n> vs an earlier video <v>
        return key in self._images or (bool(sep) and digits.isdigit() and base in self._videos)

    def stem(self, frame: Frame) -> str:
        """The stem of ``frame``'s input (the same for every frame of one video)."""
        key = (frame.path, frame.item)
        if key not in self._by_input:
            video = frame.kind == "video"
            base = Path(frame.path).stem if frame.kind != "array" else frame.path
            sep = "-" if not video and base.casefold() in self._videos else "_"  # else: no free name
            stem, n = base, 2
            while self._taken(stem, video):
                stem, n = f"{base}{sep}{n}", n + 1
            if stem != base:
                LOGGER.info(
                    "%s: outputs named %s (%s is taken in this run)", printable(frame.path), stem, base
                )
            (self._videos if video else self._images).add(stem.casefold())
            self._by_input[key] = stem
        return self._by_input[key]


def image_name(stem: str, path: str) -> str:
    """File name of an annotated image: the input's extension when OpenCV writes it, else .png."""
    suffix = Path(path).suffix
    return stem + (suffix if suffix.lower() in IMAGE_SUFFIXES else ".png")


def txt_lines(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, shape0: tuple[int, int]) -> str:
    """YOLO label rows ``cls cx cy w h conf`` normalized to the original image (h, w)."""
    h, w = shape0
    lines = []
    for (x1, y1, x2, y2), s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist()):
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{int(c)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f} {s:.6f}\n")
    return "".join(lines)


def json_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One row of predictions.json: path, frame, size and detections (xyxy pixels of the original)."""
    return {
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


class _Video:
    """One annotated video being written: a temp file beside the target, renamed when complete."""

    def __init__(self, path: Path, fps: float, shape: Sequence[int]) -> None:
        self.path, self.frames = path, 0
        self._stack = contextlib.ExitStack()
        try:
            self._tmp = self._stack.enter_context(atomic_output(path))
            opencv_path = self._stack.enter_context(cv2_path(self._tmp, ".mp4"))
            self._writer = cv2.VideoWriter(
                opencv_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0])
            )
            if not self._writer.isOpened():
                raise OutputError(f"could not open a video writer for {printable(path)}")
        except BaseException:
            self._stack.close()
            raise

    def write(self, img: np.ndarray) -> None:
        self._writer.write(img)
        self.frames += 1

    def close(self, ok: bool) -> None:
        """Finish the file (ok) or drop it. OpenCV reports no write error: the frames are counted back."""
        self._writer.release()
        if not ok:
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
            return
        with cv2_path(self._tmp, ".mp4") as opencv_path:
            cap = cv2.VideoCapture(opencv_path)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
            cap.release()
        if n != self.frames:
            frames = f"{n} of {self.frames} frames readable"
            error = OutputError(f"could not write {printable(self.path)}: {frames}")
            self._stack.__exit__(OSError, error, None)  # removes the temp file
            raise error
        self._stack.close()


class PredictOutputs:
    """Annotated images and videos, label files and predictions.json of one run under ``save_dir``.

    Thread use: :meth:`write_image` and :meth:`write_labels` may run in worker threads (each writes its
    own files); :meth:`write_video_frame`, :meth:`add_json` and :meth:`close` run in one thread, in
    frame order. ``names`` must have given each frame its stem (in source order) first.
    """

    def __init__(self, save_dir: Path | None, save: bool, save_txt: bool, save_json: bool) -> None:
        self.save_dir = save_dir
        self.save, self.save_txt, self.save_json = (
            save_dir is not None and flag for flag in (save, save_txt, save_json)
        )
        self.names = OutputNames()
        self._video: _Video | None = None
        self._video_key: tuple[str, int] | None = None
        self._json_stack = contextlib.ExitStack()
        self._json: IO[str] | None = None
        self._json_rows = 0
        if self.save_json:
            tmp = self._json_stack.enter_context(atomic_output(save_dir / "predictions.json"))
            self._json = self._json_stack.enter_context(open(tmp, "w", encoding="utf-8"))
            self._write_json("[")

    def write_image(self, frame: Frame, stem: str, annotated: np.ndarray) -> None:
        """Encode and write one annotated image (any thread)."""
        path = self.save_dir / image_name(stem, frame.path)
        ok, buf = cv2.imencode(path.suffix, annotated)
        if not ok:
            raise OutputError(f"could not encode {printable(path)}")
        with atomic_output(path) as tmp:
            tmp.write_bytes(buf.tobytes())

    def write_labels(self, frame: Frame, stem: str, text: str) -> None:
        """Write ``labels/<stem>.txt`` (``<stem>_<frame>.txt`` for a video frame; any thread)."""
        name = stem if frame.frame is None else f"{stem}_{frame.frame}"
        with atomic_output(self.save_dir / "labels" / f"{name}.txt") as tmp:
            tmp.write_text(text, encoding="utf-8")

    def write_video_frame(self, frame: Frame, stem: str, annotated: np.ndarray) -> None:
        """Append a frame to its video's annotated ``<stem>.mp4`` (frames in order, one thread)."""
        key = (frame.path, frame.item)
        if self._video_key != key:
            self._finish_video(ok=True)
            self._video = _Video(self.save_dir / f"{stem}.mp4", frame.fps or 30.0, annotated.shape)
            self._video_key = key
        self._video.write(annotated)

    def add_json(self, result: Mapping[str, Any]) -> None:
        """Append one result to predictions.json (frames in order, one thread)."""
        if self._json is not None:
            self._write_json(("\n" if self._json_rows == 0 else ",\n") + json.dumps(json_row(result)))
            self._json_rows += 1

    def _write_json(self, text: str) -> None:
        try:
            self._json.write(text)
        except OSError as e:  # through the atomic writer's handler: temp removed, a full disk named
            self._json = None
            self._json_stack.__exit__(type(e), e, e.__traceback__)
            raise

    def _finish_video(self, ok: bool) -> None:
        video, self._video, self._video_key = self._video, None, None
        if video is not None:
            video.close(ok)

    def close(self, ok: bool = True) -> None:
        """Finish every open file (``ok``), or drop the incomplete ones (the run failed or stopped)."""
        try:
            self._finish_video(ok)
        finally:
            if self._json is not None and ok:
                self._write_json("\n]\n")
            self._json = None
            if ok:
                self._json_stack.close()  # flush, fsync and rename (a full disk is named here too)
            else:
                self._json_stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
