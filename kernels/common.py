"""Torch-only helpers shared by the Triton kernels and their PyTorch references in ``yolov9k.ops``.

They live here, below both, so that a kernel never imports the op layer that dispatches to it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["box_terms", "check_concat_inputs", "update_bn_running_stats"]


def box_terms(boxes: Tensor, eps: float) -> dict[str, Tensor]:
    """Per-box pieces of CIoU, in the official operation order. boxes (..., 4) xyxy -> dict of (...)."""
    x1, y1, x2, y2 = (c.contiguous() for c in boxes.unbind(-1))
    w = x2 - x1
    h = y2 - y1 + eps
    return {
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "area": w * h,
        "atan": torch.atan(w / h),
        "xsum": x1 + x2,  # used only for the predicted boxes (box2 in the official call)
        "ysum": y1 + y2,
    }


def check_concat_inputs(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> None:
    """Clear errors for what ``concat_conv1x1_silu`` (any backend) cannot take."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) == 0:
        raise ValueError("concat_conv1x1_silu expects a non-empty list of (N, C_i, H, W) tensors")
    first = inputs[0]
    for i, t in enumerate(inputs):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(f"concat_conv1x1_silu: input {i} must be a 4-D tensor (N, C_i, H, W)")
        if (t.shape[0], *t.shape[2:]) != (first.shape[0], *first.shape[2:]):
            raise ValueError(
                f"concat_conv1x1_silu: input {i} has shape {tuple(t.shape)}, input 0 "
                f"{tuple(first.shape)}; N, H and W must match"
            )
        if t.dtype != first.dtype or t.device != first.device:
            raise ValueError(
                f"concat_conv1x1_silu: input {i} is {t.dtype} on {t.device}, input 0 is {first.dtype} "
                f"on {first.device}"
            )
    if not first.is_floating_point():
        raise TypeError(f"concat_conv1x1_silu expects floating-point inputs, got {first.dtype}")
    k_total = sum(t.shape[1] for t in inputs)
    if not isinstance(weight, Tensor) or weight.dim() != 4 or tuple(weight.shape[1:]) != (k_total, 1, 1):
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"concat_conv1x1_silu: weight must be (C_out, {k_total}, 1, 1), got {shape}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"concat_conv1x1_silu: bias must be ({weight.shape[0]},), got {tuple(bias.shape)}")
    if weight.device != first.device or (bias is not None and bias.device != first.device):
        raise ValueError("concat_conv1x1_silu: weight and bias must be on the inputs' device")


@torch.no_grad()
def update_bn_running_stats(
    mean: Tensor,
    var: Tensor,
    count: int,
    running_mean: Tensor,
    running_var: Tensor,
    momentum: float | None,
    num_batches_tracked: Tensor | None,
) -> None:
    """``nn.BatchNorm2d``'s training-mode buffer update from a batch's per-channel ``mean`` and biased
    ``var`` over ``count`` values per channel (in place).

    ``num_batches_tracked`` (if given) is incremented; the factor is ``momentum``, or with ``momentum``
    None the cumulative average ``1 / num_batches_tracked`` (0 without a counter). Then
    ``running = factor * stat + (1 - factor) * running`` with the unbiased variance
    ``var * count / (count - 1)``, computed in float64 and rounded once, as ATen does on CPU.
    """
    factor = 0.0 if momentum is None else momentum
    if num_batches_tracked is not None:
        num_batches_tracked.add_(1)
        if momentum is None:
            factor = 1.0 / float(num_batches_tracked)
    unbiased = var.double() * (count / (count - 1))
    running_mean.copy_(factor * mean.double() + (1.0 - factor) * running_mean.double())
    running_var.copy_(factor * unbiased + (1.0 - factor) * running_var.double())
