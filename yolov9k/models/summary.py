"""Parameter and FLOP counts of a DetectionModel, reproducing the official summary line.

The official ``utils.torch_utils.model_info`` profiles the model with thop on a (1, 3, 32, 32) input
(32 = the largest stride) and scales the multiply-accumulates linearly to the requested image size:
``GFLOPs = MACs * 2 / 1e9 * (imgsz / 32) ** 2``. thop counts leaf modules only: Conv2d
``out.numel() * in_ch / groups * kh * kw`` (bias ignored), BatchNorm2d ``4 * in.numel()`` (normalise +
affine), nearest Upsample ``out.numel()``; activations, pooling and functional ops count 0. We count
the same with forward hooks, on any device (``meta`` included), without changing BN statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["count_macs", "model_info"]

PROBE = 32  # thop input size of the official recipe (max stride)


def _conv_macs(m: nn.Conv2d, inp: tuple[Tensor, ...], out: Tensor) -> int:
    return out.numel() * (inp[0].shape[1] // m.groups) * math.prod(m.kernel_size)


def _bn_macs(m: nn.BatchNorm2d, inp: tuple[Tensor, ...], out: Tensor) -> int:
    return (4 if m.affine else 2) * inp[0].numel()


def _upsample_macs(m: nn.Upsample, inp: tuple[Tensor, ...], out: Tensor) -> int:
    return out.numel() if m.mode == "nearest" else 0


def _identity(x: Tensor) -> Tensor:
    return x


_RULES = {nn.Conv2d: _conv_macs, nn.BatchNorm2d: _bn_macs, nn.Upsample: _upsample_macs}


@torch.no_grad()
def count_macs(model: nn.Module, imgsz: int = PROBE) -> int:
    """thop-style multiply-accumulates of one (1, ch, imgsz, imgsz) forward of every branch.

    The forward runs in eval mode (BN statistics untouched) through ``model.forward_maps`` (all heads
    and their DFL box decoding, as the official eval forward), on the model's device and dtype
    (``meta`` works).
    """
    p = next(model.parameters())
    ch = int(getattr(model, "cfg", {}).get("ch", 3))
    total = [0]
    hooks = []

    def hook(m: nn.Module, inp: tuple[Tensor, ...], out: Tensor) -> None:
        total[0] += _RULES[type(m)](m, inp, out)

    # On "meta" tensors batch_norm runs through slow Python decompositions; BN keeps shapes, so for
    # counting it is shadowed by an identity there (the hooks still fire), and restored afterwards.
    shadowed = []
    for m in model.modules():
        if type(m) in _RULES:
            hooks.append(m.register_forward_hook(hook))
        if p.device.type == "meta" and isinstance(m, nn.BatchNorm2d):
            m.forward = _identity
            shadowed.append(m)
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)
        maps = model.forward_maps(x)
        if getattr(model, "is_dual", False):  # the official eval forward decodes both heads
            model.head.decode_aux(maps[0])
            model.head.decode(maps[1])
        else:
            model.head.decode(maps)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
        for m in shadowed:
            del m.forward
    return int(total[0])


def model_info(model: nn.Module, imgsz: int = 640) -> dict[str, Any]:
    """Parameters, GFLOPs at ``imgsz`` (official thop recipe) and layer counts.

    Returns a dict: ``params``, ``grad_params`` (requiring grad), ``gflops``, ``layers`` (number of
    modules, what the official summary prints), ``yaml_layers`` (config rows).
    """
    levels = model.level_strides() if hasattr(model, "level_strides") else [float(model.stride.max())]
    stride = max(int(max(levels)), PROBE)
    macs = count_macs(model, stride)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "grad_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "gflops": macs * 2 / 1e9 * (imgsz / stride) ** 2,
        "layers": len(list(model.modules())),
        "yaml_layers": len(model.model) if hasattr(model, "model") else None,
    }
