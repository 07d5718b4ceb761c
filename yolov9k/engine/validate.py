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
    params = next(iter(model.parameters()), None)
    device = (
        torch.device(device)
        if device is not None
        else (params.device if params is not None else torch.device("cpu"))
    )
    nc = int(model.nc)
    names = (
        dict(names) if names is not None else dict(getattr(model, "names", {i: str(i) for i in range(nc)}))
    )
    model.eval()
    autocast = (
        torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
        if half
        else nullcontext()
    )
    evaluator = DetectionEvaluator(nc)
    confusion = ConfusionMatrix(nc, conf=0.25, iou_thres=0.45)
    loss_sum = torch.zeros(3, device=device)
    n_batches = n_images = 0
    t_pre = t_inf = t_post = 0.0
    plots_dir = Path(plots_dir) if plots_dir is not None else None

    batches = dataloader
    if progress:
        from tqdm import tqdm

        batches = tqdm(dataloader, desc=f"{'':>11}{'val':>11}", leave=False)

    for bi, batch in enumerate(batches):
        imgs, targets, files, shapes = batch[:4]
        t0 = time.perf_counter()
        x = imgs.to(device, non_blocking=True).float() / 255
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = targets.to(device).float()
        _sync(device)
        t1 = time.perf_counter()
        with autocast:
            if loss_fn is not None:
                y, maps = model(x, return_maps=True)
            else:
                y, maps = model(x), None
        if loss_fn is not None:
            loss_sum += loss_fn(maps, targets)[1].detach().float().reshape(-1)[:3]
        _sync(device)
        t2 = time.perf_counter()
        dets = postprocess(y.float(), conf, iou, max_det=max_det, multi_label=True)
        _sync(device)
        t3 = time.perf_counter()
        t_pre, t_inf, t_post = t_pre + t1 - t0, t_inf + t2 - t1, t_post + t3 - t2

        h, w = x.shape[2:]
        preds_o, gts_o = [], []
        for i, det in enumerate(dets):
            shape = shapes[i] if shapes is not None and i < len(shapes) else None
            gt = _image_targets(targets, i, h, w).cpu()
            det = det.detach().cpu().clone()
            det[:, :4] = _to_original(det[:, :4], (h, w), shape)
            gt[:, 1:] = _to_original(gt[:, 1:].clone(), (h, w), shape)
            preds_o.append(det)
            gts_o.append(gt)
            confusion.process_batch(det, gt)
        evaluator.update(preds_o, gts_o)
        if on_batch is not None:
            on_batch(list(files), preds_o)
        if plots_dir is not None and bi < 3:
            plot_batch(imgs, targets.cpu(), plots_dir / f"val_batch{bi}_labels.jpg", names)
            plot_batch(imgs, targets.cpu(), plots_dir / f"val_batch{bi}_pred.jpg", names, preds=dets)
        n_batches += 1
        n_images += len(dets)

    m = evaluator.compute()
    per_class_targets = m["per_class_targets"]
    per_class = {
        names.get(c, str(c)): {
            "ap50_95": float(m["per_class_ap50_95"][c]),
            "ap50": float(m["per_class_ap50"][c]),
            "targets": int(per_class_targets[c]),
        }
        for c in range(nc)
    }
    loss = (loss_sum / max(n_batches, 1)).cpu().tolist() if loss_fn is not None else None
    per_img = 1e3 / max(n_images, 1)
    out: dict[str, Any] = {
        "map50_95": float(m["map50_95"]),
        "map50": float(m["map50"]),
        "map75": float(m["map75"]),
        "precision": float(m["precision"]),
        "recall": float(m["recall"]),
        "per_class": per_class,
        "loss": loss,
        "speed": {
            "preprocess": t_pre * per_img,
            "inference": t_inf * per_img,
            "postprocess": t_post * per_img,
        },
        "num_images": int(m["num_images"]),
        "num_targets": int(m["num_targets"]),
        "pr_curve": m["pr_curve"],
        "confusion_matrix": np.asarray(confusion.matrix),
    }
    out["fitness"] = fitness(out)
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        name_list = [names.get(i, str(i)) for i in range(nc)]
        plot_pr_curve(m["pr_curve"], name_list, plots_dir / "PR_curve.png")
        confusion.plot(plots_dir / "confusion_matrix.png", names=name_list)
    return out
