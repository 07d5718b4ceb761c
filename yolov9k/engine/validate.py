"""The validation loop shared by the trainer (every epoch) and ``yolov9k.val``.

For each batch of a validation dataloader (``yolov9k.data`` collate format: uint8 images
(B, 3, H, W), targets (N, 6) [img_idx, cls, cx, cy, w, h] normalized, files, shapes): the model's eval
output is post-processed like the official ``val_dual.py`` (multi-label NMS, ``conf`` 0.001,
``iou`` 0.7), boxes and labels are mapped back to the original image pixels (the sample's ``shapes``),
and fed to :class:`yolov9k.metrics.DetectionEvaluator` (COCO mAP) and the confusion matrix. With a
``loss_fn`` the validation loss is computed on the same forward pass (``return_maps=True``, so PGI
models give a real dual loss). ``on_batch`` hands each batch's detections (post-processed once, in
original-image pixels) to the caller, e.g. to write COCO-json predictions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from yolov9k.data.geometry import scale_boxes
from yolov9k.engine.plots import plot_batch
from yolov9k.metrics import ConfusionMatrix, DetectionEvaluator, fitness, plot_pr_curve
from yolov9k.ops.boxes import xywh2xyxy
from yolov9k.ops.nms import postprocess

__all__ = ["validate", "LOSS_NAMES", "BatchCallback"]

# on_batch(files, dets): the batch's image files and their detections, (n, 6) [x1, y1, x2, y2, conf,
# cls] float32 CPU tensors in original-image pixels (network-image pixels when a shape is None).
BatchCallback = Callable[[Sequence[str], list[torch.Tensor]], None]

LOSS_NAMES = ("box", "cls", "dfl")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _image_targets(targets: torch.Tensor, i: int, h: int, w: int) -> torch.Tensor:
    """(m, 5) [cls, x1, y1, x2, y2] px in the network image of image ``i`` of the batch."""
    t = targets[targets[:, 0] == i]
    boxes = xywh2xyxy(t[:, 2:6] * torch.tensor([w, h, w, h], dtype=t.dtype, device=t.device))
    return torch.cat([t[:, 1:2], boxes], 1)


def _to_original(boxes: torch.Tensor, net_hw: tuple[int, int], shape: Any) -> torch.Tensor:
    """xyxy px in the network image -> original image px (``shape`` = (hw0, ratio_pad) or None)."""
    if shape is None:
        return boxes
    hw0, ratio_pad = shape
    return scale_boxes(net_hw, boxes, (int(hw0[0]), int(hw0[1])), ratio_pad)


class _ValidationRun:
    """One pass over a validation set: the model in its inference setting, the metric accumulators
    and the per-stage timers (preprocess, inference, postprocess)."""

    def __init__(
        self,
        model: nn.Module,
        names: Mapping[int, str] | None,
        loss_fn: Any,
        device: str | torch.device | None,
        half: bool,
        channels_last: bool,
    ) -> None:
        params = next(iter(model.parameters()), None)
        if device is None:
            device = params.device if params is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.model, self.loss_fn, self.channels_last = model, loss_fn, channels_last
        self.nc = nc = int(model.nc)
        default_names = getattr(model, "names", {i: str(i) for i in range(nc)})
        self.names = dict(names if names is not None else default_names)
        self.autocast = (
            torch.autocast(
                self.device.type, dtype=torch.float16 if self.device.type == "cuda" else torch.bfloat16
            )
            if half
            else nullcontext()
        )
        self.evaluator = DetectionEvaluator(nc)
        self.confusion = ConfusionMatrix(nc, conf=0.25, iou_thres=0.45)
        self.loss_sum = torch.zeros(3, device=self.device)
        self.n_batches = self.n_images = 0
        self.seconds = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
        model.eval()

    def _timed(self, stage: str, t0: float) -> float:
        _sync(self.device)
        t1 = time.perf_counter()
        self.seconds[stage] += t1 - t0
        return t1

    def infer(
        self, imgs: torch.Tensor, targets: torch.Tensor, conf: float, iou: float, max_det: int
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Network input, targets on the device and the post-processed detections of one batch."""
        t0 = time.perf_counter()
        x = imgs.to(self.device, non_blocking=True).float() / 255
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = targets.to(self.device, non_blocking=True).float()
        t0 = self._timed("preprocess", t0)
        with self.autocast:
            if self.loss_fn is not None:
                y, maps = self.model(x, return_maps=True)
            else:
                y, maps = self.model(x), None
        if self.loss_fn is not None:
            self.loss_sum += self.loss_fn(maps, targets)[1].detach().float().reshape(-1)[:3]
        t0 = self._timed("inference", t0)
        dets = postprocess(y.float(), conf, iou, max_det=max_det, multi_label=True)
        self._timed("postprocess", t0)
        return x, targets, dets

    def update(
        self, net_hw: tuple[int, int], targets: torch.Tensor, dets: list[torch.Tensor], shapes: Any
    ) -> list[torch.Tensor]:
        """Match a batch's detections with its targets in original-image pixels; returns the
        detections in those pixels (CPU)."""
        h, w = net_hw
        preds_o, gts_o = [], []
        for i, det in enumerate(dets):
            shape = shapes[i] if shapes is not None and i < len(shapes) else None
            gt = _image_targets(targets, i, h, w).cpu()
            det = det.detach().cpu().clone()
            det[:, :4] = _to_original(det[:, :4], (h, w), shape)
            gt[:, 1:] = _to_original(gt[:, 1:].clone(), (h, w), shape)
            preds_o.append(det)
            gts_o.append(gt)
            self.confusion.process_batch(det, gt)
        self.evaluator.update(preds_o, gts_o)
        self.n_batches += 1
        self.n_images += len(dets)
        return preds_o

    def finish(self, plots_dir: Path | None) -> dict[str, Any]:
        """The metrics dict of :func:`validate`; the PR curve and confusion matrix in ``plots_dir``."""
        m = self.evaluator.compute()
        names, nc = self.names, self.nc
        per_class = {
            names.get(c, str(c)): {
                "ap50_95": float(m["per_class_ap50_95"][c]),
                "ap50": float(m["per_class_ap50"][c]),
                "targets": int(m["per_class_targets"][c]),
            }
            for c in range(nc)
        }
        has_loss = self.loss_fn is not None
        per_img = 1e3 / max(self.n_images, 1)
        out: dict[str, Any] = {
            **{k: float(m[k]) for k in ("map50_95", "map50", "map75", "precision", "recall")},
            "per_class": per_class,
            "loss": (self.loss_sum / max(self.n_batches, 1)).cpu().tolist() if has_loss else None,
            "speed": {stage: s * per_img for stage, s in self.seconds.items()},
            "num_images": int(m["num_images"]),
            "num_targets": int(m["num_targets"]),
            "pr_curve": m["pr_curve"],
            "confusion_matrix": np.asarray(self.confusion.matrix),
        }
        out["fitness"] = fitness(out)
        if plots_dir is not None:
            plots_dir.mkdir(parents=True, exist_ok=True)
            name_list = [names.get(i, str(i)) for i in range(nc)]
            plot_pr_curve(m["pr_curve"], name_list, plots_dir / "PR_curve.png")
            self.confusion.plot(plots_dir / "confusion_matrix.png", names=name_list)
        return out


@torch.no_grad()
def validate(
    model: nn.Module,
    dataloader: Iterable,
    names: Mapping[int, str] | None = None,
    loss_fn: Any = None,
    conf: float = 0.001,
    iou: float = 0.7,
    max_det: int = 300,
    device: str | torch.device | None = None,
    half: bool = False,
    plots_dir: str | Path | None = None,
    channels_last: bool = False,
    progress: bool = False,
    on_batch: BatchCallback | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataloader``; the model is left in eval mode.

    Args:
        model: a DetectionModel (eval output (B, 4 + nc, A) xywh px + scores).
        dataloader: batches (imgs uint8 (B,3,H,W), targets (N,6), files, shapes) as ``yolov9k.data``
            collates them; ``shapes[i]`` = ((h0, w0), ((ratio_h, ratio_w), (pad_w, pad_h))) or None
            (boxes are then compared in network-image pixels).
        names: class names (for plots); default: the model's.
        loss_fn: a ``DetectionLoss``; when given the result has the mean val loss items.
        conf, iou, max_det: post-processing settings (validation defaults of the official code).
        device: default the model's device.
        half: run the model in fp16 (CUDA) / bf16 autocast (CPU).
        plots_dir: write the PR curve, the confusion matrix and the first batches' images there.
        channels_last: feed NHWC inputs.
        progress: show a tqdm bar.
        on_batch: called after each batch with its files and detections (see ``BatchCallback``).

    Returns:
        dict with ``map50_95``, ``map50``, ``map75``, ``precision``, ``recall``, ``fitness``,
        ``per_class`` ({name: {"ap50_95", "ap50", "targets"}}), ``loss`` (box, cls, dfl means, or
        None without ``loss_fn``), ``speed`` ({"preprocess", "inference", "postprocess"} ms per image),
        ``num_images``, ``num_targets``, ``pr_curve`` and ``confusion_matrix`` (np arrays).
    """
    run = _ValidationRun(model, names, loss_fn, device, half, channels_last)
    plots_dir = Path(plots_dir) if plots_dir is not None else None
    batches = dataloader
    if progress:
        from tqdm import tqdm

        batches = tqdm(dataloader, desc=f"{'':>11}{'val':>11}", leave=False)
    for bi, batch in enumerate(batches):
        imgs, targets, files, shapes = batch[:4]
        x, targets, dets = run.infer(imgs, targets, conf, iou, max_det)
        preds_o = run.update(tuple(x.shape[2:]), targets, dets, shapes)
        if on_batch is not None:
            on_batch(list(files), preds_o)
        if plots_dir is not None and bi < 3:
            plot_batch(imgs, targets.cpu(), plots_dir / f"val_batch{bi}_labels.jpg", run.names)
            plot_batch(imgs, targets.cpu(), plots_dir / f"val_batch{bi}_pred.jpg", run.names, preds=dets)
    return run.finish(plots_dir)
