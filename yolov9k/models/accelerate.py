"""``accelerate(model)``: run a built model's Conv layers through the fused ops of ``yolov9k.ops.fused``.

Only ``Conv`` changes class (to :class:`AcceleratedConv`). The GELAN blocks keep their one forward:
each hands its concat-then-1x1-conv to ``Conv.forward_concat``. What runs where:

* CPU, training (backend ``cpp``: auto mode with the extension built, or forced): BN + SiLU of every
  Conv as the C++ ``bn_silu`` op (float32 / float64 NCHW-contiguous conv outputs; other dtypes and
  layouts take the PyTorch reference inside it). The concat and the 1x1 conv stay as they are
  (cat + oneDNN conv was measured faster on CPU than reading the branches in place).
* CUDA (backend ``triton``): BN + SiLU as the Triton ``bn_silu`` kernel (training, or eval before
  ``fuse()``), and after ``fuse()`` the 1x1 conv + SiLU over a block's branch list as one GEMM
  without ``torch.cat``.
* Everything else (backend ``torch``, CPU eval, a Conv without BN + SiLU): the original forwards,
  so the model is numerically the same, bit for bit.

On CUDA every kernel call goes through the first-use guard (``yolov9k.ops._guard``): a kernel that
fails (compile, launch, or a first result unlike the reference's) makes that op run the original
forward for the rest of the process, with one warning.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from yolov9k.models.blocks import ELAN1, SPPELAN, Conv, RepNCSP, RepNCSPELAN4
from yolov9k.ops.fused import can_run_concat_gemm, fused_backend, fused_impl

__all__ = [
    "AcceleratedConv",
    "AcceleratedELAN1",
    "AcceleratedRepNCSP",
    "AcceleratedRepNCSPELAN4",
    "AcceleratedSPPELAN",
    "accelerate",
]


class AcceleratedConv(Conv):
    """``Conv`` whose BN + SiLU runs as the fused ``bn_silu`` op (C++ when training on CPU, Triton on
    CUDA in training or unfused eval) and whose fused 1x1 conv + SiLU (alone or over a block's branch
    list) runs as the Triton concat GEMM."""

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        if bn is None:
            return self.forward_concat([x])
        if not (isinstance(self.act, nn.SiLU) and bn.affine):
            return Conv.forward(self, x)
        backend = fused_backend("bn_silu", x)
        if backend == "triton" or (backend == "cpp" and bn.training):
            return self._bn_silu(fused_impl("bn_silu", backend, x.device), x)
        return Conv.forward(self, x)

    def _bn_silu(self, fn: Callable[..., Tensor], x: Tensor) -> Tensor:
        """``fn`` (a ``bn_silu`` implementation) on ``conv(x)``, called as ``nn.BatchNorm2d.forward``
        calls ``F.batch_norm``."""
        bn = self.bn
        stats = not bn.training or bn.track_running_stats
        return fn(
            self.conv(x),
            bn.weight,
            bn.bias,
            bn.running_mean if stats else None,
            bn.running_var if stats else None,
            bn.training or not bn.track_running_stats,
            bn.momentum,
            bn.eps,
            bn.num_batches_tracked if bn.training and bn.track_running_stats else None,
        )

    def forward_concat(self, inputs: list[Tensor]) -> Tensor:
        if can_run_concat_gemm(self.conv, self.bn, self.act, inputs[0]):
            gemm = fused_impl("concat_conv1x1_silu", "triton", inputs[0].device)
            return gemm(inputs, self.conv.weight, self.conv.bias)
        return Conv.forward_concat(self, inputs) if len(inputs) > 1 else Conv.forward(self, inputs[0])


class AcceleratedRepNCSPELAN4(RepNCSPELAN4):
    """A ``RepNCSPELAN4`` after ``accelerate`` (its cv4 is an ``AcceleratedConv``); same forward."""


class AcceleratedELAN1(ELAN1):
    """An ``ELAN1`` after ``accelerate`` (its cv4 is an ``AcceleratedConv``); same forward."""


class AcceleratedSPPELAN(SPPELAN):
    """An ``SPPELAN`` after ``accelerate`` (its cv5 is an ``AcceleratedConv``); same forward."""


class AcceleratedRepNCSP(RepNCSP):
    """A ``RepNCSP`` after ``accelerate`` (its cv3 is an ``AcceleratedConv``); same forward."""


_ACCELERATED: dict[type[nn.Module], type[nn.Module]] = {
    Conv: AcceleratedConv,
    RepNCSPELAN4: AcceleratedRepNCSPELAN4,
    ELAN1: AcceleratedELAN1,
    SPPELAN: AcceleratedSPPELAN,
    RepNCSP: AcceleratedRepNCSP,
}


def accelerate(model: nn.Module) -> nn.Module:
    """Make ``model`` use the fused kernels where the backend allows (in place; returns ``model``).

    Swaps the class of every ``Conv`` (and, as a marker, of the GELAN blocks) for its ``Accelerated*``
    subclass (same parameters, buffers, state-dict keys; ``fuse()`` still works; idempotent). Per call:

    * training on CPU (backend ``cpp``): ``Conv`` = conv, then the C++ BN + SiLU op;
    * on CUDA (backend ``triton``), training / unfused eval: conv, then the Triton BN + SiLU kernel;
      fused eval: the 1x1 transitions of the GELAN blocks as one GEMM over their branch list (no
      ``torch.cat``), and every other fused 1x1 Conv + SiLU as the one-input GEMM.

    The backend is the dispatcher's (auto: ``cpp`` for CPU tensors when the extension is built,
    ``triton`` for CUDA tensors with triton installed; or forced with ``YOLOV9K_BACKEND`` /
    ``use_backend``). Under ``torch``, and for CPU eval, the original forwards run, bit for bit.

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
