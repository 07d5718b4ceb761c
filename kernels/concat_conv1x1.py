"""``silu(conv1x1(cat(inputs, dim=1)) + bias)`` as one GEMM that never builds the concat (Triton).

The ELAN aggregation of GELAN (RepNCSPELAN4.cv4, ELAN1.cv4, SPPELAN.cv5, RepNCSP.cv3) concatenates
its branch maps along channels and applies a 1x1 conv. After ``fuse()`` that conv has a bias and a
SiLU, so the whole transition is one matrix product

    out[m, o] = silu(bias[o] + sum_i sum_k X_i[m, k] * W[o, off_i + k]),   m = (n, h, w)

with the K dimension split across the inputs: each program walks the K range of every input in
turn, reading the branch tensor in place (any strides whose H, W flatten; channels-last is the fast
layout). The output is channels-last (N, C_out, H, W). The plain 1x1 Conv + bias + SiLU is the
one-input case.

Reading order: the Triton kernel, the host wrapper, the ``torch.library`` custom op with its fake.
Inference only (fused, frozen weights): there is no backward.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import check_concat_inputs

__all__ = ["MAX_INPUTS", "concat_conv1x1_silu_triton"]

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
MAX_INPUTS = 4  # inputs beyond the third are concatenated into the fourth by the host wrapper


def _configs() -> list[triton.Config]:
    """Tile configurations. One small config under the CPU interpreter (multi-config autotune does
    not run there). On GPU one config: 64 x 64 x 32, 4 warps, 4 stages, the only one of the six tried
    that compiles without a register spill in every fp16 / bf16 default-path specialisation for
    sm_80 and sm_90 with Triton 3.6 (128 x 64, 128 x 128, 64 x 128 and 256 x 64 tiles spill up to
    ~1 KB: the per-element 64-bit addresses of the branch tiles; .ci/check_triton_build.sh,
    benchmarks/RESULTS.md). TODO(gpu): larger tiles once the addressing is restructured and a GPU
    has timed them (benchmarks/test_bench_fused.py)."""
    if _INTERPRET:
        return [triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
    return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}, num_warps=4, num_stages=4)]


def smem_estimate(config: triton.Config, elem_bytes: int) -> int:
    """Upper bound (bytes) of a config's shared memory: ``num_stages`` buffers of the X and W tiles.

    Triton's software pipeline keeps ``num_stages - 1`` tiles in flight (plus layout-conversion
    scratch that reuses them); counting ``num_stages`` keeps a margin. ``.ci/check_triton_build.sh``
    checks that every config kept by :func:`configs_that_fit` compiles within the limit.
    """
    kw = config.kwargs
    return config.num_stages * (kw["BLOCK_M"] + kw["BLOCK_N"]) * kw["BLOCK_K"] * elem_bytes


def configs_that_fit(configs: list[triton.Config], elem_bytes: int, smem_limit: int) -> list[triton.Config]:
    """The configs whose :func:`smem_estimate` fits ``smem_limit`` bytes (the smallest one if none)."""
    fit = [c for c in configs if smem_estimate(c, elem_bytes) <= smem_limit]
    return fit or [min(configs, key=lambda c: smem_estimate(c, elem_bytes))]


def device_smem_limit(device: torch.device) -> int:
    """Shared memory one block may opt in to on ``device`` (bytes): 99 KB on sm_86 / sm_89 cards,
    163 KB on an A100, 227 KB on H100 / H200. Not a CUDA device (tests): no limit."""
    if device.type != "cuda":
        return 1 << 30
    return _cuda_smem_limit(device.index if device.index is not None else torch.cuda.current_device())


@functools.cache
def _cuda_smem_limit(index: int) -> int:
    props = torch.cuda.get_device_properties(index)
    return int(getattr(props, "shared_memory_per_block_optin", 0) or 48 * 1024)


def _prune_by_device(configs: list[triton.Config], named_args: dict, **kwargs) -> list[triton.Config]:
    """Autotuner hook: drop the configs that cannot launch on this device (shared memory), before
    any is compiled or timed. Triton calls it only when there are several configs: with today's one
    config, every dtype the wrapper launches (fp16 / bf16 / fp32; fp64 goes to cuDNN) fits every
    target's limit, which ``.ci/check_triton_build.sh`` checks (sm_80 / 86 / 89 / 90)."""
    x = named_args["X0_ptr"]
    return configs_that_fit(configs, x.element_size(), device_smem_limit(x.device))


# --- Triton kernel -------------------------------------------------------------------------------


@triton.jit
def _accumulate_input(
    acc,
    X_ptr,
    K,
    k_offset,
    stride_n,
    stride_hw,
    stride_c,
    W_ptr,
    w_stride_o,
    w_stride_k,
    n_idx,
    s_idx,
    row_mask,
    cols,
    col_mask,
    BLOCK_K: tl.constexpr,
    FP32_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """acc += X_i[rows, 0:K] @ W[cols, k_offset:k_offset + K].T for one input X_i."""
    row_offs = n_idx * stride_n + s_idx * stride_hw
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        x = tl.load(
            X_ptr + row_offs[:, None] + ks.to(tl.int64)[None, :] * stride_c,
            mask=row_mask[:, None] & k_mask[None, :],
            other=0.0,
        )
        w = tl.load(
            W_ptr + cols[None, :] * w_stride_o + (k_offset + ks)[:, None] * w_stride_k,
            mask=k_mask[:, None] & col_mask[None, :],
            other=0.0,
        )
        if FP32_DOT:  # fp32 / fp64 inputs (every dtype under the interpreter): "tf32" or "ieee" products
            acc = tl.dot(x.to(tl.float32), w.to(tl.float32), acc, input_precision=PRECISION)
        else:  # fp16 / bf16 tensor cores, fp32 accumulation
            acc = tl.dot(x, w.to(x.dtype), acc)
    return acc


@triton.autotune(
    configs=_configs(),
    key=["M", "C_out", "K_total"],
    prune_configs_by={"early_config_prune": _prune_by_device},
)
@triton.jit(do_not_specialize=["K0", "K1", "K2", "K3", "M", "C_out", "K_total"])  # masks, loop bounds
def _concat_conv1x1_silu_kernel(
    X0_ptr,
    X1_ptr,
    X2_ptr,
    X3_ptr,
    W_ptr,  # (C_out, K_total): weight[o, k]
    B_ptr,  # (C_out,)
    Y_ptr,
    K0,
    K1,
    K2,
    K3,
    x0_stride_n,
    x0_stride_hw,
    x0_stride_c,
    x1_stride_n,
    x1_stride_hw,
    x1_stride_c,
    x2_stride_n,
    x2_stride_hw,
    x2_stride_c,
    x3_stride_n,
    x3_stride_hw,
    x3_stride_c,
    w_stride_o,
    w_stride_k,
    y_stride_n,
    y_stride_hw,
    y_stride_c,
    M,
    HW,
    C_out,
    K_total,
    NUM_INPUTS: tl.constexpr,
    FP32_DOT: tl.constexpr,
    PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One [BLOCK_M, BLOCK_N] output tile: K loop over each input in turn, then bias + SiLU."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_mask = rows < M
    col_mask = cols < C_out
    n_idx = (rows // HW).to(tl.int64)
    s_idx = (rows % HW).to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    acc = _accumulate_input(
        acc, X0_ptr, K0, 0, x0_stride_n, x0_stride_hw, x0_stride_c, W_ptr, w_stride_o, w_stride_k,
        n_idx, s_idx, row_mask, cols, col_mask, BLOCK_K, FP32_DOT, PRECISION,
    )  # fmt: skip
    if NUM_INPUTS > 1:
        acc = _accumulate_input(
            acc, X1_ptr, K1, K0, x1_stride_n, x1_stride_hw, x1_stride_c, W_ptr, w_stride_o, w_stride_k,
            n_idx, s_idx, row_mask, cols, col_mask, BLOCK_K, FP32_DOT, PRECISION,
        )  # fmt: skip
    if NUM_INPUTS > 2:
        acc = _accumulate_input(
            acc, X2_ptr, K2, K0 + K1, x2_stride_n, x2_stride_hw, x2_stride_c, W_ptr, w_stride_o,
            w_stride_k, n_idx, s_idx, row_mask, cols, col_mask, BLOCK_K, FP32_DOT, PRECISION,
        )  # fmt: skip
    if NUM_INPUTS > 3:
        acc = _accumulate_input(
            acc, X3_ptr, K3, K0 + K1 + K2, x3_stride_n, x3_stride_hw, x3_stride_c, W_ptr, w_stride_o,
            w_stride_k, n_idx, s_idx, row_mask, cols, col_mask, BLOCK_K, FP32_DOT, PRECISION,
        )  # fmt: skip
    bias = tl.load(B_ptr + cols, mask=col_mask, other=0.0).to(tl.float32)
    z = acc + bias[None, :]
    y = z * tl.sigmoid(z)
    y_offs = (n_idx * y_stride_n + s_idx * y_stride_hw)[:, None] + cols.to(tl.int64)[None, :] * y_stride_c
    tl.store(Y_ptr + y_offs, y.to(Y_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])


# --- host wrapper --------------------------------------------------------------------------------


def _flat_strides(t: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
    """(t or a contiguous channels-last copy, (stride_n, stride_hw, stride_c)), H and W flattened."""
    w = t.shape[3]
    sn, sc, sh, sw = t.stride()
    if t.shape[2] > 1 and w > 1 and sh != w * sw:
        t = t.contiguous(memory_format=torch.channels_last)
        sn, sc, sh, sw = t.stride()
    return t, (sn, sh if w == 1 else sw, sc)


def fp32_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` precision of fp32 inputs: ``"tf32"`` when PyTorch would run the conv this op replaces
    in TF32, i.e. ``torch.backends.cudnn.allow_tf32`` (True by default: cuDNN convolutions use TF32
    tensor cores on sm_80+ unless the user turns it off), else ``"ieee"``.

    Why follow the conv flag and not ``torch.get_float32_matmul_precision()``: the op stands in for
    ``nn.Conv2d`` (cuDNN), so it takes the precision a user chose for convolutions; a user who turns
    TF32 off gets exact fp32 products, as from cuDNN. Why not hand fp32 back to cuDNN: with TF32 the
    GEMM uses the tensor cores as cuDNN does (an "ieee" fp32 dot is plain FMA, no tensor cores) and
    still saves the concat's write and read. fp64 and the CPU interpreter: ``"ieee"``.
    """
    if dtype == torch.float32 and not _INTERPRET and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


def concat_conv1x1_silu_impl(inputs: list[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """silu(conv2d(cat(inputs, 1), weight, bias)) for a 1x1, stride-1, ungrouped ``weight``.

    Args: inputs, a list of (N, C_i, H, W) tensors of one dtype; weight (C_out, sum C_i, 1, 1);
    bias (C_out,) or None. Returns (N, C_out, H, W) in the inputs' dtype, channels-last.
    """
    check_concat_inputs(inputs, weight, bias)
    if inputs[0].dtype == torch.float64 and not _INTERPRET:
        # fp64 has no tensor cores, and the config's fp64 tiles (112 KB of shared memory) cannot launch
        # on sm_86 / sm_89 cards (99 KB; .ci/check_triton_build.sh): the plain concat + conv (cuDNN).
        return _reference(inputs, weight, bias)
    inputs = list(inputs)
    if len(inputs) > MAX_INPUTS:  # rare (no zoo block has more): fold the tail into one input
        inputs = [*inputs[: MAX_INPUTS - 1], torch.cat(inputs[MAX_INPUTS - 1 :], 1)]
    x0 = inputs[0]
    n, _, h, w = x0.shape
    m, c_out = n * h * w, weight.shape[0]
    dtype = x0.dtype
    w2 = weight.reshape(c_out, -1)
    b = bias if bias is not None else torch.zeros(c_out, device=x0.device, dtype=torch.float32)
    y = torch.empty((n, c_out, h, w), device=x0.device, dtype=dtype, memory_format=torch.channels_last)
    if m == 0 or c_out == 0:
        return y
    flat = [_flat_strides(t) for t in inputs]
    flat += [flat[0]] * (MAX_INPUTS - len(flat))  # unused slots: K = 0
    ks = [t.shape[1] for t in inputs] + [0] * (MAX_INPUTS - len(inputs))
    _, y_strides = _flat_strides(y)
    fp32_dot = dtype in (torch.float32, torch.float64) or _INTERPRET
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]))  # noqa: E731
    _concat_conv1x1_silu_kernel[grid](
        *(t for t, _ in flat), w2, b, y, *ks, *(s for _, st in flat for s in st),
        w2.stride(0), w2.stride(1), *y_strides, m, h * w, c_out, w2.shape[1],
        NUM_INPUTS=len(inputs), FP32_DOT=fp32_dot, PRECISION=fp32_precision(dtype),
    )  # fmt: skip
    return y


def _reference(inputs: list[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    y = torch.nn.functional.conv2d(torch.cat(list(inputs), 1), weight, bias)
    return torch.nn.functional.silu(y).contiguous(memory_format=torch.channels_last)


# --- torch.library registration -----------------------------------------------------------------


@torch.library.custom_op("yolov9k_triton::concat_conv1x1_silu", mutates_args=())
def concat_conv1x1_silu_triton(inputs: list[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """Custom-op form of :func:`concat_conv1x1_silu_impl` (traceable by torch.compile / export)."""
    return concat_conv1x1_silu_impl(inputs, weight, bias)


@concat_conv1x1_silu_triton.register_fake
def _(inputs, weight, bias):
    x0 = inputs[0]
    shape = (x0.shape[0], weight.shape[0], x0.shape[2], x0.shape[3])
    return x0.new_empty(shape).contiguous(memory_format=torch.channels_last)
