"""User-facing entry points: validation, prediction, export, conversion, model info and benchmarks
(ops and a model forward: ``bench``; a whole training run: ``bench_train``).

Each lives in its own module (``yolov9k.api.val`` ...); the ``yolov9k`` command (``yolov9k.cli``) is a
thin layer over these functions.
"""

from __future__ import annotations

from yolov9k.api.bench import bench
from yolov9k.api.bench_train import bench_train
from yolov9k.api.convert import convert
from yolov9k.api.export import export
from yolov9k.api.info import info
from yolov9k.api.predict import PredictResults, predict
from yolov9k.api.val import val

__all__ = ["PredictResults", "bench", "bench_train", "convert", "export", "info", "predict", "val"]
