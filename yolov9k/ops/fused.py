"""Fused Conv-BN-SiLU and ELAN aggregation: PyTorch references, dispatched ops, ``accelerate(model)``.

Two ops, each with a readable reference (also the CPU path and the ONNX-export path) and a Triton
implementation in ``kernels/`` (installed as ``yolov9k.kernels``):

* ``bn_silu``: ``silu(batch_norm(x))`` with ``nn.BatchNorm2d``'s exact contract (batch statistics
  and running-stat update in training, running statistics in eval). The Triton version
  (``kernels/bn_silu.py``) is one statistics pass + one normalise/SiLU pass, and its backward
  recomputes the normalised value from the input instead of storing BN and SiLU outputs.
* ``concat_conv1x1_silu``: ``silu(conv1x1(cat(inputs)) + bias)``, the transition conv of the GELAN
  blocks after ``fuse()``. The Triton version (``kernels/concat_conv1x1.py``) is one GEMM reading
  every branch in place (no concat), channels-last output.

``accelerate(model)`` makes a built model use them: it swaps the class of ``Conv`` /
``RepNCSPELAN4`` / ``ELAN1`` / ``SPPELAN`` / ``RepNCSP`` modules for subclasses whose ``forward``
asks the dispatcher at call time. When the dispatcher picks ``torch`` (always for CPU tensors in
auto mode) they run the original ``forward`` unchanged, so the model is numerically the same.

Choice on CUDA in auto mode (``_triton_worth_it``): the Triton path is used for every shape for now.
TODO(gpu): replace with the measured crossover from ``benchmarks/test_bench_fused.py`` (run by
``benchmarks/gpu_check.sh``): eager cuDNN 1x1 convs may win below some M * C_out, and eager BN+SiLU
may win for tiny maps (launch-bound), which a size threshold here would express.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov9k.models.blocks import ELAN1, SPPELAN, Conv, RepNCSP, RepNCSPELAN4
from yolov9k.ops import _dispatch

__all__ = [
    "AcceleratedConv",
    "AcceleratedELAN1",
    "AcceleratedRepNCSP",
    "AcceleratedRepNCSPELAN4",
    "AcceleratedSPPELAN",
    "accelerate",
    "bn_silu",
    "bn_silu_reference",
    "check_concat_inputs",
    "concat_conv1x1_silu",
    "concat_conv1x1_silu_reference",
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


def concat_conv1x1_silu_reference(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    """``silu(conv2d(cat(inputs, 1), weight, bias))``.

    Args: inputs, (N, C_i, H, W) tensors of one dtype and device; weight (C_out, sum C_i, 1, 1);
    bias (C_out,) or None. Returns (N, C_out, H, W).
    """
    check_concat_inputs(inputs, weight, bias)
    x = inputs[0] if len(inputs) == 1 else torch.cat(list(inputs), 1)
    return F.silu(F.conv2d(x, weight, bias))


# --- dispatched ops ------------------------------------------------------------------------------


def _bn_silu_triton(*args, **kwargs) -> Tensor:
    from yolov9k.kernels.bn_silu import bn_silu_triton  # imported on first use (TRITON_INTERPRET)

    return bn_silu_triton(*args, **kwargs)


def _concat_conv1x1_silu_triton(inputs: Sequence[Tensor], weight: Tensor, bias: Tensor | None) -> Tensor:
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton

    check_concat_inputs(inputs, weight, bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (*inputs, weight, bias) if t is not None):
        raise RuntimeError(
            "concat_conv1x1_silu: the Triton kernel is inference-only (no backward); run it under "
            "torch.no_grad() / inference_mode(), or use the torch backend"
        )
    return concat_conv1x1_silu_triton(list(inputs), weight, bias)


_dispatch.register("bn_silu", "torch", bn_silu_reference)
_dispatch.register("bn_silu", "triton", _bn_silu_triton)
_dispatch.register("concat_conv1x1_silu", "torch", concat_conv1x1_silu_reference)
_dispatch.register("concat_conv1x1_silu", "triton", _concat_conv1x1_silu_triton)


def _triton_worth_it(op: str, x: Tensor) -> bool:
    """Auto mode on CUDA: is the Triton kernel expected to beat eager for this input?

    TODO(gpu): no GPU measurement yet; defaults to True. Fill in the crossover measured by
    benchmarks/test_bench_fused.py (e.g. a minimum N*H*W or N*H*W*C below which eager wins).
    """
    return x.device.type == "cuda"


def _backend(op: str, x: Tensor) -> str:
    """'triton' or 'torch' for ``op`` on ``x``: the dispatcher's choice plus the auto-mode heuristic.

    A forced backend that these ops do not implement (``cpp``, ``cuda``: they exist for other ops)
    falls back to torch; a forced ``triton`` that cannot run raises the dispatcher's error.
    """
    wanted = _dispatch.requested_backend()
    if wanted in ("cpp", "cuda"):
        return "torch"
    backend, _ = _dispatch.select(op, x.device)
    if backend == "triton" and wanted == "auto" and not _triton_worth_it(op, x):
        return "torch"
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


# --- model transformation ------------------------------------------------------------------------


def _is_silu(act: nn.Module) -> bool:
    return isinstance(act, nn.SiLU)


def _fused_1x1(m: Conv) -> bool:
    """True when ``m`` is a fused (BN folded) 1x1, stride-1, ungrouped, biased conv + SiLU."""
    c = m.conv
    return (
        m.bn is None
        and c.bias is not None
        and c.kernel_size == (1, 1)
        and c.stride == (1, 1)
        and c.padding == (0, 0)
        and c.dilation == (1, 1)
        and c.groups == 1
        and c.padding_mode == "zeros"
        and _is_silu(m.act)
    )


def _concat_ready(m: Conv, x: Tensor) -> bool:
    """Can the transition conv ``m`` run as the Triton concat GEMM on inputs like ``x`` here?"""
    if not _fused_1x1(m):
        return False
    if torch.is_grad_enabled() and (x.requires_grad or m.conv.weight.requires_grad):
        return False  # the GEMM kernel has no backward
    return _backend("concat_conv1x1_silu", x) == "triton"


def _concat_silu(m: Conv, inputs: list[Tensor]) -> Tensor:
    from yolov9k.kernels.concat_conv1x1 import concat_conv1x1_silu_triton

    return concat_conv1x1_silu_triton(inputs, m.conv.weight, m.conv.bias)


class AcceleratedConv(Conv):
    """``Conv`` whose BN + SiLU (training, or eval before fuse) runs as the fused ``bn_silu`` kernel
    and whose fused 1x1 conv + SiLU runs as the one-input GEMM, when the backend is Triton."""

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        if bn is not None:
            if not (_is_silu(self.act) and bn.affine) or _backend("bn_silu", x) != "triton":
                return Conv.forward(self, x)
            training = bn.training or not bn.track_running_stats
            track = bn.training and bn.track_running_stats
            return _bn_silu_triton(
                self.conv(x),
                bn.weight,
                bn.bias,
                bn.running_mean if (not bn.training or bn.track_running_stats) else None,
                bn.running_var if (not bn.training or bn.track_running_stats) else None,
                training,
                bn.momentum,
                bn.eps,
                bn.num_batches_tracked if track else None,
            )
        if _concat_ready(self, x):
            return _concat_silu(self, [x])
        return Conv.forward(self, x)


class AcceleratedRepNCSPELAN4(RepNCSPELAN4):
    """``RepNCSPELAN4`` whose fused cv4 reads [cv1 out, stage 1, stage 2] in place (no torch.cat)."""

    def forward(self, x: Tensor) -> Tensor:
        if not _concat_ready(self.cv4, x):
            return RepNCSPELAN4.forward(self, x)
        y0 = self.cv1(x)  # = cat of its two chunks, which are the first two concat inputs
        y2 = self.cv2(y0.chunk(2, 1)[1])
        y3 = self.cv3(y2)
        return _concat_silu(self.cv4, [y0, y2, y3])


class AcceleratedELAN1(ELAN1):
    """``ELAN1`` whose fused cv4 reads [cv1 out, stage 1, stage 2] in place (no torch.cat)."""

    def forward(self, x: Tensor) -> Tensor:
        if not _concat_ready(self.cv4, x):
            return ELAN1.forward(self, x)
        y0 = self.cv1(x)
        y2 = self.cv2(y0.chunk(2, 1)[1])
        y3 = self.cv3(y2)
        return _concat_silu(self.cv4, [y0, y2, y3])


class AcceleratedSPPELAN(SPPELAN):
    """``SPPELAN`` whose fused cv5 reads the four pyramid maps in place (no torch.cat)."""

    def forward(self, x: Tensor) -> Tensor:
        if not _concat_ready(self.cv5, x):
            return SPPELAN.forward(self, x)
        y = [self.cv1(x)]
        for m in (self.cv2, self.cv3, self.cv4):
            y.append(m(y[-1]))
        return _concat_silu(self.cv5, y)


class AcceleratedRepNCSP(RepNCSP):
    """``RepNCSP`` whose fused cv3 reads [bottlenecks out, cv2 out] in place (no torch.cat)."""

    def forward(self, x: Tensor) -> Tensor:
        if not _concat_ready(self.cv3, x):
            return RepNCSP.forward(self, x)
        return _concat_silu(self.cv3, [self.m(self.cv1(x)), self.cv2(x)])


_ACCELERATED: dict[type[nn.Module], type[nn.Module]] = {
    Conv: AcceleratedConv,
    RepNCSPELAN4: AcceleratedRepNCSPELAN4,
    ELAN1: AcceleratedELAN1,
    SPPELAN: AcceleratedSPPELAN,
    RepNCSP: AcceleratedRepNCSP,
}


def accelerate(model: nn.Module) -> nn.Module:
    """Make ``model`` use the fused kernels where the backend allows (in place; returns ``model``).

    Swaps the class of every ``Conv``, ``RepNCSPELAN4``, ``ELAN1``, ``SPPELAN`` and ``RepNCSP`` for
    its ``Accelerated*`` subclass (same parameters, buffers, state-dict keys; ``fuse()`` still works;
    idempotent). Their ``forward`` chooses per call:

    * training / unfused eval: ``Conv`` = conv, then the fused BN + SiLU kernel (``bn_silu``);
    * fused eval: the 1x1 transitions of the GELAN blocks as one GEMM over their branch list (no
      ``torch.cat``), and every other fused 1x1 Conv + SiLU as the one-input GEMM.

    The Triton path is taken only when the dispatcher picks it (auto: CUDA tensors with triton
    installed, see ``_triton_worth_it``; forced: ``YOLOV9K_BACKEND=triton`` / ``use_backend``). Under
    ``torch`` (every CPU tensor in auto mode) the original forwards run, bit for bit.

    Example:
        >>> m = accelerate(build_model("gelan-c").cuda().half().to(memory_format=torch.channels_last))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"accelerate expects an nn.Module, got {type(model).__name__}")
    for m in model.modules():
        new_cls = _ACCELERATED.get(type(m))
        if new_cls is not None:
            m.__class__ = new_cls
    return model
