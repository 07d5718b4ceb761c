"""Fake (meta) implementations of the ``yolov9k::`` ops, for torch.compile and export, and the
autograd formulas of the differentiable ones (``box_iou``, ``bn_silu_train``).

Imported by ``_extension`` once the library is loaded; each op's fake lives here so there is one
list of them to keep in step with ``csrc/*.cpp`` schemas.
"""

from __future__ import annotations

import torch
from torch import Tensor


@torch.library.register_fake("yolov9k::box_iou")
def _box_iou_fake(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    torch._check(boxes1.dim() == 2 and boxes1.shape[1] == 4, lambda: "boxes1 must be (N, 4)")
    torch._check(boxes2.dim() == 2 and boxes2.shape[1] == 4, lambda: "boxes2 must be (M, 4)")
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]))


def _box_iou_setup_context(ctx, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _box_iou_backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
    from yolov9k.ops.boxes import box_iou_backward  # boxes imports the dispatch, which imports us

    boxes1, boxes2 = ctx.saved_tensors
    return box_iou_backward(boxes1, boxes2, grad, tuple(ctx.needs_input_grad[:2]))


# the same gradient as the PyTorch reference on every backend (an IoU loss term must never get none)
torch.library.register_autograd("yolov9k::box_iou", _box_iou_backward, setup_context=_box_iou_setup_context)


# --- NMS (csrc/nms.cpp) -------------------------------------------------------------------------


@torch.library.register_fake("yolov9k::batched_nms")
def _batched_nms_fake(
    boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float, max_keep: int = -1
) -> Tensor:
    torch._check(boxes.dim() == 2 and boxes.shape[1] == 4, lambda: "boxes must be (N, 4)")
    torch._check(scores.dim() == 1 and idxs.dim() == 1, lambda: "scores and idxs must be (N,)")
    kept = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((kept,), dtype=torch.int64)


@torch.library.register_fake("yolov9k::postprocess")
def _postprocess_fake(
    pred: Tensor,
    conf_thres: float,
    iou_thres: float,
    max_det: int,
    max_nms: int,
    multi_label: bool,
    agnostic: bool,
    class_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    torch._check(pred.dim() == 3 and pred.shape[1] >= 5, lambda: "pred must be (B, 4 + nc, A)")
    batch = pred.shape[0]
    return (
        pred.new_empty((batch, max_det, 6), dtype=torch.float32),
        pred.new_empty((batch,), dtype=torch.int64),
    )


# --- task-aligned assigner (csrc/assign.cpp) ----------------------------------------------------


@torch.library.register_fake("yolov9k::assign")
def _assign_fake(
    pd_scores: Tensor,
    pd_bboxes: Tensor,
    anc_points: Tensor,
    gt_labels: Tensor,
    gt_bboxes: Tensor,
    mask_gt: Tensor,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    torch._check(pd_scores.dim() == 3, lambda: "pd_scores must be (B, A, C)")
    torch._check(pd_bboxes.dim() == 3 and pd_bboxes.shape[2] == 4, lambda: "pd_bboxes must be (B, A, 4)")
    bsz, n_anchor, n_cls = pd_scores.shape
    return (
        pd_scores.new_empty((bsz, n_anchor), dtype=torch.int64),
        pd_scores.new_empty((bsz, n_anchor, 4), dtype=torch.float32),
        pd_scores.new_empty((bsz, n_anchor, n_cls), dtype=torch.float32),
        pd_scores.new_empty((bsz, n_anchor), dtype=torch.bool),
        pd_scores.new_empty((bsz, n_anchor), dtype=torch.int64),
    )


# --- fused train-mode BatchNorm2d + SiLU (csrc/bn_silu.cpp) -------------------------------------


def _bn_silu_train_fake(x: Tensor, weight: Tensor, bias: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    torch._check(x.dim() == 4, lambda: "x must be (N, C, H, W)")
    channels = x.shape[1]
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        x.new_empty((channels,)),
        x.new_empty((channels,)),
    )


def _bn_silu_train_backward_fake(
    grad_y: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, invstd: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    torch._check(grad_y.shape == x.shape, lambda: "grad_y must have the shape of x")
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        weight.new_empty(weight.shape),
        bias.new_empty(bias.shape),
    )


def _bn_silu_train_setup_context(ctx, inputs: tuple, output: tuple[Tensor, Tensor, Tensor]) -> None:
    x, weight, bias, _ = inputs
    _, mean, invstd = output
    ctx.save_for_backward(x, weight, bias, mean, invstd)  # x and per-channel values only
    ctx.mark_non_differentiable(mean, invstd)


def _bn_silu_train_backward(ctx, grad_y: Tensor, _grad_mean: Tensor, _grad_invstd: Tensor) -> tuple:
    x, weight, bias, mean, invstd = ctx.saved_tensors
    grads = torch.ops.yolov9k.bn_silu_train_backward(grad_y, x, weight, bias, mean, invstd)
    return (*grads, None)


# An extension built before these ops existed lacks them: register only what is there.
if hasattr(torch.ops.yolov9k, "bn_silu_train"):
    torch.library.register_fake("yolov9k::bn_silu_train")(_bn_silu_train_fake)
    torch.library.register_fake("yolov9k::bn_silu_train_backward")(_bn_silu_train_backward_fake)
    torch.library.register_autograd(
        "yolov9k::bn_silu_train", _bn_silu_train_backward, setup_context=_bn_silu_train_setup_context
    )
