"""Kernels planted by ``YOLOV9K_TRITON_CHECK_PLANT`` to show that ``.ci/triton_build.py`` fails:
one meant to spill registers, one whose shared memory is over every target's per-block limit. Never
imported by the package. Measured (benchmarks/RESULTS.md): ``smem_kernel`` fails the check twice
(524 KB of shared memory, and a 75 KB spill); ``spill_kernel`` does not spill on Triton 3.9.
TODO(gpu): a plant that spills without overflowing shared memory."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def spill_kernel(X_ptr, Y_ptr, BLOCK: tl.constexpr):
    """A [BLOCK] tile per warp-group with data-dependent gathers: far more live values than registers."""
    offs = tl.arange(0, BLOCK)
    x = tl.load(X_ptr + offs)
    idx = (x.to(tl.int32) * 7919) % BLOCK
    y = tl.load(X_ptr + idx)
    z = tl.load(X_ptr + ((y.to(tl.int32) * 104729) % BLOCK))
    tl.store(Y_ptr + offs, x * y + z + tl.cumsum(x * z, 0))


@triton.jit
def smem_kernel(X_ptr, Y_ptr, BLOCK: tl.constexpr, K: tl.constexpr):
    """A [BLOCK, K] x [K, BLOCK] fp16 dot with K = 1024: its operand tiles need ~256 KB of shared memory,
    over every target's per-block limit (quick to compile, unlike a large fp32 tile)."""
    r = tl.arange(0, BLOCK)
    k = tl.arange(0, K)
    a = tl.load(X_ptr + r[:, None] * K + k[None, :]).to(tl.float16)
    b = tl.load(X_ptr + k[:, None] * BLOCK + r[None, :]).to(tl.float16)
    c = tl.dot(a, b)
    tl.store(Y_ptr + r[:, None] * BLOCK + r[None, :], c)
