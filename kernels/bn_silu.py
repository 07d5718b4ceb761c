"""Training-mode BatchNorm2d + SiLU as one op (Triton): statistics, normalise+affine+SiLU, backward.

Reading order (as Liger-Kernel's ``rms_norm.py``): the Triton kernels, the host wrappers, the
``torch.library`` custom ops with their fake implementations, the autograd registration, and the
functional entry ``bn_silu`` that also updates the running statistics.

Memory: the backward *recomputes* ``z = (x - mean) * rstd * w + b`` from the saved input, so only
``x``, ``mean`` and ``rstd`` (per channel, fp32) are kept for backward instead of ``x``, the BN output
and the SiLU output of the eager pair.

Layout: ``x`` (N, C, H, W) in any memory format whose H and W can be flattened into one index
(contiguous NCHW, channels_last, channel slices of either); other strides are copied to contiguous
first. Every kernel sees ``x`` as positions ``s`` (< HW) of images ``n`` and channels ``c`` with
element offset ``n * stride_n + s * stride_hw + c * stride_c``; tiles are [BLOCK_M, BLOCK_C] with
the BLOCK_M positions inside one image, so the stride-1 dimension (s for NCHW, c for NHWC) is the
coalesced one either way. All arithmetic is fp32
(loads are upcast), which is also what the Triton CPU interpreter needs (see docs/building.md).

Statistics use Chan et al.'s parallel variance: each program folds its tiles into a running
(count, mean, M2) per channel, the (splits, C) partials are combined on the host in fp32. This avoids
the cancellation of ``E[x^2] - E[x]^2`` on large-mean conv outputs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import update_bn_running_stats

__all__ = ["bn_silu_forward", "bn_silu_backward", "bn_silu_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Tile sizes (positions x channels) by which stride is 1. Channels-last (stride_c == 1): 64 x 64, the
# channel dimension coalesced. NCHW (stride_hw == 1): 64 positions x 16 channels; 64 x 64 there
# spilled under Triton 3.6 (ptxas 12.8) whenever H*W is not a multiple of 16 (each of 32 elements a
# thread then needs its own 64-bit address: no vector loads); 64 x 16 (8 elements a thread) needs
# at most ~100 registers (.ci/check_triton_build.sh, benchmarks/RESULTS.md). Not yet tuned for
# speed on a GPU (TODO: benchmarks/test_bench_fused.py on a lent H100). Under the CPU interpreter
# small channel blocks keep odd channel counts on several programs and big row blocks keep grids tiny.
_TILE_CHANNELS_LAST = (64, 16) if _INTERPRET else (64, 64)
_TILE_NCHW = (64, 16)
NUM_WARPS = 4
# Sizes used only in masks and loop bounds: not specialised on (==1, % 16), so a new feature-map size
# reuses the compiled kernel instead of compiling another one; strides stay specialised (== 1 picks
# the coalesced, vectorised layout).
_SIZES = ["C", "HW", "s_blocks", "tiles", "tiles_per_split"]
# Target number of row splits of the statistics / gradient-reduction kernels.
_TARGET_SPLITS = 2 if _INTERPRET else 128


# --- Triton kernels ------------------------------------------------------------------------------
#
# Row tiles never cross an image: a tile is BLOCK_M consecutive positions s of one image n (the
# program or loop step knows n and the first s as scalars), so element offsets are
# n * stride_n + s * stride_hw + c * stride_c without a per-element division by H*W. (Tiles of the
# flattened N*H*W index needed `m // HW` and `m % HW` per element: with H*W not a multiple of 16 that
# defeated vectorisation and made the BN kernels spill under Triton 3.6, see benchmarks/RESULTS.md.)


@triton.jit
def _tile_offsets(n, s, cols, stride_n, stride_hw, stride_c):
    """Element offsets (int64) of the [BLOCK_M, BLOCK_C] tile: positions ``s`` of image ``n`` x ``cols``."""
    row = n.to(tl.int64) * stride_n + s.to(tl.int64) * stride_hw
    return row[:, None] + cols.to(tl.int64)[None, :] * stride_c


@triton.jit(do_not_specialize=_SIZES)
def _bn_stats_kernel(
    X_ptr,
    MEAN_ptr,  # (splits, C) fp32 partial means
    M2_ptr,  # (splits, C) fp32 partial sums of squared deviations
    CNT_ptr,  # (splits,) fp32 rows counted by each split
    C,
    HW,
    s_blocks,  # row tiles per image: cdiv(HW, BLOCK_M)
    tiles,  # N * s_blocks
    tiles_per_split,
    x_stride_n,
    x_stride_hw,
    x_stride_c,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per-channel (mean, M2) over the row tiles [split * tiles_per_split, ...) of one channel block."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    count = tl.zeros([BLOCK_C], dtype=tl.float32)
    mean = tl.zeros([BLOCK_C], dtype=tl.float32)
    m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
    t0 = pid_s * tiles_per_split
    t1 = tl.minimum(t0 + tiles_per_split, tiles)
    for t in range(t0, t1):
        n = t // s_blocks
        s = (t - n * s_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_mask = s < HW
        mask = row_mask[:, None] & col_mask[None, :]
        offs = _tile_offsets(n, s, cols, x_stride_n, x_stride_hw, x_stride_c)
        x = tl.load(X_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tile_n = tl.sum(row_mask.to(tl.float32), axis=0)
        tile_mean = tl.sum(x, axis=0) / tile_n
        dev = tl.where(mask, x - tile_mean[None, :], 0.0)
        tile_m2 = tl.sum(dev * dev, axis=0)
        new_count = count + tile_n
        delta = tile_mean - mean
        mean += delta * (tile_n / new_count)
        m2 += tile_m2 + delta * delta * (count * tile_n / new_count)
        count = new_count
    tl.store(MEAN_ptr + pid_s * C + cols, mean, mask=col_mask)
    tl.store(M2_ptr + pid_s * C + cols, m2, mask=col_mask)
    if pid_c == 0:
        tl.store(CNT_ptr + pid_s, tl.max(count, axis=0))


@triton.jit(do_not_specialize=_SIZES)
def _bn_silu_forward_kernel(
    X_ptr,
    Y_ptr,
    SCALE_ptr,  # (C,) fp32: weight * rstd
    SHIFT_ptr,  # (C,) fp32: bias - mean * weight * rstd
    C,
    HW,
    s_blocks,
    x_stride_n,
    x_stride_hw,
    x_stride_c,
    y_stride_n,
    y_stride_hw,
    y_stride_c,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y = silu(x * scale + shift) on one [BLOCK_M, BLOCK_C] tile (program 0: image x row tile)."""
    n = tl.program_id(0) // s_blocks
    s = (tl.program_id(0) - n * s_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    mask = (s < HW)[:, None] & col_mask[None, :]
    x = tl.load(X_ptr + _tile_offsets(n, s, cols, x_stride_n, x_stride_hw, x_stride_c), mask=mask)
    scale = tl.load(SCALE_ptr + cols, mask=col_mask, other=0.0)
    shift = tl.load(SHIFT_ptr + cols, mask=col_mask, other=0.0)
    z = x.to(tl.float32) * scale[None, :] + shift[None, :]
    y = z * tl.sigmoid(z)
    y_offs = _tile_offsets(n, s, cols, y_stride_n, y_stride_hw, y_stride_c)
    tl.store(Y_ptr + y_offs, y.to(Y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _silu_grad(x, dy, mean, rstd, weight, bias):
    """(xhat, dL/dz) of z = xhat * weight + bias, xhat = (x - mean) * rstd, y = silu(z); all fp32."""
    xhat = (x - mean[None, :]) * rstd[None, :]
    z = xhat * weight[None, :] + bias[None, :]
    sig = tl.sigmoid(z)
    return xhat, dy * sig * (1.0 + z * (1.0 - sig))


@triton.jit(do_not_specialize=_SIZES)
def _bn_silu_backward_reduce_kernel(
    X_ptr,
    DY_ptr,
    MEAN_ptr,
    RSTD_ptr,
    W_ptr,
    B_ptr,
    DB_ptr,  # (splits, C) fp32 partial sum(dz)
    DW_ptr,  # (splits, C) fp32 partial sum(dz * xhat)
    C,
    HW,
    s_blocks,
    tiles,
    tiles_per_split,
    x_stride_n,
    x_stride_hw,
    x_stride_c,
    dy_stride_n,
    dy_stride_hw,
    dy_stride_c,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per-channel partial sums of dz and dz * xhat (dz: gradient at the BN output, recomputed)."""
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    mean = tl.load(MEAN_ptr + cols, mask=col_mask, other=0.0)
    rstd = tl.load(RSTD_ptr + cols, mask=col_mask, other=0.0)
    weight = tl.load(W_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    bias = tl.load(B_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    db = tl.zeros([BLOCK_C], dtype=tl.float32)
    dw = tl.zeros([BLOCK_C], dtype=tl.float32)
    t0 = pid_s * tiles_per_split
    t1 = tl.minimum(t0 + tiles_per_split, tiles)
    for t in range(t0, t1):
        n = t // s_blocks
        s = (t - n * s_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (s < HW)[:, None] & col_mask[None, :]
        x_offs = _tile_offsets(n, s, cols, x_stride_n, x_stride_hw, x_stride_c)
        dy_offs = _tile_offsets(n, s, cols, dy_stride_n, dy_stride_hw, dy_stride_c)
        x = tl.load(X_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY_ptr + dy_offs, mask=mask, other=0.0).to(tl.float32)
        xhat, dz = _silu_grad(x, dy, mean, rstd, weight, bias)
        dz = tl.where(mask, dz, 0.0)
        db += tl.sum(dz, axis=0)
        dw += tl.sum(dz * xhat, axis=0)
    tl.store(DB_ptr + pid_s * C + cols, db, mask=col_mask)
    tl.store(DW_ptr + pid_s * C + cols, dw, mask=col_mask)


@triton.jit(do_not_specialize=_SIZES)
def _bn_silu_backward_dx_kernel(
    X_ptr,
    DY_ptr,
    DX_ptr,
    MEAN_ptr,
    RSTD_ptr,
    W_ptr,
    B_ptr,
    A_ptr,  # (C,) fp32: weight * rstd
    C1_ptr,  # (C,) fp32: weight * rstd * sum(dz) / M   (0 in eval mode)
    C2_ptr,  # (C,) fp32: weight * rstd * sum(dz * xhat) / M   (0 in eval mode)
    C,
    HW,
    s_blocks,
    x_stride_n,
    x_stride_hw,
    x_stride_c,
    dy_stride_n,
    dy_stride_hw,
    dy_stride_c,
    dx_stride_n,
    dx_stride_hw,
    dx_stride_c,
    BLOCK_M: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dx = a * dz - c1 - xhat * c2 on one tile (the batch-statistics BN input gradient)."""
    n = tl.program_id(0) // s_blocks
    s = (tl.program_id(0) - n * s_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = cols < C
    mask = (s < HW)[:, None] & col_mask[None, :]
    mean = tl.load(MEAN_ptr + cols, mask=col_mask, other=0.0)
    rstd = tl.load(RSTD_ptr + cols, mask=col_mask, other=0.0)
    weight = tl.load(W_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    bias = tl.load(B_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    a = tl.load(A_ptr + cols, mask=col_mask, other=0.0)
    c1 = tl.load(C1_ptr + cols, mask=col_mask, other=0.0)
    c2 = tl.load(C2_ptr + cols, mask=col_mask, other=0.0)
    x_offs = _tile_offsets(n, s, cols, x_stride_n, x_stride_hw, x_stride_c)
    dy_offs = _tile_offsets(n, s, cols, dy_stride_n, dy_stride_hw, dy_stride_c)
    x = tl.load(X_ptr + x_offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY_ptr + dy_offs, mask=mask, other=0.0).to(tl.float32)
    xhat, dz = _silu_grad(x, dy, mean, rstd, weight, bias)
    dx = a[None, :] * dz - c1[None, :] - xhat * c2[None, :]
    dx_offs = _tile_offsets(n, s, cols, dx_stride_n, dx_stride_hw, dx_stride_c)
    tl.store(DX_ptr + dx_offs, dx.to(DX_ptr.dtype.element_ty), mask=mask)


# --- host wrappers -------------------------------------------------------------------------------


def _flat_strides(t: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """(t or a contiguous copy, (stride_n, stride_hw, stride_c)) with H and W flattened to one index."""
    _, _, _, w = t.shape
    sn, sc, sh, sw = t.stride()
    if t.shape[2] > 1 and w > 1 and sh != w * sw:
        t = t.contiguous()
        sn, sc, sh, sw = t.stride()
    if w == 1:
        sw = sh  # rows step over H only
    return t, (sn, sw, sc)


def _tile(strides: tuple[int, int, int]) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_C) for a tensor of (stride_n, stride_hw, stride_c)."""
    return _TILE_CHANNELS_LAST if strides[2] == 1 else _TILE_NCHW


def _row_tiles(n: int, hw: int, block_m: int) -> tuple[int, int]:
    """(row tiles per image, all row tiles) for images of ``hw`` positions."""
    s_blocks = triton.cdiv(hw, block_m)
    return s_blocks, n * s_blocks


def _splits(tiles: int) -> tuple[int, int]:
    """(number of splits, row tiles per split) of the reduction kernels."""
    tiles_per_split = triton.cdiv(tiles, min(tiles, _TARGET_SPLITS))
    return triton.cdiv(tiles, tiles_per_split), tiles_per_split


def _check(x: Tensor, weight: Tensor, bias: Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"bn_silu expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"bn_silu expects a floating-point x, got {x.dtype}")
    c = x.shape[1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (c,):
            raise ValueError(f"bn_silu: {name} must have shape ({c},), got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"bn_silu: {name} is on {t.device}, x on {x.device}")


def _batch_stats(x: Tensor, strides: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, biased variance) of x (N, C, H, W) in fp32."""
    n, c, h, w = x.shape
    block_m, block_c = _tile(strides)
    s_blocks, tiles = _row_tiles(n, h * w, block_m)
    splits, tiles_per_split = _splits(tiles)
    pmean = torch.empty((splits, c), device=x.device, dtype=torch.float32)
    pm2 = torch.empty_like(pmean)
    counts = torch.empty((splits, 1), device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(c, block_c), splits)
    _bn_stats_kernel[grid](
        x, pmean, pm2, counts, c, h * w, s_blocks, tiles, tiles_per_split, *strides,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=NUM_WARPS,
    )  # fmt: skip
    m = n * h * w
    if splits == 1:
        return pmean[0], pm2[0] / m
    mean = (counts * pmean).sum(0) / m
    m2 = pm2.sum(0) + (counts * (pmean - mean) ** 2).sum(0)
    return mean, m2 / m


def bn_silu_forward_impl(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Forward of silu(batch_norm(x)).

    Args: x (N, C, H, W); weight, bias (C,); running_mean, running_var (C,) used when not
    ``training``. Returns y (N, C, H, W, dtype and memory format of x), mean (C,) fp32, rstd (C,)
    fp32 (the statistics that normalised x) and var (C,) fp32 (biased batch variance; the running
    variance when not training).
    """
    _check(x, weight, bias)
    n, c, h, w = x.shape
    if training:
        if n * h * w < 2:
            raise ValueError(
                f"Expected more than 1 value per channel when training, got input {tuple(x.shape)}"
            )
        xf, strides = _flat_strides(x)
        mean, var = _batch_stats(xf, strides)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("bn_silu: eval mode needs running_mean and running_var")
        xf, strides = _flat_strides(x)
        mean, var = running_mean.float().clone(), running_var.float().clone()  # outputs must not alias
    rstd = torch.rsqrt(var + eps)
    scale = weight.float() * rstd
    shift = bias.float() - mean * scale
    y = torch.empty_like(x, memory_format=torch.preserve_format)
    y, y_strides = _flat_strides(y)
    block_m, block_c = _tile(strides)
    s_blocks, tiles = _row_tiles(n, h * w, block_m)
    grid = (tiles, triton.cdiv(c, block_c))
    _bn_silu_forward_kernel[grid](
        xf, y, scale, shift, c, h * w, s_blocks, *strides, *y_strides,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=NUM_WARPS,
    )  # fmt: skip
    return y, mean, rstd, var


def bn_silu_backward_impl(
    dy: Tensor,
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    mean: Tensor,
    rstd: Tensor,
    training: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dx (N, C, H, W), dweight (C,), dbias (C,)) of y = silu(batch_norm(x)).

    ``mean`` / ``rstd`` are what the forward normalised with; with ``training`` they are batch
    statistics and dx includes their dependence on x.
    """
    n, c, h, w = x.shape
    m = n * h * w
    xf, x_strides = _flat_strides(x)
    dyf, dy_strides = _flat_strides(dy)
    block_m, block_c = _tile(x_strides)
    s_blocks, tiles = _row_tiles(n, h * w, block_m)
    splits, tiles_per_split = _splits(tiles)
    pdb = torch.empty((splits, c), device=x.device, dtype=torch.float32)
    pdw = torch.empty_like(pdb)
    _bn_silu_backward_reduce_kernel[(triton.cdiv(c, block_c), splits)](
        xf, dyf, mean, rstd, weight, bias, pdb, pdw, c, h * w, s_blocks, tiles, tiles_per_split,
        *x_strides, *dy_strides,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=NUM_WARPS,
    )  # fmt: skip
    db, dw = pdb.sum(0), pdw.sum(0)
    a = weight.float() * rstd
    if training:
        c1, c2 = a * db / m, a * dw / m
    else:
        c1 = c2 = torch.zeros_like(a)
    dx = torch.empty_like(x, memory_format=torch.preserve_format)
    dx, dx_strides = _flat_strides(dx)
    _bn_silu_backward_dx_kernel[(tiles, triton.cdiv(c, block_c))](
        xf, dyf, dx, mean, rstd, weight, bias, a, c1, c2, c, h * w, s_blocks, *x_strides, *dy_strides,
        *dx_strides,
        BLOCK_M=block_m, BLOCK_C=block_c, num_warps=NUM_WARPS,
    )  # fmt: skip
    return dx, dw.to(weight.dtype), db.to(bias.dtype)


# --- torch.library registration (custom ops + fakes, for torch.compile / export) ----------------


@torch.library.custom_op("yolov9k_triton::bn_silu_forward", mutates_args=())
def bn_silu_forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Custom-op form of :func:`bn_silu_forward_impl` (no running-stat update: done by the caller)."""
    return bn_silu_forward_impl(x, weight, bias, running_mean, running_var, training, eps)


@bn_silu_forward.register_fake
def _(x, weight, bias, running_mean, running_var, training, eps):
    c = x.shape[1]
    stat = x.new_empty((c,), dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.preserve_format), stat, stat.clone(), stat.clone()


@torch.library.custom_op("yolov9k_triton::bn_silu_backward", mutates_args=())
def bn_silu_backward(
    dy: Tensor, x: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor, training: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Custom-op form of :func:`bn_silu_backward_impl`."""
    return bn_silu_backward_impl(dy, x, weight, bias, mean, rstd, training)


@bn_silu_backward.register_fake
def _(dy, x, weight, bias, mean, rstd, training):
    return (
        torch.empty_like(x, memory_format=torch.preserve_format),
        torch.empty_like(weight),
        torch.empty_like(bias),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, _, _, training, _ = inputs
    _, mean, rstd, _ = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)  # x and per-channel stats only
    ctx.training = training


def _backward(ctx, dy, _dmean, _drstd, _dvar):
    x, weight, bias, mean, rstd = ctx.saved_tensors
    dx, dw, db = bn_silu_backward(dy, x, weight, bias, mean, rstd, ctx.training)
    return dx, dw, db, None, None, None, None


bn_silu_forward.register_autograd(_backward, setup_context=_setup_context)


# --- functional entry ------------------------------------------------------------------------------


def bn_silu_triton(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
    num_batches_tracked: Tensor | None = None,
) -> Tensor:
    """``silu(F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps))``.

    Same contract as ``nn.BatchNorm2d`` followed by SiLU: when ``training`` and running buffers are
    given they are updated in place with ``momentum`` (``None``: cumulative average over
    ``num_batches_tracked``) using the unbiased batch variance, and ``num_batches_tracked`` (if
    given) is incremented. Shapes: x (N, C, H, W) -> (N, C, H, W) in x's dtype and memory format.
    """
    c = x.shape[1] if x.dim() == 4 else -1
    if weight is None:
        weight = torch.ones(c, device=x.device, dtype=torch.float32)
    if bias is None:
        bias = torch.zeros(c, device=x.device, dtype=torch.float32)
    if not training and (running_mean is None or running_var is None):
        training = True  # F.batch_norm: without running stats the batch statistics are used
    y, mean, _, var = bn_silu_forward(x, weight, bias, running_mean, running_var, training, float(eps))
    if training and running_mean is not None and running_var is not None:
        count = x.numel() // x.shape[1]
        update_bn_running_stats(mean, var, count, running_mean, running_var, momentum, num_batches_tracked)
    return y
