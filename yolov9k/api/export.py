"""``yolov9k.export``: ONNX (optionally with NMS in the graph) and TorchScript files for deployment.

The model is first turned into its inference form (yolov9-X -> gelan-X, BN and RepConvN folded).

ONNX without NMS has one output ``output0`` (B, 4 + nc, A): xywh pixels of the input image and sigmoid
class scores, the model's eval output. With ``nms=True`` the graph ends in ONNX ``NonMaxSuppression``
and has fixed-size outputs in the layout of TensorRT's EfficientNMS plugin:

* ``num_dets`` (B, 1) int32: detections per image;
* ``det_boxes`` (B, max_det, 4) float32 xyxy pixels; ``det_scores`` (B, max_det) float32;
* ``det_classes`` (B, max_det) int32;

best score first, rows past ``num_dets`` are 0 (classes -1). The detections equal
``yolov9k.ops.postprocess(y, conf, iou, max_det)`` (one class per box, class-aware NMS) up to score
ties; its ``max_nms`` candidate cap is not applied. The legacy TorchScript-based ONNX exporter
(``dynamo=False``) is used: it maps the NMS step onto the standard operator through a symbolic.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from yolov9k.api.model_source import LOGGER, resolve_model, to_inference_model
from yolov9k.errors import ConfigError
from yolov9k.io.files import atomic_output, check_not_an_input, check_output_file
from yolov9k.ops import batched_nms
from yolov9k.options import check_options
from yolov9k.options.verbs import EXPORT
from yolov9k.run_setup import select_device

__all__ = ["export", "EfficientNMS", "FORMATS"]

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}


# --------------------------------------------------------------------------------------------------
# NMS in the graph
# --------------------------------------------------------------------------------------------------


def _selected_indices(boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, conf: float) -> Tensor:
    """Eager equivalent of ONNX ``NonMaxSuppression``: (N, 3) int64 rows [image, class, box].

    Args:
        boxes: (B, A, 4) xyxy. scores: (B, nc, A). A (box, class) pair is a candidate when its
            score is > ``conf``; per image and class greedy NMS (IoU > ``iou`` suppresses) keeps at
            most ``max_per_class`` boxes, best score first.
    """
    rows = []
    for b in range(boxes.shape[0]):
        cls, anchor = (scores[b] > conf).nonzero(as_tuple=True)
        keep = batched_nms(boxes[b][anchor], scores[b][cls, anchor], cls, iou)
        cls, anchor = cls[keep], anchor[keep]
        # the first max_per_class of each class (keep is score-ordered, so per class as well)
        order = torch.sort(cls, stable=True)
        first = torch.searchsorted(order.values, order.values, right=False)
        within = torch.arange(len(cls), device=cls.device) - first
        ok = order.indices[within < max_per_class]
        ok = ok.sort().values
        rows.append(torch.stack([torch.full_like(cls[ok], b), cls[ok], anchor[ok]], 1))
    return torch.cat(rows, 0) if rows else torch.zeros(0, 3, dtype=torch.int64)


class _NonMaxSuppression(torch.autograd.Function):
    """Greedy per-class NMS that exports as the ONNX ``NonMaxSuppression`` operator."""

    @staticmethod
    def forward(
        ctx: Any, boxes: Tensor, scores: Tensor, max_per_class: int, iou: float, conf: float
    ) -> Tensor:
        return _selected_indices(boxes, scores, max_per_class, iou, conf)

    @staticmethod
    def symbolic(g: Any, boxes: Any, scores: Any, max_per_class: int, iou: float, conf: float) -> Any:
        max_out = g.op("Constant", value_t=torch.tensor([max_per_class], dtype=torch.int64))
        iou_t = g.op("Constant", value_t=torch.tensor([iou], dtype=torch.float32))
        conf_t = g.op("Constant", value_t=torch.tensor([conf], dtype=torch.float32))
        return g.op("NonMaxSuppression", boxes, scores, max_out, iou_t, conf_t, center_point_box_i=0)


class EfficientNMS(nn.Module):
    """Model eval output -> fixed-size detections (TensorRT EfficientNMS layout), traceable to ONNX.

    Args:
        conf: score threshold (kept when > conf). iou: NMS IoU threshold. max_det: rows per image.

    ``forward(y)`` with y (B, 4 + nc, A) xywh pixels + class scores returns
    ``(num_dets (B, 1) int32, boxes (B, max_det, 4) float32 xyxy, scores (B, max_det) float32,
    classes (B, max_det) int32)``; padding rows are 0 with class -1.
    """

    def __init__(self, conf: float = 0.25, iou: float = 0.45, max_det: int = 100) -> None:
        super().__init__()
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        y = y.float()
        nc, num_anchors = y.shape[1] - 4, y.shape[2]
        xy, wh = y[:, :2], y[:, 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], 1).transpose(1, 2)  # (B, A, 4) xyxy
        scores = y[:, 4:]  # (B, nc, A)
        # one class per box (the best), as postprocess without multi_label
        best = scores.argmax(1, keepdim=True)
        is_best = torch.arange(nc, device=y.device).view(1, -1, 1) == best
        scores = torch.where(is_best, scores, torch.zeros_like(scores))

        sel = _NonMaxSuppression.apply(boxes, scores, self.max_det, self.iou, self.conf)
        img, cls, anchor = sel[:, 0], sel[:, 1], sel[:, 2]
        det_scores = scores.reshape(-1)[(img * nc + cls) * num_anchors + anchor]  # (N,)
        det_boxes = boxes.reshape(-1, 4)[img * num_anchors + anchor]  # (N, 4)

        # dense (B, N + max_det) score table, -1 where a detection belongs to another image; the
        # max_det padding columns make top-k valid for any N (N may be 0)
        batch_ids = torch.arange(y.shape[0], device=y.device).view(-1, 1)
        mine = batch_ids == img.view(1, -1)
        table = torch.where(mine, det_scores.view(1, -1), -torch.ones_like(det_scores))
        pad = -torch.ones_like(y[:, 0, :1]).expand(-1, self.max_det)
        values, index = torch.cat([table, pad], 1).topk(self.max_det, dim=1)
        valid = values > -0.5

        all_boxes = torch.cat([det_boxes, det_boxes.new_zeros(self.max_det, 4)], 0)
        all_cls = torch.cat([cls, cls.new_full((self.max_det,), -1)], 0)
        out_boxes = torch.where(valid.unsqueeze(-1), all_boxes[index], torch.zeros_like(all_boxes[index]))
        out_scores = torch.where(valid, values, torch.zeros_like(values))
        out_cls = torch.where(valid, all_cls[index], -torch.ones_like(all_cls[index])).to(torch.int32)
        num_dets = valid.sum(1, keepdim=True).to(torch.int32)
        return num_dets, out_boxes, out_scores, out_cls


class _WithNMS(nn.Module):
    def __init__(self, model: nn.Module, nms: EfficientNMS) -> None:
        super().__init__()
        self.model, self.nms = model, nms

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.nms(self.model(x))


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def export_onnx(
    module: nn.Module,
    example: Tensor,
    file: str | os.PathLike,
    output_names: list[str],
    opset: int = 17,
    dynamic: bool = True,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Trace ``module`` on ``example`` into an ONNX file (batch axis dynamic), checked, written atomically."""
    import onnx

    file = check_output_file(file, "export file")
    axes = {name: {0: "batch"} for name in ["images", *output_names]} if dynamic else None
    with atomic_output(file) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=output_names,
                dynamic_axes=axes,
                do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    return file


def export_torchscript(
    module: nn.Module, example: Tensor, file: str | os.PathLike, metadata: dict[str, str]
) -> Path:
    """``torch.jit.trace`` ``module`` on ``example``; metadata goes to the ``config.txt`` extra file."""
    file = check_output_file(file, "export file")
    with atomic_output(file) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={"config.txt": json.dumps(metadata)})
    return file


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def _default_file(model: Any, suffix: str) -> Path:
    if isinstance(model, str | os.PathLike) and Path(model).is_file():
        return Path(model).with_suffix(suffix)
    if isinstance(model, str):
        return Path(f"{model}{suffix}")
    return Path(f"yolov9k{suffix}")


def export(
    model: nn.Module | str | os.PathLike,
    format: str = "onnx",
    imgsz: int | tuple[int, int] = 640,
    file: str | os.PathLike | None = None,
    nms: bool = False,
    half: bool = False,
    dynamic: bool = True,
    opset: int = 17,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 100,
    batch: int = 1,
    device: str | int | torch.device | None = "cpu",
) -> Path:
    """Export a model for deployment.

    Args:
        model: a DetectionModel, a checkpoint file (official or yolov9k) or a zoo name. It is
            reparameterized (yolov9-X -> gelan-X) and fused in a copy.
        format: "onnx" or "torchscript".
        imgsz: input size in pixels, one int (square) or (h, w), multiples of the stride.
        file: output path (default: beside the checkpoint, or ``<zoo name>.<ext>`` here).
        nms: ONNX only: NMS in the graph with EfficientNMS-style outputs (see module docs).
        half: fp16 weights and input (needs a CUDA device).
        dynamic: ONNX batch axis dynamic. opset: ONNX opset (>= 11 with NMS).
        conf, iou, max_det: NMS settings baked into the graph (``nms=True``).
        batch: batch size of the example input. device: where tracing runs.
    Returns:
        The path written (written atomically: a complete file or none).
    Raises:
        OptionError: an argument out of its range (``docs/options.md``), before any work.
        ConfigError: bad arguments, or ``file`` is the model file itself (by any path: it is never
            overwritten). FileNotFoundError / ValueError: unreadable model source.
        IsADirectoryError / NotADirectoryError: ``file`` is a folder, or a file is among its folders.
        OSError(ENOSPC): the disk filled up while writing (no partial file is left).
    """
    fmt = str(format).lower()
    check_options(EXPORT, dict(
        format=fmt, imgsz=imgsz, file=file, nms=nms, half=half, dynamic=dynamic, opset=opset, conf=conf,
        iou=iou, max_det=max_det, batch=batch,
    ))  # fmt: skip
    if nms and fmt != "onnx":
        raise ConfigError("nms=True is supported for format='onnx' only")
    if nms and opset < 11:
        raise ConfigError(f"NMS in the graph needs opset >= 11, got {opset}")
    dev = select_device(device)
    if half and dev.type != "cuda":
        raise ConfigError("half=True export needs a CUDA device (device='cuda')")
    out = check_output_file(file if file is not None else _default_file(model, FORMATS[fmt]), "export file")
    check_not_an_input(out, (model if isinstance(model, str | os.PathLike) else None,), "export file")

    net = to_inference_model(resolve_model(model, dev, fuse=False)).to(dev)
    stride = int(max(float(s) for s in net.stride))
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else (int(imgsz[0]), int(imgsz[1]))
    if h % stride or w % stride or h < stride or w < stride:
        raise ConfigError(f"imgsz {h}x{w} must be a positive multiple of the model stride {stride}")
    if half:
        net = net.half()
    example = torch.zeros(int(batch), 3, h, w, device=dev, dtype=torch.float16 if half else torch.float32)
    with torch.no_grad():
        net(example)  # warm the anchor cache and check the forward once
    metadata = {
        "producer": "yolov9k",
        "names": json.dumps({int(k): str(v) for k, v in dict(net.names).items()}),
        "nc": str(int(net.nc)),
        "stride": json.dumps([float(s) for s in net.stride]),
        "imgsz": json.dumps([h, w]),
        "nms": json.dumps(bool(nms)),
        "half": json.dumps(bool(half)),
    }
    if fmt == "torchscript":
        path = export_torchscript(net, example, out, metadata)
    elif nms:
        wrapped = _WithNMS(net, EfficientNMS(conf, iou, max_det)).eval()
        metadata.update({"conf": str(conf), "iou": str(iou), "max_det": str(max_det)})
        names = ["num_dets", "det_boxes", "det_scores", "det_classes"]
        path = export_onnx(wrapped, example, out, names, opset, dynamic, metadata)
    else:
        path = export_onnx(net, example, out, ["output0"], opset, dynamic, metadata)
    LOGGER.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path
