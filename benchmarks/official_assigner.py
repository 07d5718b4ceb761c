"""Benchmark baseline: the dense algorithm of the official YOLOv9 ``TaskAlignedAssigner``.

Written from a reading of the official ``utils/tal/assigner.py`` (not copied): it keeps the same
tensors the official code materialises, because their time and memory are what we measure against:
a (B, M, A, 4) in-box delta tensor, several dense (B, M, A) float tensors, an int64 one-hot of the
top-k indices of shape (B, M, topk, A), an int64 (B, A, C) one-hot of the labels, and index tensors
built on the host. Results equal ``yolov9k.ops.assign`` except where ``torch.topk`` breaks ties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from yolov9k.ops.boxes import bbox_iou


@torch.no_grad()
def official_style_assign(
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
    """Same arguments and outputs as ``yolov9k.ops.assign``; dense like the official code."""
    bs, n_anchor, n_cls = pd_scores.shape
    n_gt = gt_bboxes.shape[1]
    if n_gt == 0:
        return (
            torch.full_like(pd_scores[..., 0], n_cls, dtype=torch.long),
            torch.zeros_like(pd_bboxes),
            torch.zeros_like(pd_scores),
            torch.zeros_like(pd_scores[..., 0], dtype=torch.bool),
            torch.zeros_like(pd_scores[..., 0], dtype=torch.long),
        )

    # Alignment metric and CIoU for every (gt, anchor) pair: (B, M, A).
    batch_idx = torch.arange(bs).view(-1, 1).expand(bs, n_gt)  # host-built index, as officially
    label_idx = gt_labels.long().squeeze(-1).cpu()
    cls_scores = pd_scores[batch_idx, :, label_idx]
    overlaps = bbox_iou(gt_bboxes.unsqueeze(2), pd_bboxes.unsqueeze(1), xywh=False, CIoU=True)
    overlaps = overlaps.squeeze(3).clamp(0)
    metric = cls_scores.pow(alpha) * overlaps.pow(beta)

    # In-box test through a (B, M, A, 4) tensor of side distances.
    lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
    deltas = torch.cat((anc_points[None] - lt, rb - anc_points[None]), dim=2).view(bs, n_gt, n_anchor, 4)
    in_gts = deltas.amin(3).gt_(eps)

    # Top-k through an int64 one-hot (B, M, topk, A).
    _, top_idx = torch.topk(metric * in_gts, topk, dim=-1)
    top_idx = torch.where(mask_gt.repeat(1, 1, topk).bool(), top_idx, 0)
    in_topk = F.one_hot(top_idx, n_anchor).sum(-2)
    in_topk = torch.where(in_topk > 1, 0, in_topk).to(metric.dtype)
    mask_pos = in_topk * in_gts * mask_gt

    # An anchor claimed by several gts keeps the gt of largest overlap.
    fg_count = mask_pos.sum(-2)
    if fg_count.max() > 1:
        multi = (fg_count.unsqueeze(1) > 1).expand(-1, n_gt, -1)
        best = F.one_hot(overlaps.argmax(1), n_gt).permute(0, 2, 1).to(overlaps.dtype)
        mask_pos = torch.where(multi, best, mask_pos)
        fg_count = mask_pos.sum(-2)
    target_gt_idx = mask_pos.argmax(-2)

    flat_idx = target_gt_idx + torch.arange(bs, device=gt_labels.device)[:, None] * n_gt
    target_labels = gt_labels.long().flatten()[flat_idx]
    target_bboxes = gt_bboxes.view(-1, 4)[flat_idx]
    onehot = F.one_hot(target_labels, n_cls)
    target_scores = torch.where(fg_count[:, :, None].repeat(1, 1, n_cls) > 0, onehot, 0)

    metric = metric * mask_pos
    best_metric = metric.amax(-1, keepdim=True)
    best_overlap = (overlaps * mask_pos).amax(-1, keepdim=True)
    norm = (metric * best_overlap / (best_metric + eps)).amax(-2).unsqueeze(-1)
    return target_labels, target_bboxes, target_scores * norm, fg_count.bool(), target_gt_idx
