"""Task-aligned assigner (TAL) in Triton, without any (B, M, A) tensor.

Same arguments, results and tie rule as ``yolov9k.ops.assign`` (see ``yolov9k/ops/assign.py`` for
the semantics and the official quirks). Reading order: helpers, the three kernels, the host wrapper.

  1. ``_topk_kernel``, one program per (image, gt): the gt's candidates are only the grid cells of its
     column/row range on each level (anchor centres ``(i + 0.5) * stride``), re-checked with the exact
     official inside predicate, and only assignable pairs count (finite CIoU, finite metric >= 0: the
     reference's rule for NaN/Inf inputs). One pass keeps the best ``topk`` (metric descending, then
     anchor index ascending) as packed int64 keys in registers; blocks that cannot improve the list
     are skipped. Each pick adds a claim on its anchor (atomic add) and records the lowest claiming
     gt (atomic min).
  2. ``_resolve_kernel``, one program per (image, block of anchors): anchors with several claims go
     to the gt of largest CIoU among all M gts (first on ties, NaN/Inf last), and to background if
     that pair is not assignable; the final gt's CIoU and metric are stored and folded into per-gt
     maxima with float atomic max (values are >= 0).
  3. ``_write_kernel``: labels, boxes, fg, gt index and the normalised score
     ``t * max_iou(gt) / (max_t(gt) + eps)`` written directly into the outputs.

Memory: the outputs, plus (B, A) and (B, M) scratch. The CIoU's arctangents come from the reference's
own ``box_terms`` (same torch calls, same bits); the kernels compute the rest in the reference's
operation order with fp fusion off, IEEE division and ``sqrt_rn``; ``s**alpha`` / ``iou**beta`` use
libdevice ``powf`` (what torch's CUDA pow calls). Under ``TRITON_INTERPRET=1`` (CPU tests) libdevice
is unavailable and powers are computed as ``exp(e * log(x))`` in float64, which can differ from the
CPU reference's pow by one ulp; so can ``s ** 0.5``, because torch's CPU float32 sqrt is not always
correctly rounded (0.5267702 -> 0.72578931, exact 0.72578937) while the interpreter's is. Scores
then agree to ~1e-7 relative, and a top-k decision could only flip on a near-exact tie.

Labels: a gt whose label is outside [0, C) is treated as padding (as if ``mask_gt`` were 0) and
its label is clamped into [0, C) for every read, so no kernel reads or writes out of bounds; checking
it would cost a host sync per call (``yolov9k.ops.assign`` raises for it on CPU tensors, and
``DetectionLoss`` never passes such a label).

Anchor layouts that are not a regular multi-level grid (as ``make_anchors`` builds it), float64
boxes and M == 0 go to the PyTorch reference. Reading the layout costs one (A, 2) device-to-host
copy (a host sync) the first time an anchor tensor is seen; it is remembered for that tensor while
it lives unchanged (``DetectionLoss`` keeps its anchors), so a training step makes no sync here.
"""

from __future__ import annotations

import functools
import math
import os
import weakref

import numpy as np
import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import box_terms

__all__ = ["assign_triton", "grid_levels"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
if not _INTERPRET:  # libdevice is not available (nor needed) under the interpreter
    from triton.language.extra import libdevice
else:
    libdevice = None

CIOU_EPS = 1e-7  # bbox_iou's eps
_FOUR_OVER_PI2 = tl.constexpr(4.0 / math.pi**2)  # rounded to float32 in the kernel, as torch does
_ONE_PLUS_EPS = tl.constexpr(1.0 + 1e-7)
MAX_LEVELS = 16
Level = tuple[float, int, int, int]  # (stride, nx, ny, offset) of one anchor-grid level
BLOCK_CAND = 256 if _INTERPRET else 128  # candidates per step of a gt program (interpreter: few, wide steps)
BLOCK_A = 512 if _INTERPRET else 256  # anchors per resolve/write program
_INF = tl.constexpr(float("inf"))
_NO_KEY = tl.constexpr(2**63 - 1)

# ---------------------------------------------------------------------------------------------
# Helpers


def grid_levels(anc_points: Tensor) -> list[Level] | None:
    """(stride, nx, ny, offset) per level if ``anc_points`` (A, 2) px is exactly a regular grid.

    Level l holds ``nx * ny`` anchors at ``((i + 0.5) * stride, (j + 0.5) * stride)``, row-major,
    starting at index ``offset`` (``make_anchors`` x stride). Returns None for any other layout.
    """
    anc = anc_points.detach().to("cpu", torch.float32).numpy()
    n = anc.shape[0]
    levels: list[Level] = []
    p = 0
    while p < n:
        s = np.float32(2.0) * anc[p, 0]
        if len(levels) == MAX_LEVELS or not (np.isfinite(s) and s > 0):
            return None
        rest = anc[p:]
        centres = (np.arange(len(rest), dtype=np.float32) + np.float32(0.5)) * s
        ok_x = rest[:, 0] == centres
        # nx: leading run of the first row (y == s / 2, x == (i + 0.5) * s)
        first_row = ok_x & (rest[:, 1] == centres[0])
        nx = int(np.argmin(first_row)) if not first_row.all() else len(rest)
        if nx == 0:
            return None
        ny = len(rest) // nx
        rows = rest[: ny * nx].reshape(ny, nx, 2)
        good = (rows[..., 0] == centres[:nx][None]) & (rows[..., 1] == centres[:ny][:, None])
        row_ok = good.all(1)
        ny = int(np.argmin(row_ok)) if not row_ok.all() else ny
        levels.append((float(s), nx, ny, p))
        p += nx * ny
    return levels


_LEVELS_CACHE: dict[int, tuple[weakref.ref, int, list[Level] | None]] = {}


def _grid_levels_cached(anc_points: Tensor) -> list[Level] | None:
    """``grid_levels`` remembered per live, unmodified anchor tensor (no host sync on a repeat)."""
    key = id(anc_points)
    hit = _LEVELS_CACHE.get(key)
    if hit is not None and hit[0]() is anc_points and hit[1] == anc_points._version:
        return hit[2]
    levels = grid_levels(anc_points)
    for k in [k for k, v in _LEVELS_CACHE.items() if v[0]() is None]:  # drop dead tensors
        del _LEVELS_CACHE[k]
    _LEVELS_CACHE[key] = (weakref.ref(anc_points), anc_points._version, levels)
    return levels


@functools.lru_cache(maxsize=64)
def _level_tensors(levels: tuple[Level, ...], device: torch.device) -> tuple[Tensor, ...]:
    """(stride f32, nx, ny, offset int32) per level on ``device``, made once per layout and device."""
    lvl = torch.tensor([[lv[k] for lv in levels] for k in range(4)], dtype=torch.float64)
    return (lvl[0].float().to(device), *(lvl[k].to(torch.int32).to(device) for k in (1, 2, 3)))


def _pow_mode(exponent: float) -> int:
    """How torch evaluates ``x ** exponent`` (scalar exponent): 1 sqrt, 2 x*x, 3 x*x*x, 0 powf."""
    return {0.5: 1, 2.0: 2, 3.0: 3}.get(float(exponent), 0)


@triton.jit
def _pow(x, e, MODE: tl.constexpr, INTERPRET: tl.constexpr):
    if MODE == 1:
        y = tl.sqrt_rn(x)
    elif MODE == 2:
        y = x * x
    elif MODE == 3:
        y = x * x * x
    elif INTERPRET:
        y = tl.exp(e * tl.log(x.to(tl.float64))).to(tl.float32)
    else:
        y = libdevice.pow(x, e)
    return y


@triton.jit
def _ciou(gx1, gy1, gx2, gy2, g_atan, px1, py1, px2, py2, p_atan):
    """CIoU clamped at 0, in the reference's float32 operation order (``_pairwise_ciou``)."""
    g_area = (gx2 - gx1) * ((gy2 - gy1) + 1e-7)
    p_area = (px2 - px1) * ((py2 - py1) + 1e-7)
    inter_w = tl.minimum(gx2, px2) - tl.maximum(gx1, px1)
    inter_h = tl.minimum(gy2, py2) - tl.maximum(gy1, py1)
    inter_w = tl.where(inter_w < 0, 0.0, inter_w)
    inter_h = tl.where(inter_h < 0, 0.0, inter_h)
    inter = inter_w * inter_h
    iou = tl.div_rn(inter, ((g_area + p_area) - inter) + 1e-7)
    cw = tl.maximum(gx2, px2) - tl.minimum(gx1, px1)
    ch = tl.maximum(gy2, py2) - tl.minimum(gy1, py1)
    c2 = (cw * cw + ch * ch) + 1e-7
    dx = ((px1 + px2) - gx1) - gx2
    dy = ((py1 + py2) - gy1) - gy2
    rho2 = tl.div_rn(dx * dx + dy * dy, 4.0)
    d = p_atan - g_atan
    v = (d * d) * _FOUR_OVER_PI2
    alpha = tl.div_rn(v, (v - iou) + _ONE_PLUS_EPS)
    out = iou - (tl.div_rn(rho2, c2) + v * alpha)
    return tl.where(out < 0, 0.0, out)


@triton.jit
def _assignable(iou, metric):
    """Pairs that may be assigned: finite CIoU, finite metric >= 0 (NaN fails every comparison)."""
    return (tl.abs(iou) < _INF) & (metric >= 0.0) & (metric < _INF)


@triton.jit
def _cell_range(lo_edge, hi_edge, margin, stride, n):
    """Cells [lo, hi] (int32) of one axis whose centre can lie in (lo_edge, hi_edge): a superset."""
    lo = tl.floor((lo_edge - margin) / stride - 0.5) - 1.0
    hi = tl.floor((hi_edge + margin) / stride - 0.5) + 2.0
    lo = tl.where(lo > 0.0, lo, 0.0)  # NaN -> 0
    lo = tl.where(lo < n, lo, n * 1.0)
    hi = tl.where(hi < n - 1.0, hi, n - 1.0)  # NaN -> n - 1 (the exact predicate rejects all)
    hi = tl.where(hi > -1.0, hi, -1.0)
    return lo.to(tl.int32), hi.to(tl.int32)


# ---------------------------------------------------------------------------------------------
# Kernels


@triton.jit
def _topk_kernel(
    scores_ptr, s_sb, s_sa, s_sc,  # (B, A, C) any float dtype, strides in elements
    pd_ptr, pd_atan_ptr,  # (B, A, 4), (B, A) float32 contiguous
    gt_ptr, gt_atan_ptr, label_ptr, valid_ptr,  # (B, M, 4), (B, M) f32, (B, M) i32, (B, M) i8
    anc_ptr,  # (A, 2) float32
    lvl_stride_ptr, lvl_nx_ptr, lvl_ny_ptr, lvl_off_ptr, n_levels,
    claims_ptr, first_ptr,  # (B, A) int32: claim count, lowest claiming gt (init M)
    A, M, topk, eps, alpha, beta,
    ALPHA_MODE: tl.constexpr, BETA_MODE: tl.constexpr, INTERPRET: tl.constexpr,
    TOPK_PAD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    b = g // M
    j = g % M
    valid = tl.load(valid_ptr + g) != 0
    n_lvl = tl.where(valid, n_levels, 0)
    gx1 = tl.load(gt_ptr + 4 * g)
    gy1 = tl.load(gt_ptr + 4 * g + 1)
    gx2 = tl.load(gt_ptr + 4 * g + 2)
    gy2 = tl.load(gt_ptr + 4 * g + 3)
    g_atan = tl.load(gt_atan_ptr + g)
    label = tl.load(label_ptr + g)
    margin = tl.abs(eps)
    offs = tl.arange(0, BLOCK)
    slot = tl.arange(0, TOPK_PAD)
    # The best k candidates so far as int64 keys (metric bits << 32 | (2**31 - 1 - anchor)): metrics
    # are >= 0, so a larger key is a larger metric or, on equal metrics, a lower anchor index. -1: empty.
    top = tl.full([TOPK_PAD], -1, tl.int64)
    for lvl in range(n_lvl):
        s = tl.load(lvl_stride_ptr + lvl)
        nx = tl.load(lvl_nx_ptr + lvl)
        ny = tl.load(lvl_ny_ptr + lvl)
        off = tl.load(lvl_off_ptr + lvl)
        i0, i1 = _cell_range(gx1, gx2, margin, s, nx)
        j0, j1 = _cell_range(gy1, gy2, margin, s, ny)
        ncols = tl.maximum(i1 - i0 + 1, 0)
        n = ncols * tl.maximum(j1 - j0 + 1, 0)
        for start in range(0, n, BLOCK):
            k = start + offs
            in_rect = k < n
            kc = tl.where(in_rect, k, 0)
            a = off + (j0 + kc // ncols) * nx + (i0 + kc % ncols)
            ax = tl.load(anc_ptr + 2 * a, mask=in_rect, other=0.0)
            ay = tl.load(anc_ptr + 2 * a + 1, mask=in_rect, other=0.0)
            inside = in_rect & ((ax - gx1) > eps) & ((ay - gy1) > eps)
            inside = inside & ((gx2 - ax) > eps) & ((gy2 - ay) > eps)
            pb = pd_ptr + 4 * (b * A + a)
            px1 = tl.load(pb, mask=inside, other=0.0)
            py1 = tl.load(pb + 1, mask=inside, other=0.0)
            px2 = tl.load(pb + 2, mask=inside, other=0.0)
            py2 = tl.load(pb + 3, mask=inside, other=0.0)
            p_atan = tl.load(pd_atan_ptr + b * A + a, mask=inside, other=0.0)
            s_off = b.to(tl.int64) * s_sb + a.to(tl.int64) * s_sa + label * s_sc
            sc = tl.load(scores_ptr + s_off, mask=inside, other=0.0)
            ov = _ciou(gx1, gy1, gx2, gy2, g_atan, px1, py1, px2, py2, p_atan)
            metric = _pow(sc.to(tl.float32), alpha, ALPHA_MODE, INTERPRET) * _pow(
                ov, beta, BETA_MODE, INTERPRET
            )
            candidate = inside & _assignable(ov, metric)
            bits = (metric + 0.0).to(tl.int32, bitcast=True).to(tl.int64)  # + 0.0: -0.0 -> +0.0
            key = tl.where(candidate, (bits << 32) | (0x7FFFFFFF - a).to(tl.int64), -1)
            kth = tl.min(tl.where(slot < topk, top, _NO_KEY), axis=0)
            if tl.max(key, axis=0) > kth:  # merge: k rounds of "take the largest of both lists"
                merged = tl.full([TOPK_PAD], -1, tl.int64)
                for t in range(topk):
                    best = tl.maximum(tl.max(top, axis=0), tl.max(key, axis=0))
                    merged = tl.where(slot == t, best, merged)
                    top = tl.where(top == best, -1, top)
                    key = tl.where(key == best, -1, key)
                top = merged
    picked = (slot < topk) & (top >= 0)
    a_top = 0x7FFFFFFF - (top & 0xFFFFFFFF).to(tl.int32)
    a_top = tl.where(picked, a_top, 0)
    tl.atomic_add(claims_ptr + b * A + a_top, 1, mask=picked)
    tl.atomic_min(first_ptr + b * A + a_top, j, mask=picked)


@triton.jit
def _resolve_kernel(
    scores_ptr, s_sb, s_sa, s_sc,
    pd_ptr, pd_atan_ptr, gt_ptr, gt_atan_ptr, label_ptr,
    claims_ptr, first_ptr,  # (B, A) int32 from _topk_kernel
    tgt_ptr, metric_ptr, iou_ptr,  # (B, A) out: final gt, its metric, its CIoU
    best_metric_ptr, best_iou_ptr,  # (B, M) float32, zero-initialised, atomic max
    A, M, alpha, beta,
    ALPHA_MODE: tl.constexpr, BETA_MODE: tl.constexpr, INTERPRET: tl.constexpr,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    a = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_range = a < A
    ba = b * A + a
    claims = tl.load(claims_ptr + ba, mask=in_range, other=0)
    first = tl.load(first_ptr + ba, mask=in_range, other=0)
    fg = claims > 0
    pb = pd_ptr + 4 * ba
    px1 = tl.load(pb, mask=in_range, other=0.0)
    py1 = tl.load(pb + 1, mask=in_range, other=0.0)
    px2 = tl.load(pb + 2, mask=in_range, other=0.0)
    py2 = tl.load(pb + 3, mask=in_range, other=0.0)
    p_atan = tl.load(pd_atan_ptr + ba, mask=in_range, other=0.0)
    tgt = tl.where(claims == 1, first, 0)
    contested = claims > 1
    if tl.max(contested.to(tl.int32), axis=0) > 0:  # largest CIoU of all M gts, first on ties, NaN/Inf last
        best_v = tl.full([BLOCK], -1.0, tl.float32)
        best_j = tl.zeros([BLOCK], tl.int32)
        for jj in range(M):
            gp = gt_ptr + 4 * (b * M + jj)
            v = _ciou(
                tl.load(gp), tl.load(gp + 1), tl.load(gp + 2), tl.load(gp + 3),
                tl.load(gt_atan_ptr + b * M + jj), px1, py1, px2, py2, p_atan,
            )  # fmt: skip
            take = (v > best_v) & (v < _INF)  # NaN and +Inf never taken (-1 < every clamped CIoU)
            best_j = tl.where(take, jj, best_j)
            best_v = tl.where(take, v, best_v)
        tgt = tl.where(contested, best_j, tgt)
    g = b * M + tgt
    ov = _ciou(
        tl.load(gt_ptr + 4 * g, mask=in_range, other=0.0),
        tl.load(gt_ptr + 4 * g + 1, mask=in_range, other=0.0),
        tl.load(gt_ptr + 4 * g + 2, mask=in_range, other=0.0),
        tl.load(gt_ptr + 4 * g + 3, mask=in_range, other=0.0),
        tl.load(gt_atan_ptr + g, mask=in_range, other=0.0),
        px1, py1, px2, py2, p_atan,
    )  # fmt: skip
    label = tl.load(label_ptr + g, mask=in_range, other=0)
    s_off = b.to(tl.int64) * s_sb + a.to(tl.int64) * s_sa + label * s_sc
    sc = tl.load(scores_ptr + s_off, mask=fg, other=0.0)
    metric = _pow(sc.to(tl.float32), alpha, ALPHA_MODE, INTERPRET) * _pow(ov, beta, BETA_MODE, INTERPRET)
    fg = fg & _assignable(ov, metric)  # a contested anchor whose new pair is not: background
    tgt = tl.where(fg, tgt, 0)
    metric = tl.where(fg, metric, 0.0)
    ov = tl.where(fg, ov, 0.0)
    tl.store(claims_ptr + ba, tl.where(fg, claims, 0), mask=in_range)  # _write_kernel's fg
    tl.store(tgt_ptr + ba, tgt, mask=in_range)
    tl.store(metric_ptr + ba, metric, mask=in_range)
    tl.store(iou_ptr + ba, ov, mask=in_range)
    tl.atomic_max(best_metric_ptr + g, metric, mask=fg)
    tl.atomic_max(best_iou_ptr + g, ov, mask=fg)


@triton.jit
def _write_kernel(
    gt_ptr, label_ptr, claims_ptr, tgt_ptr, metric_ptr, best_metric_ptr, best_iou_ptr,
    out_label_ptr, out_box_ptr, out_score_ptr, out_fg_ptr, out_idx_ptr,
    A, M, C, eps,
    BLOCK: tl.constexpr,
):  # fmt: skip
    b = tl.program_id(0)
    a = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    in_range = a < A
    ba = b * A + a
    fg = tl.load(claims_ptr + ba, mask=in_range, other=0) > 0
    tgt = tl.load(tgt_ptr + ba, mask=in_range, other=0)
    g = b * M + tgt
    label = tl.load(label_ptr + g, mask=in_range, other=0)
    metric = tl.load(metric_ptr + ba, mask=in_range, other=0.0)
    value = tl.div_rn(
        metric * tl.load(best_iou_ptr + g, mask=in_range, other=0.0),
        tl.load(best_metric_ptr + g, mask=in_range, other=0.0) + eps,
    )
    tl.store(out_idx_ptr + ba, tgt.to(tl.int64), mask=in_range)
    tl.store(out_label_ptr + ba, label.to(tl.int64), mask=in_range)
    tl.store(out_fg_ptr + ba, fg.to(tl.int8), mask=in_range)
    for c in tl.static_range(4):
        tl.store(
            out_box_ptr + 4 * ba + c, tl.load(gt_ptr + 4 * g + c, mask=in_range, other=0.0), mask=in_range
        )
    tl.store(out_score_ptr + ba.to(tl.int64) * C + label, value, mask=in_range & fg)


# ---------------------------------------------------------------------------------------------
# Host wrapper


@torch.no_grad()
def assign_triton(
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
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None:
    """``yolov9k.ops.assign`` with Triton kernels (inputs validated by the caller); None for the
    cases it leaves to the PyTorch reference (M == 0, B == 0, float64 boxes, an irregular anchor layout).

    Args/returns as ``yolov9k.ops.assign``: pd_scores (B, A, C), pd_bboxes (B, A, 4) xyxy px,
    anc_points (A, 2) px, gt_labels / mask_gt (B, M, 1), gt_bboxes (B, M, 4) xyxy px ->
    (labels (B, A) int64, boxes (B, A, 4) f32, scores (B, A, C) f32, fg (B, A) bool, gt_idx (B, A) int64).
    """
    bsz, n_anchor, n_cls = pd_scores.shape
    m = gt_bboxes.shape[1]
    if m == 0 or bsz == 0 or pd_bboxes.dtype == torch.float64:
        return None
    levels = _grid_levels_cached(anc_points)
    if levels is None:  # not a regular multi-level grid: the reference handles any layout
        return None
    device = pd_scores.device
    if _INTERPRET and pd_scores.dtype == torch.bfloat16:
        pd_scores = pd_scores.float()  # the interpreter mis-handles bf16 (exact conversion)
    pd = pd_bboxes.float()
    gt = gt_bboxes.float()
    pd_atan = box_terms(pd, CIOU_EPS)["atan"].contiguous()  # the reference's own arctangents
    gt_atan = box_terms(gt, CIOU_EPS)["atan"].contiguous()
    pd, gt = pd.contiguous(), gt.contiguous()
    labels = gt_labels.reshape(bsz, m).long()
    # Labels outside [0, C): that gt is padding (never assigned) and its label reads as clamped into
    # [0, C), so no kernel indexes scores or outputs out of bounds. Device ops only: no host sync.
    in_range = (labels >= 0) & (labels < n_cls)
    labels32 = labels.clamp(0, max(n_cls - 1, 0)).to(torch.int32).contiguous()
    valid = (mask_gt.reshape(bsz, m).bool() & in_range).to(torch.int8).contiguous()
    anc = anc_points.float().contiguous()
    lvl_stride, lvl_nx, lvl_ny, lvl_off = _level_tensors(tuple(levels), device)

    i32 = dict(dtype=torch.int32, device=device)
    f32 = dict(dtype=torch.float32, device=device)
    claims = torch.zeros(bsz, n_anchor, **i32)
    first = torch.full((bsz, n_anchor), m, **i32)
    tgt = torch.empty(bsz, n_anchor, **i32)
    metric = torch.empty(bsz, n_anchor, **f32)
    iou = torch.empty(bsz, n_anchor, **f32)
    best_metric = torch.zeros(bsz, m, **f32)
    best_iou = torch.zeros(bsz, m, **f32)
    out_labels = torch.empty(bsz, n_anchor, dtype=torch.long, device=device)
    out_boxes = torch.empty(bsz, n_anchor, 4, **f32)
    out_scores = torch.zeros(bsz, n_anchor, n_cls, **f32)
    out_fg = torch.empty(bsz, n_anchor, dtype=torch.int8, device=device)
    out_idx = torch.empty(bsz, n_anchor, dtype=torch.long, device=device)

    modes = dict(ALPHA_MODE=_pow_mode(alpha), BETA_MODE=_pow_mode(beta), INTERPRET=_INTERPRET)
    opts = {} if _INTERPRET else dict(enable_fp_fusion=False)
    strides = pd_scores.stride()
    k = min(int(topk), n_anchor)
    _topk_kernel[(bsz * m,)](
        pd_scores, *strides, pd, pd_atan, gt, gt_atan, labels32, valid, anc,
        lvl_stride, lvl_nx, lvl_ny, lvl_off, len(levels), claims, first,
        n_anchor, m, k, float(eps), float(alpha), float(beta),
        TOPK_PAD=triton.next_power_of_2(k), BLOCK=BLOCK_CAND, **modes, **opts,
    )  # fmt: skip
    grid = (bsz, triton.cdiv(n_anchor, BLOCK_A))
    _resolve_kernel[grid](
        pd_scores, *strides, pd, pd_atan, gt, gt_atan, labels32, claims, first,
        tgt, metric, iou, best_metric, best_iou,
        n_anchor, m, float(alpha), float(beta),
        BLOCK=BLOCK_A, **modes, **opts,
    )  # fmt: skip
    _write_kernel[grid](
        gt, labels32, claims, tgt, metric, best_metric, best_iou,
        out_labels, out_boxes, out_scores, out_fg, out_idx,
        n_anchor, m, n_cls, float(eps),
        BLOCK=BLOCK_A, **opts,
    )  # fmt: skip
    return out_labels, out_boxes, out_scores, out_fg.bool(), out_idx
