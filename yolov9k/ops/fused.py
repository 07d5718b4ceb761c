"""Fused Conv-BN-SiLU and ELAN aggregation: PyTorch references, dispatched ops, model-side helpers.

Two ops, each with a readable reference (also the fallback and the ONNX-export path):

* ``bn_silu``: ``silu(batch_norm(x))`` with ``nn.BatchNorm2d``'s exact contract (batch statistics
  and running-stat update in training, running statistics in eval). Two fused implementations,
  both one statistics pass + one normalise/SiLU pass whose backward recomputes the normalised value
  from the input instead of storing the BN and SiLU outputs:

  - ``cpp`` (CPU, training): the C++ ops ``yolov9k::bn_silu_train`` / ``bn_silu_train_backward``
    (``csrc/cpu/bn_silu_kernel.cpp``) for float32 / float64 NCHW-contiguous input with affine
    parameters; :func:`bn_silu_cpp` updates the running statistics and sends every other case
    (eval, other dtypes or layouts, no affine) to the reference;
  - ``triton`` (CUDA): ``kernels/bn_silu.py``, any layout whose H and W flatten.

* ``concat_conv1x1_silu``: ``silu(conv1x1(cat(inputs)) + bias)``, the transition conv of the GELAN
  blocks after ``fuse()``. The Triton version (``kernels/concat_conv1x1.py``) is one GEMM reading
  every branch in place (no concat), channels-last output. There is no CPU version on purpose: on
  the 2-core CPU, cat + oneDNN conv (forward + backward) was measured faster than per-branch convs
  or matmuls. Inside ``accelerate``d models it runs for fp16 / bf16 maps only; fp32 goes back to
  torch.cat + cuDNN. Why: compiled for sm_80 with Triton 3.6, the fp32 kernel (TF32 products, as
  cuDNN uses by default) spilled registers in every tile config tried, while cuDNN already runs the
  conv on TF32 tensor cores; fp32 inference is not the fast path anyway (``.ci/check_triton_build.sh``,
  benchmarks/RESULTS.md). Called directly, the op still takes fp32 (TF32 when
  ``torch.backends.cudnn.allow_tf32``, else exact "ieee" products: ``kernels.concat_conv1x1.fp32_precision``).

``yolov9k.models.accelerate`` makes a built model use them through ``fused_backend``,
``bn_silu_cpp``, ``bn_silu_triton``, ``can_run_concat_gemm`` and ``concat_gemm_silu`` (this module
knows no model).

Choice in auto mode (``fused_backend``): on CPU the dispatcher's order (``cpp`` for ``bn_silu`` when
the extension has the kernel, else torch); on CUDA ``_triton_worth_it``, which uses the Triton path
for every shape for now.
TODO(gpu): replace with the measured crossover from ``benchmarks/test_bench_fused.py`` (run by
``benchmarks/gpu_check.sh``): eager cuDNN 1x1 convs may win below some M * C_out, and eager BN+SiLU
may win for tiny maps (launch-bound), which a size threshold here would express.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov9k.kernels.common import check_concat_inputs, update_bn_running_stats
from yolov9k.ops import _dispatch, _guard

__all__ = [
    "bn_silu",
    "bn_silu_cpp",
    "bn_silu_reference",
    "bn_silu_triton",
    "can_run_concat_gemm",
    "check_concat_inputs",
    "concat_conv1x1_silu",
    "concat_conv1x1_silu_reference",
    "concat_gemm_silu",
    "fused_backend",
    "fused_impl",
]


# --- references ----------------------------------------------------------------------------------


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


def concat_conv1x1_silu_reference(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """``silu(conv2d(cat(inputs, 1), weight, bias))``.

    Args: inputs, (N, C_i, H, W) tensors of one dtype and device; weight (C_out, sum C_i, 1, 1);
    bias (C_out,) or None. Returns (N, C_out, H, W).
    """
    check_concat_inputs(inputs, weight, bias)
    x = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), 1)
    return F.silu(F.conv2d(x, weight, bias))


# --- dispatched ops ------------------------------------------------------------------------------


def bn_silu_triton(*args, **kwargs) -> Tensor:
    """The Triton ``bn_silu`` (arguments as :func:`bn_silu_reference`); triton imported on first use."""
    from yolov9k.kernels.bn_silu import bn_silu_triton as kernel  # optional dependency, TRITON_INTERPRET

    return kernel(*args, **kwargs)


def concat_gemm_silu(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """The Triton concat GEMM without argument checks, for callers that checked
    (:func:`can_run_concat_gemm`); channels-last output, no backward."""
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton  # optional dependency

    return concat_conv1x1_silu_triton(list(inputs), weight, bias)


def _concat_conv1x1_silu_triton(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    check_concat_inputs(inputs, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*inputs, weight, bias) if t is not None):
        raise RuntimeError(
            "concat_conv1x1_silu: the Triton kernel is inference-only (no backward); run it under "
            "torch.no_grad() / inference_mode(), or use the torch backend"
        )
    return concat_gemm_silu(inputs, weight, bias)


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


_dispatch.register("bn_silu", "torch", bn_silu_reference)
_dispatch.register("bn_silu", "cpp", bn_silu_cpp, native_op="bn_silu_train")
_dispatch.register("bn_silu", "triton", bn_silu_triton)
_dispatch.register("concat_conv1x1_silu", "torch", concat_conv1x1_silu_reference)
_dispatch.register("concat_conv1x1_silu", "triton", _concat_conv1x1_silu_triton)


def _triton_worth_it(op: str, x: Tensor) -> bool:
    """Auto mode on CUDA: is the Triton kernel expected to beat eager for this input?

    TODO(gpu): no GPU measurement yet; defaults to True. Fill in the crossover measured by
    benchmarks/test_bench_fused.py (e.g. a minimum N*H*W or N*H*W*C below which eager wins).
    """
    return x.device.type == "cuda"


def fused_impl(op: str, backend: str, device: torch.device) -> Callable:
    """The implementation ``accelerate``'d modules call for ``op`` on ``backend`` (``bn_silu``:
    ``bn_silu_triton`` / ``bn_silu_cpp``; ``concat_conv1x1_silu``: ``concat_gemm_silu``), wrapped by
    the first-use guard on CUDA (``yolov9k.ops._guard``)."""
    fn = concat_gemm_silu if op == "concat_conv1x1_silu" else None  # bn_silu: the registered one
    return _dispatch.implementation(op, backend, device, fn)


def fused_backend(op: str, x: Tensor) -> str:
    """'triton', 'cpp' or 'torch' for ``op`` on ``x``: the dispatcher's choice plus the auto-mode heuristic.

    Auto: CPU tensors get ``cpp`` where the op has a C++ kernel that the built extension contains
    (``bn_silu``), else ``torch``; CUDA tensors get ``triton`` when ``_triton_worth_it``. A forced
    backend that the op does not implement (``cuda`` for both ops, ``cpp`` for
    ``concat_conv1x1_silu``) falls back to torch; a forced backend that the op implements but that
    cannot run here (e.g. ``cpp`` on CUDA tensors, ``triton`` on CPU tensors without the
    interpreter) raises the dispatcher's error.
    """
    wanted = _dispatch.requested_backend()
    if wanted != "auto" and not _dispatch.implemented(op, wanted):
        return "torch"
    backend, _ = _dispatch.select(op, x.device)
    if backend == "triton" and wanted == "auto" and not _triton_worth_it(op, x):
        return "torch"
    if backend != "torch" and _guard.has_fallen_back(op, x.device):
        return "torch"  # the kernel failed its first-use check here: the original forward
    return backend


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


def concat_conv1x1_silu(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """Dispatched ``silu(conv1x1(cat(inputs, 1)) + bias)``; see :func:`concat_conv1x1_silu_reference`.

    The Triton backend is inference-only and returns a channels-last tensor.
    """
    if not isinstance(inputs, (list, tuple)) or not inputs:
        raise ValueError("concat_conv1x1_silu expects a non-empty list of (N, C_i, H, W) tensors")
    _, fn = _dispatch.select("concat_conv1x1_silu", inputs[0].device)
    return fn(inputs, weight, bias)


# --- helpers for accelerated modules --------------------------------------------------------------


def can_run_concat_gemm(conv: nn.Conv2d, bn: nn.Module | None, act: nn.Module, x: Tensor) -> bool:
    """Can ``act(conv(cat(inputs)))`` (inputs like ``x``) run as the Triton concat GEMM here?

    Yes when the conv is a fused (BN folded: ``bn`` is None) 1x1, stride-1, ungrouped, biased conv
    followed by SiLU, the maps are fp16 / bf16, no gradient is needed (the GEMM has no backward) and
    the backend is Triton.
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
    if torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad):
        return False
    return fused_backend("concat_conv1x1_silu", x) == "triton"


# --- first-use check of the bn_silu kernels (yolov9k.ops._guard) -----------------------------------

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
