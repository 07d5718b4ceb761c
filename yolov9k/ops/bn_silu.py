"""The ``bn_silu`` op, in one home: ``silu(batch_norm(x))`` with ``nn.BatchNorm2d``'s exact contract
(batch statistics and running-stat update in training, running statistics in eval).

The reference (:func:`bn_silu_reference`, also the fallback and the ONNX-export path), two fused
implementations, the fakes and autograd of the C++ ops, their registration, the public
:func:`bn_silu`, and the first-use check of its kernels (``_guard``). Both kernels make one
statistics pass and one normalise/SiLU pass, and their backward recomputes the normalised value from
the input instead of storing the BN and SiLU outputs:

- ``cpp`` (CPU, training): the C++ ops ``yolov9k::bn_silu_train`` / ``bn_silu_train_backward``
  (``csrc/bn_silu.cpp``, ``csrc/bn_silu.h``, ``csrc/cpu/bn_silu_kernel.cpp``) for float32 / float64
  NCHW-contiguous input with affine parameters; :func:`bn_silu_cpp` updates the running statistics
  and sends every other case (eval, other dtypes or layouts, no affine) to the reference;
- ``triton`` (CUDA): ``kernels/bn_silu.py`` (the ``yolov9k_triton::bn_silu_*`` custom ops), any
  layout whose H and W flatten.

Which one runs: ``yolov9k.ops._dispatch``. Walk-through: docs/adding-an-op.md.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from yolov9k.kernels.common import update_bn_running_stats
from yolov9k.ops import _dispatch, _guard
from yolov9k.ops._dispatch import KernelOp

__all__ = ["bn_silu", "bn_silu_cpp", "bn_silu_reference", "bn_silu_triton"]


# --- reference and implementations ---------------------------------------------------------------


def bn_silu_reference(
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
    """``silu(batch_norm(x))`` exactly as ``nn.BatchNorm2d`` followed by ``nn.SiLU``.

    Args:
        x: (N, C, H, W) floating point.
        weight, bias: (C,) affine parameters or None.
        running_mean, running_var: (C,) buffers, or None (then batch statistics are always used).
        training: normalise with batch statistics (biased variance) and update the running buffers
            in place with ``momentum`` and the unbiased variance; else normalise with the buffers.
        momentum: running-average factor; None means a cumulative average over
            ``num_batches_tracked`` (as ``nn.BatchNorm2d(momentum=None)``).
        eps: added to the variance.
        num_batches_tracked: () int64 counter incremented in training, as the module does.

    Returns: (N, C, H, W), dtype of x.
    """
    if x.dim() != 4:
        raise ValueError(f"bn_silu expects x of shape (N, C, H, W), got {tuple(x.shape)}")
    factor = 0.0 if momentum is None else momentum
    if training and running_mean is not None:
        if num_batches_tracked is not None:
            num_batches_tracked.add_(1)
            if momentum is None:
                factor = 1.0 / float(num_batches_tracked)
    use_batch_stats = training or (running_mean is None and running_var is None)
    return F.silu(F.batch_norm(x, running_mean, running_var, weight, bias, use_batch_stats, factor, eps))


def _cpp_can_run(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    use_batch_stats: bool,
) -> bool:
    """Whether the C++ ``bn_silu_train`` op takes this call (else :func:`bn_silu_cpp` uses the reference)."""
    return (
        use_batch_stats
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and x.numel() > 0
        and x.is_contiguous()
        and weight is not None
        and bias is not None
        and weight.dtype == bias.dtype == x.dtype
        and weight.device == bias.device == x.device
        and (running_mean is None) == (running_var is None)
    )


def bn_silu_cpp(
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
    """``bn_silu`` on the C++ CPU ops (arguments and contract as :func:`bn_silu_reference`).

    Batch statistics of a CPU float32 / float64 NCHW-contiguous x with affine weight and bias run
    ``yolov9k::bn_silu_train`` (its backward ``yolov9k::bn_silu_train_backward`` recomputes the
    normalised value from x), and the running buffers are updated here as ``nn.BatchNorm2d`` does.
    Everything else (eval with running statistics, other dtypes, channels_last or non-contiguous x,
    no affine) is :func:`bn_silu_reference`. Returns (N, C, H, W) (NCHW-contiguous from the C++ op).
    """
    use_batch_stats = training or (running_mean is None and running_var is None)
    if not _cpp_can_run(x, weight, bias, running_mean, running_var, use_batch_stats):
        return bn_silu_reference(
            x, weight, bias, running_mean, running_var, training, momentum, eps, num_batches_tracked
        )
    y, mean, invstd = torch.ops.yolov9k.bn_silu_train(x, weight, bias, float(eps))
    if training and running_mean is not None and running_var is not None:
        var = (invstd.detach().double().pow(-2) - eps).clamp_min(0)  # the batch's biased variance
        count = x.numel() // x.shape[1]
        update_bn_running_stats(mean, var, count, running_mean, running_var, momentum, num_batches_tracked)
    return y


def bn_silu_triton(*args, **kwargs) -> Tensor:
    """The Triton ``bn_silu`` (arguments as :func:`bn_silu_reference`); triton imported on first use."""
    from yolov9k.kernels.bn_silu import bn_silu_triton as kernel  # optional dependency, TRITON_INTERPRET

    return kernel(*args, **kwargs)


# --- the C++ ops: fakes and autograd (the Triton ops carry theirs in kernels/bn_silu.py) ---------


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


# --- registration --------------------------------------------------------------------------------

_dispatch.define(
    "bn_silu",
    reference=bn_silu_reference,
    kernel_ops=[
        KernelOp(
            "yolov9k::bn_silu_train",
            fake=_bn_silu_train_fake,
            backward=_bn_silu_train_backward,
            setup_context=_bn_silu_train_setup_context,
        ),
        KernelOp("yolov9k::bn_silu_train_backward", fake=_bn_silu_train_backward_fake),
        KernelOp("yolov9k_triton::bn_silu_forward"),
        KernelOp("yolov9k_triton::bn_silu_backward"),
    ],
    triton_module="yolov9k.kernels.bn_silu",
)
_dispatch.register("bn_silu", "cpp", bn_silu_cpp, native_op="bn_silu_train")
_dispatch.register("bn_silu", "triton", bn_silu_triton)


# --- public function -----------------------------------------------------------------------------


def bn_silu(
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
    """Dispatched ``silu(batch_norm(x))``; see :func:`bn_silu_reference` for the contract."""
    _, fn = _dispatch.select("bn_silu", x.device)
    return fn(x, weight, bias, running_mean, running_var, training, momentum, eps, num_batches_tracked)


# --- first-use check of the kernels (yolov9k.ops._guard) -------------------------------------------

_BN_SIGNATURE = inspect.signature(bn_silu_reference)
_BN_STATE = ("running_mean", "running_var", "num_batches_tracked")


def _bn_variant(*args, **kwargs) -> str:
    """Mode part of a bn_silu call's guard variant: train / eval, and whether a backward follows."""
    if len(args) >= 6:  # every caller of ours passes the arguments by position: no bind per call
        x, w, training = args[0], args[1], args[5]
    else:
        a = _BN_SIGNATURE.bind(*args, **kwargs).arguments
        x, w, training = a["x"], a.get("weight"), a["training"]
    grad = torch.is_grad_enabled() and (x.requires_grad or (w is not None and w.requires_grad))
    return ("train" if training else "eval") + ("+grad" if grad else "")


def _probe_grad(shape: torch.Size, like: Tensor) -> Tensor:
    """A fixed, non-random upstream gradient (the user's RNG streams stay untouched)."""
    n = 1
    for s in shape:
        n *= s
    return torch.arange(n, device=like.device, dtype=torch.float64).mul_(0.618034).frac_().sub_(0.5).reshape(
        shape
    ).to(like.dtype)  # fmt: skip


def _verify_bn_silu(kernel: Callable, reference: Callable, args: tuple, kwargs: dict, op: str) -> Tensor:
    """The kernel's output and running-statistics update against the reference's on copies; with a
    backward to come, the gradients of a probe (x, weight, bias) too. Buffers are restored on failure."""
    bound = _BN_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    a = dict(bound.arguments)
    state = {k: a[k] for k in _BN_STATE if a[k] is not None}
    saved = {k: t.clone() for k, t in state.items()}
    try:
        out = kernel(*args, **kwargs)
        _guard.synchronize(a["x"])
        ref_args = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in a.items()}
        ref_args.update({k: saved[k].clone() for k in state})
        with torch.no_grad():
            want = reference(**ref_args)
        _guard.compare(out, want, op)
        for k, t in state.items():
            _guard.compare(t, ref_args[k], op, k)
        if "+grad" in _bn_variant(*args, **kwargs):
            _verify_bn_silu_backward(kernel, reference, a, op)
    except Exception:
        with torch.no_grad():
            for k, t in state.items():
                t.copy_(saved[k])
        raise
    return out


def _verify_bn_silu_backward(kernel: Callable, reference: Callable, a: dict, op: str) -> None:
    grads = []
    for fn in (kernel, reference):
        names = [k for k in ("x", "weight", "bias") if a[k] is not None]
        leaves = {k: a[k].detach().clone().requires_grad_() for k in names}
        call = dict(a, **leaves)
        call.update({k: (a[k].detach().clone() if a[k] is not None else None) for k in _BN_STATE})
        with torch.enable_grad():
            y = fn(**call)
            grads.append(torch.autograd.grad(y, list(leaves.values()), _probe_grad(y.shape, y)))
    _guard.synchronize(a["x"])
    _guard.compare(grads[0], grads[1], op, "gradients (x, weight, bias)")


_guard.register_verifier("bn_silu", _verify_bn_silu, _bn_variant)
