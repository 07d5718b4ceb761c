"""Task-aligned label assignment (TAL): the PyTorch reference and the dispatched ``assign`` op.

TAL comes from TOOD (Feng et al. 2021, "TOOD: Task-aligned One-stage Object Detection",
arXiv:2108.07755): every ground-truth box (gt) takes as positives the ``topk`` anchors whose centre
lies inside it and that maximise the alignment metric ``t = s**alpha * u**beta`` (s: predicted
score of the gt's class, u: IoU of the predicted box with the gt). YOLOv9 uses topk=10, alpha=0.5,
beta=6.0 and CIoU clamped at 0 as ``u``. Soft targets are ``t`` rescaled per gt so that its best
anchor gets that anchor's IoU: ``t * max_u(gt) / (max_t(gt) + eps)``.

Semantics follow the official YOLOv9 ``TaskAlignedAssigner``, including its quirks:
  * an anchor claimed by several gts goes to the gt with the largest overlap among *all* gts of
    the image (padding rows included; their overlap is 0), even one that did not claim it;
  * background anchors report gt 0 as ``target_gt_idx`` and get its label and box (they are
    masked out by ``fg_mask`` / zero ``target_scores``); with no gt slots at all (M == 0) the labels
    are ``C`` (the official background index) and the boxes 0.

Tie rule (ours; the official result depends on ``torch.topk``'s unspecified order of equal
values): a gt ranks the anchors *inside it* by metric, descending, equal metrics by ascending
anchor index, and takes the first ``topk``. Anchors outside never count, so a gt with fewer than
``topk`` inside anchors takes all of them (the official code can do the same or fewer).

Non-finite values (ours; the official code lets NaN spread into the targets): a (gt, anchor) pair
is *assignable* when its CIoU is finite and its metric is finite and >= 0 (NaN/Inf boxes or scores
and overflow make them non-finite; negative scores can make the metric negative or NaN). A pair
that is not assignable:
  * is never one of the gt's top-k candidates (as if the anchor were outside the gt);
  * when several gts claim the anchor, NaN/Inf overlaps rank below every finite one;
  * if it is still the anchor's final pair after that (the new gt's class score is NaN, say), the
    anchor is background.
So every positive comes from an assignable pair and, with ``eps > 0``, every target score is
finite, >= 0 and at most its gt's best CIoU. Finite inputs of sane magnitude are not affected. The
C++ and Triton kernels follow the same rule, with the same results.

Memory: the work runs over chunks of whole images, so only a few (chunk, M, A) temporaries live at
once; nothing of shape (B, M, A, 4) or (B, M, topk, A) is built, and no index tensor goes through
the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from yolov9k.kernels.common import box_terms
from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp

__all__ = ["assign", "assign_reference", "AssignResult"]

AssignResult = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]

# Elements of one (images, M, A) chunk. About 10 float temporaries of this size live at once.
_CHUNK_ELEMS_CPU = 1 << 21
_CHUNK_ELEMS_CUDA = 1 << 25
# CPU powers: ATen's pow runs SIMD (SLEEF) over the body of each loop and scalar std::pow over its
# last < 2 x vector-width elements, and the two can differ in the last bit. Padding to a multiple of
# _POW_ALIGN (a multiple of every SIMD loop step) and working in blocks of at most at::GRAIN_SIZE
# (so ATen does not split a block across threads) sends every element through the SIMD path: the
# result of an element then depends on its value only, not on the tensor's length, its position or
# the thread count. csrc/cpu/assign_kernel.cpp does the same.
_POW_ALIGN = 64
_POW_BLOCK = 32768


def _pairwise_ciou(g: dict[str, Tensor], p: dict[str, Tensor], eps: float = 1e-7) -> Tensor:
    """CIoU of every (gt, predicted) pair, clamped at 0 (Zheng et al. 2020, arXiv:1911.08287).

    ``g`` holds (Bc, M) gt terms and ``p`` (Bc, A) predicted-box terms from ``box_terms``. Returns
    (Bc, M, A). Bit-identical to ``boxes.bbox_iou(gt[:, :, None], pd[:, None], xywh=False,
    CIoU=True).clamp(0)`` (same float operations in the same order), with the per-box parts
    (areas, arctangents) computed once per box and most temporaries updated in place.
    """

    def gt(name: str) -> Tensor:
        return g[name][:, :, None]

    def pd(name: str) -> Tensor:
        return p[name][:, None, :]

    inter = torch.minimum(gt("x2"), pd("x2")).sub_(torch.maximum(gt("x1"), pd("x1"))).clamp_(min=0)
    inter_h = torch.minimum(gt("y2"), pd("y2")).sub_(torch.maximum(gt("y1"), pd("y1"))).clamp_(min=0)
    inter.mul_(inter_h)
    union = (gt("area") + pd("area")).sub_(inter).add_(eps)
    iou = inter.div_(union)  # inter no longer needed
    del union
    cw = torch.maximum(gt("x2"), pd("x2")).sub_(torch.minimum(gt("x1"), pd("x1")))
    ch = torch.maximum(gt("y2"), pd("y2")).sub_(torch.minimum(gt("y1"), pd("y1")))
    c2 = cw.mul_(cw).add_(inter_h.copy_(ch).mul_(ch)).add_(eps)  # cw**2 + ch**2 + eps
    del ch
    dx = (pd("xsum") - gt("x1")).sub_(gt("x2"))
    dy = (pd("ysum") - gt("y1")).sub_(gt("y2"))
    rho2 = dx.mul_(dx).add_(dy.mul_(dy)).div_(4)
    del dy
    v = (pd("atan") - gt("atan")).pow_(2).mul_(4 / math.pi**2)
    alpha = v / (v - iou + (1 + eps))
    penalty = rho2.div_(c2).add_(v.mul_(alpha))
    return iou.sub_(penalty).clamp_(min=0)


def _vector_pow(x: Tensor, exponent: float) -> Tensor:
    """``x ** exponent`` (float tensor, any shape) with every element on ATen's SIMD pow on CPU."""
    if x.device.type != "cpu":
        return x.pow(exponent)
    n = x.numel()
    buf = x.new_zeros(-(-n // _POW_ALIGN) * _POW_ALIGN)
    buf[:n] = x.reshape(-1)
    for start in range(0, buf.numel(), _POW_BLOCK):
        buf[start : start + _POW_BLOCK].pow_(exponent)
    return buf[:n].view(x.shape)


def _assignable(overlap: Tensor, metric: Tensor) -> Tensor:
    """(gt, anchor) pairs that may be assigned: finite CIoU and a finite, non-negative metric."""
    return overlap.isfinite() & metric.isfinite() & (metric >= 0)


def _chunk_images(n_img: int, per_image: int, device: torch.device) -> int:
    budget = _CHUNK_ELEMS_CUDA if device.type == "cuda" else _CHUNK_ELEMS_CPU
    return max(1, min(n_img, budget // max(per_image, 1)))


def _assign_chunk(
    scores: Tensor,
    pd_terms: dict[str, Tensor],
    anc: Tensor,
    labels: Tensor,
    gt_boxes: Tensor,
    valid: Tensor,
    gt_terms: dict[str, Tensor],
    topk: int,
    alpha: float,
    beta: float,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Assignment for a chunk of whole images.

    Args:
        scores: (Bc, A, C) sigmoid scores (any float dtype). anc: (A, 2) px. labels: (Bc, M) int64.
        gt_boxes: (Bc, M, 4) xyxy px. valid: (Bc, M) bool. pd_terms / gt_terms: ``box_terms``.
    Returns:
        target_gt_idx (Bc, A) int64, fg (Bc, A) bool, row value (Bc, A) float (0 on background).
    """
    bc, m = labels.shape
    n_anchor = anc.shape[0]
    # Anchor centre strictly inside the gt (by more than eps on all four sides), as officially.
    ax, ay = anc[:, 0], anc[:, 1]
    inside = (ax - gt_boxes[..., 0:1]).gt(eps)
    inside &= (ay - gt_boxes[..., 1:2]).gt(eps)
    inside &= (gt_boxes[..., 2:3] - ax).gt(eps)
    inside &= (gt_boxes[..., 3:4] - ay).gt(eps)
    inside &= valid[..., None]

    overlaps = _pairwise_ciou(gt_terms, pd_terms)  # (Bc, M, A), clamped at 0
    cls_scores = torch.gather(scores.transpose(1, 2), 1, labels[..., None].expand(bc, m, n_anchor))
    # official: s**a * u**b, s**a in float32, the product in the boxes' precision (float64 for float64)
    metric = _vector_pow(overlaps, beta).mul_(_vector_pow(cls_scores.float(), alpha))
    del cls_scores
    candidate = inside & _assignable(overlaps, metric)  # non-finite values: module docstring
    del inside

    # Top-k of the candidates per gt, ties by ascending anchor index (see the module docstring).
    k = min(topk, n_anchor)
    ranked = torch.where(candidate, metric, -1.0)
    kth = ranked.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)
    selected = ranked > kth
    at_kth = ranked == kth
    room = k - selected.sum(-1, keepdim=True, dtype=torch.int32)
    at_kth &= at_kth.cumsum(-1, dtype=torch.int32) <= room
    selected |= at_kth
    selected &= candidate  # kth may be -1 (fewer than k candidates): never take the others
    del ranked, at_kth, candidate

    # An anchor claimed by several gts goes to the gt of largest overlap among all gts (NaN and
    # infinite overlaps rank last). Reductions over M use amax/amin, which vectorise along A;
    # argmax over dim 1 does not.
    n_claims = selected.sum(1, dtype=torch.int32)  # (Bc, A)
    gt_range = torch.arange(m, device=labels.device, dtype=torch.int32)[None, :, None]
    claimed_gt = torch.where(selected, gt_range, 0).amax(1)  # the claiming gt if only one, 0 if none
    del selected
    ranked_overlaps = torch.where(overlaps.isfinite(), overlaps, -1.0)
    best_overlap_gt = torch.where(ranked_overlaps == ranked_overlaps.amax(1, keepdim=True), gt_range, m)
    del ranked_overlaps
    target_gt_idx = torch.where(n_claims > 1, best_overlap_gt.amin(1), claimed_gt).long()  # first max

    # The final pair of a contested anchor can be unassignable (its new gt's class score is NaN):
    # the anchor is then background.
    idx = target_gt_idx[:, None, :]
    metric_a = metric.gather(1, idx)[:, 0]
    overlap_a = overlaps.gather(1, idx)[:, 0]
    fg = (n_claims > 0) & _assignable(overlap_a, metric_a)
    target_gt_idx = torch.where(fg, target_gt_idx, 0)
    metric_a = torch.where(fg, metric_a, 0.0)
    overlap_a = torch.where(fg, overlap_a, 0.0)

    # Soft targets: t * (max overlap of the gt) / (max t of the gt + eps), over its final anchors.
    zeros = metric_a.new_zeros(bc, m)
    best_metric = zeros.scatter_reduce(1, target_gt_idx, metric_a, "amax")
    best_overlap = zeros.scatter_reduce(1, target_gt_idx, overlap_a, "amax")
    value = metric_a * best_overlap.gather(1, target_gt_idx) / (best_metric.gather(1, target_gt_idx) + eps)
    return target_gt_idx, fg, value


@torch.no_grad()
def assign_reference(
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
) -> AssignResult:
    """PyTorch reference of ``assign`` (same arguments and results; inputs are not validated)."""
    bsz, n_anchor, n_cls = pd_scores.shape
    m = gt_bboxes.shape[1]
    device = pd_scores.device
    dtype = torch.float64 if pd_bboxes.dtype == torch.float64 else torch.float32
    pd_bboxes, anc = pd_bboxes.to(dtype), anc_points.to(dtype)
    gt_bboxes = gt_bboxes.to(dtype)
    labels = gt_labels.reshape(bsz, m).long()

    if m == 0:  # official: background index everywhere, zero boxes and scores
        return (
            torch.full((bsz, n_anchor), n_cls, dtype=torch.long, device=device),
            pd_bboxes.new_zeros(bsz, n_anchor, 4),
            torch.zeros(bsz, n_anchor, n_cls, dtype=torch.float32, device=device),
            torch.zeros(bsz, n_anchor, dtype=torch.bool, device=device),
            torch.zeros(bsz, n_anchor, dtype=torch.long, device=device),
        )

    valid = mask_gt.reshape(bsz, m).bool()
    pd_terms = box_terms(pd_bboxes, 1e-7)  # whole batch at once: same arctangents as officially
    gt_terms = box_terms(gt_bboxes, 1e-7)
    target_gt_idx = torch.empty(bsz, n_anchor, dtype=torch.long, device=device)
    fg_mask = torch.empty(bsz, n_anchor, dtype=torch.bool, device=device)
    value = torch.empty(bsz, n_anchor, dtype=dtype, device=device)
    step = _chunk_images(bsz, m * n_anchor, device)
    for b0 in range(0, bsz, step):  # chunks of whole images bound the (chunk, M, A) temporaries
        sl = slice(b0, b0 + step)
        out = _assign_chunk(
            pd_scores[sl],
            {k: v[sl] for k, v in pd_terms.items()},
            anc,
            labels[sl],
            gt_bboxes[sl],
            valid[sl],
            {k: v[sl] for k, v in gt_terms.items()},
            topk,
            alpha,
            beta,
            eps,
        )
        target_gt_idx[sl], fg_mask[sl], value[sl] = out

    target_labels = labels.gather(1, target_gt_idx)
    target_bboxes = gt_bboxes.gather(1, target_gt_idx[..., None].expand(bsz, n_anchor, 4))
    target_scores = torch.zeros(bsz, n_anchor, n_cls, dtype=torch.float32, device=device)
    target_scores.scatter_(2, target_labels[..., None], value.float()[..., None])
    return target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx


def _native_assign(*args) -> AssignResult:
    """C++ kernel ``yolov9k::assign`` (csrc/cpu/assign_kernel.cpp): the same results without any
    (B, M, A) tensor. float64 boxes go to the reference (the kernel computes in float32)."""
    if args[1].dtype == torch.float64:
        return assign_reference(*args)
    return torch.ops.yolov9k.assign(*args)


def _triton_assign(*args, **kwargs) -> AssignResult:
    """Triton kernels (``yolov9k.kernels.assign``; CUDA tensors, or CPU under TRITON_INTERPRET=1)."""
    from yolov9k.kernels.assign import assign_triton  # noqa: PLC0415  (triton is optional)

    out = assign_triton(*args, **kwargs)
    return assign_reference(*args, **kwargs) if out is None else out  # None: a case left to torch


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


# No autograd: assignment targets are constants of the loss. Schema: csrc/assign.cpp.
_dispatch.define(
    "assign", reference=assign_reference, kernel_ops=[KernelOp("yolov9k::assign", fake=_assign_fake)]
)
_dispatch.register("assign", "cpp", _native_assign, native_op="assign")
_dispatch.register("assign", "triton", _triton_assign)


def _check(name: str, t: Tensor, shape: tuple[int | None, ...], floating: bool = True) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"assign: {name} must be a Tensor, got {type(t).__name__}")
    ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"assign: {name} must have shape {want}, got {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"assign: {name} must be floating point, got {t.dtype}")


def assign(
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
) -> AssignResult:
    """Task-aligned assignment of ground-truth boxes to anchors (official YOLOv9 semantics).

    Args:
        pd_scores: (B, A, C) predicted class probabilities (after sigmoid); fp16/bf16 are computed
            in float32.
        pd_bboxes: (B, A, 4) predicted boxes, xyxy pixels. float64 boxes make the CIoU, the metric
            and ``target_bboxes`` float64, as officially (every backend hands them to the reference);
            any other floating dtype is computed in float32.
        anc_points: (A, 2) anchor centres (x, y), pixels.
        gt_labels: (B, M, 1) class index per gt slot (float or integer).
        gt_bboxes: (B, M, 4) gt boxes, xyxy pixels; padding rows are ignored through ``mask_gt``.
        mask_gt: (B, M, 1) 1/True for real gts, 0/False for padding.
        topk: positives per gt (YOLOv9: 10). alpha, beta: metric exponents (0.5, 6.0).
        eps: margin of the inside test and the normalisation's epsilon (1e-9).
    Returns:
        target_labels (B, A) int64: class of the assigned gt (gt 0's on background);
        target_bboxes (B, A, 4): its box, xyxy px, float32 (float64 for float64 ``pd_bboxes``);
        target_scores (B, A, C) float32: ``one_hot(label) * fg * normalised metric``;
        fg_mask (B, A) bool;
        target_gt_idx (B, A) int64: index into the M gt slots (0 on background).
    Labels must lie in [0, C) for every slot the result can point to (checked on CPU only, to keep
    CUDA calls free of host syncs). The module docstring gives the tie rule, the official quirks
    and the rule for NaN/Inf inputs (never a NaN target score).
    """
    _check("pd_scores", pd_scores, (None, None, None))
    bsz, n_anchor, _ = pd_scores.shape
    _check("pd_bboxes", pd_bboxes, (bsz, n_anchor, 4))
    _check("anc_points", anc_points, (n_anchor, 2))
    _check("gt_bboxes", gt_bboxes, (bsz, None, 4))
    m = gt_bboxes.shape[1]
    _check("gt_labels", gt_labels, (bsz, m, 1), floating=False)
    _check("mask_gt", mask_gt, (bsz, m, 1), floating=False)
    if gt_labels.dtype == torch.bool or gt_labels.is_complex():
        raise TypeError(f"assign: gt_labels must be a real number type, got {gt_labels.dtype}")
    if n_anchor == 0:
        raise ValueError("assign: there must be at least one anchor (A > 0)")
    if int(topk) != topk or topk < 1:
        raise ValueError(f"assign: topk must be a positive integer, got {topk}")
    devices = {t.device for t in (pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt)}
    if len(devices) != 1:
        raise ValueError(f"assign: all tensors must be on one device, got {sorted(map(str, devices))}")
    if pd_scores.device.type == "cpu" and m > 0:
        lab = gt_labels.reshape(bsz, m)
        if bool(((lab < 0) | (lab >= pd_scores.shape[2]) | (lab != lab.floor())).any()):
            raise ValueError(
                f"assign: gt_labels must be integers in [0, {pd_scores.shape[2]}) (C = pd_scores.shape[2])"
            )
    _, fn = _dispatch.select("assign", pd_scores.device)
    return fn(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, int(topk), alpha, beta, eps)
