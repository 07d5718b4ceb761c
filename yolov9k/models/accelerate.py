"""``accelerate(model, bn_silu=True, concat_conv=True)``: run a built model's ``Conv`` layers through
the fused ops ``yolov9k.ops.bn_silu`` and ``yolov9k.ops.concat_conv1x1_silu``, each switched on or
off on its own.

Only ``Conv`` changes class (to :class:`AcceleratedConv`); the GELAN blocks keep their one forward
and hand their concat-then-1x1-conv to ``Conv.forward_concat``. Which kernel runs for a call is the
dispatcher's choice (``yolov9k.ops._dispatch``, where the routing is described once); a call that no
kernel takes runs the original forward, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from yolov9k.models.blocks import Conv
from yolov9k.ops import _dispatch
from yolov9k.ops.concat_conv1x1_silu import can_run_concat_gemm

__all__ = ["AcceleratedConv", "accelerate"]


class AcceleratedConv(Conv):
    """``Conv`` whose BN + SiLU runs as the fused ``bn_silu`` op (C++ when training on CPU, Triton on
    CUDA in training or unfused eval) and whose fused 1x1 conv + SiLU (alone or over a block's branch
    list) runs as the Triton concat GEMM; ``use_bn_silu`` / ``use_concat_conv`` switch each off."""

    use_bn_silu = True
    use_concat_conv = True

    def forward(self, x: Tensor) -> Tensor:
        bn = self.bn
        if bn is None:
            return self.forward_concat([x])
        if not (self.use_bn_silu and isinstance(self.act, nn.SiLU) and bn.affine):
            return Conv.forward(self, x)
        backend, fn = _dispatch.select("bn_silu", x.device, module_path=True)
        if backend == "triton" or (backend == "cpp" and bn.training):
            return self._bn_silu(fn, x)
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
        x = inputs[0]
        if self.use_concat_conv and can_run_concat_gemm(self.conv, self.bn, self.act, x):
            backend, gemm = _dispatch.select("concat_conv1x1_silu", x.device, module_path=True)
            if backend == "triton":
                return gemm(inputs, self.conv.weight, self.conv.bias)
        return Conv.forward_concat(self, inputs) if len(inputs) > 1 else Conv.forward(self, x)


def accelerate(model: nn.Module, *, bn_silu: bool = True, concat_conv: bool = True) -> nn.Module:
    """Make ``model`` use the fused kernels where the backend allows (in place; returns ``model``).

    Swaps the class of every ``Conv`` for :class:`AcceleratedConv` (same parameters, buffers and
    state-dict keys; ``fuse()`` still works). Calling it again sets the switches anew; with both off
    the Convs get their original class back.

    Args:
        bn_silu: BN + SiLU of each Conv as the fused ``bn_silu`` op (C++ in CPU training, Triton on
            CUDA in training / unfused eval).
        concat_conv: after ``fuse()``, a GELAN block's concat + 1x1 conv + SiLU (and every other
            fused 1x1 Conv + SiLU) as the Triton concat GEMM (CUDA, fp16 / bf16, no gradient).

    Example:
        >>> m = accelerate(build_model("gelan-c").cuda().half(), concat_conv=False)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"accelerate expects an nn.Module, got {type(model).__name__}")
    on = bn_silu or concat_conv
    for m in model.modules():
        if type(m) in (Conv, AcceleratedConv):
            m.__class__ = AcceleratedConv if on else Conv
            if on:
                m.use_bn_silu, m.use_concat_conv = bool(bn_silu), bool(concat_conv)
            else:
                m.__dict__.pop("use_bn_silu", None)
                m.__dict__.pop("use_concat_conv", None)
    return model
