"""``accelerate(model)``: run a built model's Conv layers through the fused ops of ``yolov9k.ops.fused``.

Only ``Conv`` changes class (to :class:`AcceleratedConv`). The GELAN blocks keep their one forward:
each hands its concat-then-1x1-conv to ``Conv.forward_concat``, which :class:`AcceleratedConv`
overrides to read the branch list in place (one GEMM, no ``torch.cat``) when the Triton backend is
chosen. When the dispatcher picks ``torch`` (always for CPU tensors in auto mode) the original
forwards run unchanged, so the model is numerically the same.
"""

from __future__ import annotations

from torch import Tensor, nn

from yolov9k.models.blocks import ELAN1, SPPELAN, Conv, RepNCSP, RepNCSPELAN4
from yolov9k.ops.fused import bn_silu_triton, can_run_concat_gemm, concat_gemm_silu, fused_backend

__all__ = [
    "AcceleratedConv",
    "AcceleratedELAN1",
    "AcceleratedRepNCSP",
    "AcceleratedRepNCSPELAN4",
    "AcceleratedSPPELAN",
    "accelerate",
]


class AcceleratedConv(Conv):
    """``Conv`` whose BN + SiLU (training, or eval before fuse) runs as the fused ``bn_silu`` kernel
    and whose fused 1x1 conv + SiLU (alone or over a block's branch list) runs as the concat GEMM,
    when the backend is Triton."""

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        if bn is None:
            return self.forward_concat([x])
        if not (isinstance(self.act, nn.SiLU) and bn.affine) or fused_backend("bn_silu", x) != "triton":
            return Conv.forward(self, x)
        stats = not bn.training or bn.track_running_stats
        return bn_silu_triton(
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
            return concat_gemm_silu(inputs, self.conv.weight, self.conv.bias)
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

    * training / unfused eval: ``Conv`` = conv, then the fused BN + SiLU kernel (``bn_silu``);
    * fused eval: the 1x1 transitions of the GELAN blocks as one GEMM over their branch list (no
      ``torch.cat``), and every other fused 1x1 Conv + SiLU as the one-input GEMM.

    The Triton path is taken only when the dispatcher picks it (auto: CUDA tensors with triton
    installed; forced: ``YOLOV9K_BACKEND=triton`` / ``use_backend``). Under ``torch`` (every CPU
    tensor in auto mode) the original forwards run, bit for bit.

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
