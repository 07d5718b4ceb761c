"""The ``concat_conv1x1_silu`` op, in one home: ``silu(conv1x1(cat(inputs)) + bias)``, the
transition conv of the GELAN blocks after ``fuse()``.

The reference (:func:`concat_conv1x1_silu_reference`, also the fallback and the ONNX-export path),
the Triton implementation (``kernels/concat_conv1x1.py``, the ``yolov9k_triton::concat_conv1x1_silu``
custom op with its fake: one GEMM reading every branch in place, no concat, channels-last output,
no backward), its registration, the public :func:`concat_conv1x1_silu`, and
:func:`can_run_concat_gemm` for ``accelerate``d modules.

No CPU kernel on purpose: on the 2-core CPU, cat + the oneDNN conv (forward + backward) was measured
faster than per-branch convs or matmuls. Inside ``accelerate``d models it runs for fp16 / bf16 maps
only; fp32 goes back to torch.cat + cuDNN, because the fp32 kernel (TF32 products) spilled registers
in every tile config tried for sm_80 with Triton 3.6 (``.ci/check_triton_build.sh``). Called directly
the op still takes fp32 (TF32 when ``torch.backends.cudnn.allow_tf32``, else exact "ieee" products:
``kernels.concat_conv1x1.fp32_precision``).

Which implementation runs: ``yolov9k.ops._dispatch``. Walk-through: docs/adding-an-op.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov9k.kernels.common import check_concat_inputs
from yolov9k.ops import _dispatch
from yolov9k.ops._dispatch import KernelOp

__all__ = ["can_run_concat_gemm", "concat_conv1x1_silu", "concat_conv1x1_silu_reference"]


# --- reference and Triton implementation ----------------------------------------------------------


def concat_conv1x1_silu_reference(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """``silu(conv2d(cat(inputs, 1), weight, bias))``.

    Args: inputs, (N, C_i, H, W) tensors of one dtype and device; weight (C_out, sum C_i, 1, 1);
    bias (C_out,) or None. Returns (N, C_out, H, W).
    """
    check_concat_inputs(inputs, weight, bias)
    x = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), 1)
    return F.silu(F.conv2d(x, weight, bias))


def _concat_conv1x1_silu_triton(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """The Triton concat GEMM (``kernels/concat_conv1x1.py``): channels-last output, no backward."""
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton  # triton is optional

    check_concat_inputs(inputs, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*inputs, weight, bias) if t is not None):
        raise RuntimeError(
            "concat_conv1x1_silu: the Triton kernel is inference-only (no backward); run it under "
            "torch.no_grad() / inference_mode(), or use the torch backend"
        )
    return concat_conv1x1_silu_triton(list(inputs), weight, bias)


# --- registration --------------------------------------------------------------------------------

_dispatch.define(
    "concat_conv1x1_silu",
    reference=concat_conv1x1_silu_reference,
    kernel_ops=[KernelOp("yolov9k_triton::concat_conv1x1_silu")],
    triton_module="yolov9k.kernels.concat_conv1x1",
)
_dispatch.register("concat_conv1x1_silu", "triton", _concat_conv1x1_silu_triton)


# --- public function and the model-side check ------------------------------------------------------


def concat_conv1x1_silu(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """Dispatched ``silu(conv1x1(cat(inputs, 1)) + bias)``; see :func:`concat_conv1x1_silu_reference`.

    The Triton backend is inference-only and returns a channels-last tensor.
    """
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError("concat_conv1x1_silu expects a non-empty list of (N, C_i, H, W) tensors")
    _, fn = _dispatch.select("concat_conv1x1_silu", inputs[0].device)
    return fn(inputs, weight, bias)


def can_run_concat_gemm(conv: nn.Conv2d, bn: nn.Module | None, act: nn.Module, x: Tensor) -> bool:
    """Does ``act(conv(cat(inputs)))`` (inputs like ``x``) fit the Triton concat GEMM?

    Yes when the conv is a fused (BN folded: ``bn`` is None) 1x1, stride-1, ungrouped, biased conv
    followed by SiLU, the maps are fp16 / bf16 and no gradient is needed (the GEMM has no backward).
    Whether the Triton backend runs is then ``_dispatch.select``'s choice.
    """
    fused_1x1 = (
        bn is None
        and conv.bias is not None
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == "zeros"
        and isinstance(act, nn.SiLU)
    )
    if not fused_1x1 or x.dtype not in (torch.float16, torch.bfloat16):
        return False  # fp32 / fp64: cat + cuDNN's conv (see the module docstring)
    return not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
