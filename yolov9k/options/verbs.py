"""Options of the commands other than ``train``: one table per command, built from the same
:class:`~yolov9k.options.schema.Option` type, and with the same shared rules (``imgsz``, ``batch``,
``workers``, ``conf``, ``iou``, ``max_det``, ...), as the training options.

Each option is a parameter of the command's Python function with the same default
(``tests/test_options.py`` checks it); the functions check their arguments against these tables.
"""

from __future__ import annotations

from yolov9k.io.limits import MAX_CLASSES
from yolov9k.options import limits
from yolov9k.options.schema import Option
from yolov9k.options.train import (
    BATCH,
    CONF,
    DEVICE,
    IMGSZ,
    IOU,
    MAX_DET,
    NAME,
    PROJECT,
    SEED,
    TRAIN_OPTIONS,
    WORKERS,
)

__all__ = [
    "VAL",
    "PREDICT",
    "EXPORT",
    "CONVERT",
    "DEMO_DATA",
    "BENCH",
    "BENCH_TRAIN",
    "INFO",
    "COMMANDS",
    "EXPORT_FORMATS",
    "BENCH_CASES",
    "BENCH_BACKENDS",
]

MODEL = Option("model", "path", help="checkpoint file (official or yolov9k) or zoo name")
HALF = Option("half", "bool", False, "fp16 inference (CUDA only)")
EXPORT_FORMATS = ("onnx", "torchscript")  # yolov9k.api.export.FORMATS (a test keeps them equal)
BENCH_CASES = ("box_iou", "batched_nms", "postprocess", "assign")  # yolov9k.api.bench.CASES
BENCH_BACKENDS = ("auto", "cuda", "triton", "cpp", "torch")  # "auto" + yolov9k.ops.BACKENDS

VAL: tuple[Option, ...] = (
    MODEL,
    Option("data", "path", None, "dataset YAML (a dict from Python); none = the generated demo data set",
           nullable=True, mapping=True),
    IMGSZ,
    BATCH.but(default=32),
    CONF,
    IOU,
    MAX_DET,
    DEVICE,
    HALF,
    Option("save_json", "bool", False, "write predictions.json in COCO result format"),
    PROJECT.but(help="results go to <project>/<name> (none: runs/val)"),
    NAME,
    Option("split", "choice", "val", "dataset split", choices=("train", "val", "test")),
    WORKERS.but(default=4),
    Option("rect", "bool", True, "rectangular batches (as the official val.py)"),
    Option("plots", "bool", True, "write the PR curve and confusion matrix"),
    Option("cache", "choice", False, "keep decoded, resized images: ram (bounded by the available memory, "
           "else disk), disk (.npy files beside the label cache) or false", choices=("ram", "disk", False),
           aliases=((True, "ram"),)),
)  # fmt: skip

PREDICT: tuple[Option, ...] = (
    MODEL,
    Option("source", "path", help="image, video, folder, glob or .txt list of paths (from Python also an "
           "image array or a list)"),
    IMGSZ.but(help="inference size in pixels (rounded up to a multiple of the max stride)"),
    CONF.but(default=0.25),
    IOU.but(default=0.45),
    Option("classes", "int", None, "keep only these class ids", f"[0, {MAX_CLASSES - 1}]", nullable=True,
           count=(1, None)),
    MAX_DET,
    Option("agnostic", "bool", False, "class-agnostic NMS"),
    DEVICE,
    HALF.but(default=None, help="fp16 inference, CUDA only (none: fp16 on CUDA, fp32 on CPU)", nullable=True),
    Option("save", "bool", True, "write annotated images / videos"),
    Option("save_txt", "bool", False, "write labels/<stem>.txt: cls cx cy w h conf (normalized)"),
    Option("save_json", "bool", False, "write predictions.json (boxes in original-image pixels)"),
    PROJECT.but(help="results go to <project>/<name> (none: runs/predict)"),
    NAME,
    BATCH.but(default=None, help="images per forward pass (none: 1 on CPU, 8 on CUDA)", nullable=True),
    Option("vid_stride", "int", 1, "read every n-th video frame (the annotated video keeps its duration)",
           "[1, 100000]"),
    Option("stream", "bool", False, "results one at a time as they are done, none kept (the command line "
           "prints each as one JSON line on stdout; the summary goes to stderr)"),
)  # fmt: skip

_ONNX = ("format", "onnx")
_NMS = ("nms", True)
EXPORT: tuple[Option, ...] = (
    MODEL,
    Option("format", "choice", "onnx", "output format", choices=EXPORT_FORMATS),
    IMGSZ.but(help="input size in pixels: one (square) or H W, multiples of the model stride", count=(1, 2)),
    Option("file", "path", None, "output file (default: beside the checkpoint)", nullable=True),
    Option("nms", "bool", False, "ONNX only: NMS in the graph (EfficientNMS-style outputs)"),
    Option("half", "bool", False, "fp16 (needs --device cuda)"),
    Option("dynamic", "bool", True, "dynamic batch axis", only_with=_ONNX),
    Option("opset", "int", 17, "ONNX opset (>= 11 with --nms)", "[9, 20]", only_with=_ONNX),
    CONF.but(default=0.25, help="score threshold of the NMS in the graph", only_with=_NMS),
    IOU.but(default=0.45, help="IoU threshold of the NMS in the graph", only_with=_NMS),
    MAX_DET.but(default=100, help="detections per image of the NMS in the graph", only_with=_NMS),
    BATCH.but(default=1, help="batch size of the example input", range=f"[1, {limits.MAX_EXPORT_BATCH}]"),
    DEVICE.but(default="cpu", help="device used for tracing"),
)  # fmt: skip

CONVERT: tuple[Option, ...] = (
    Option("source", "path", help="checkpoint to read (official, yolov9k or state dict)"),
    Option("output", "path", help="yolov9k checkpoint to write (never the source)"),
    Option("reparameterize", "bool", False, "drop the PGI branch (yolov9-X -> gelan-X)"),
    Option("half", "bool", False, "store fp16 weights"),
)

DEMO_DATA: tuple[Option, ...] = (
    Option("root", "path", None, "output folder (none: $YOLOV9K_HOME/demo or ~/.cache/yolov9k/demo)",
           nullable=True),
    Option("num_train", "int", 240, "training images", "[1, 100000]"),
    Option("num_val", "int", 60, "validation images", "[1, 100000]"),
    IMGSZ.but(default=320, help="image size (long side) in pixels", range=f"[64, {limits.MAX_IMGSZ}]"),
    SEED,
    Option("overwrite", "bool", False, "replace another data set in root"),
)  # fmt: skip

BENCH: tuple[Option, ...] = (
    Option("full", "bool", False, "benchmark sizes instead of small ones"),
    DEVICE,
    Option("model", "str", "gelan-t", "zoo model for the forward timing (none: skip it)", nullable=True),
    IMGSZ.but(default=None, help="model input size (none: 160, 640 with --full)", nullable=True),
    Option("repeat", "int", 3, "timed calls per entry (median)", "[1, 10000]"),
    Option("ops", "choice", None, "only these ops", choices=BENCH_CASES, nullable=True, count=(1, None)),
)

BENCH_TRAIN: tuple[Option, ...] = (
    Option("backend", "choice", None, "op backend of the run: auto, or one forced for every op; none = "
           "YOLOV9K_BACKEND, else auto", choices=BENCH_BACKENDS, nullable=True),
    Option("threads", "int", None, "torch intra-op threads for the run; none = torch's", "[1, 1024]",
           nullable=True),
    Option("out", "path", None, "write the JSON record here", nullable=True),
)  # fmt: skip

INFO: tuple[Option, ...] = (
    MODEL.but(default="gelan-t", help="zoo name or checkpoint file"),
    IMGSZ.but(help="image size for the GFLOPs"),
    Option("fuse", "bool", False, "fold BN and RepConvN first"),
    Option("num_classes", "int", None, "classes of a zoo model (none: the config's 80)",
           f"[1, {MAX_CLASSES}]", nullable=True),
)  # fmt: skip

# Every command's own options ("bench train" also takes every training option).
COMMANDS: dict[str, tuple[Option, ...]] = {
    "train": TRAIN_OPTIONS,
    "val": VAL,
    "predict": PREDICT,
    "export": EXPORT,
    "convert": CONVERT,
    "demo-data": DEMO_DATA,
    "bench": BENCH,
    "bench train": BENCH_TRAIN,
    "info": INFO,
}
