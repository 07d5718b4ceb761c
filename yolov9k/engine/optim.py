"""Optimizer, LR schedules and warm-up of the official YOLOv9 recipe.

* Three parameter groups, in this order: 0 biases (no decay), 1 conv/linear weights (decay),
  2 normalisation-layer weights (no decay). Warm-up treats group 0 specially (its LR falls from
  ``warmup_bias_lr``), so the order matters.
* Weight decay is scaled by ``batch * accumulate / nbs`` (nominal batch 64 by accumulation).
* LR factor per epoch ``lf(epoch)``: linear ``(1 - x/epochs) * (1 - lrf) + lrf`` or the cosine
  ``one_cycle`` from 1 to ``lrf``; each group's LR is ``initial_lr * lf(epoch)`` (what ``LambdaLR``
  gives), set at the start of every epoch so that resuming needs only the epoch number.
* Warm-up over ``max(round(warmup_epochs * nb), 100)`` iterations: LRs, momentum and the accumulation
  count are interpolated linearly in the iteration index.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "param_groups",
    "build_optimizer",
    "lr_factor",
    "accumulate_steps",
    "warmup_iterations",
    "set_epoch_lr",
    "apply_warmup",
]


def param_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """(biases, decayed weights, normalisation weights) of the trainable parameters of ``model``.

    A parameter named ``bias`` goes to the first list, the ``weight`` of a normalisation layer
    (any ``torch.nn`` class with "Norm" in its name) to the third, everything else to the second.
    """
    norm_types = tuple(v for k, v in vars(nn).items() if "Norm" in k and isinstance(v, type))
    biases: list[nn.Parameter] = []
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                biases.append(p)
            elif name == "weight" and isinstance(module, norm_types):
                no_decay.append(p)
            else:
                decay.append(p)
    return biases, decay, no_decay


def build_optimizer(
    model: nn.Module, name: str = "SGD", lr: float = 0.01, momentum: float = 0.937, weight_decay: float = 5e-4
) -> torch.optim.Optimizer:
    """The three-group optimizer (see the module docstring); ``weight_decay`` is applied as given.

    Args:
        name: "SGD" (nesterov), "Adam" or "AdamW" (``momentum`` is beta1 for the Adams).
    """
    biases, decay, no_decay = param_groups(model)
    if name == "SGD":
        opt: torch.optim.Optimizer = torch.optim.SGD(biases, lr=lr, momentum=momentum, nesterov=True)
    elif name in ("Adam", "AdamW"):
        cls = torch.optim.Adam if name == "Adam" else torch.optim.AdamW
        opt = cls(biases, lr=lr, betas=(momentum, 0.999), weight_decay=0.0)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected SGD, Adam or AdamW")
    opt.add_param_group({"params": decay, "weight_decay": weight_decay})
    opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
    for group, tag in zip(opt.param_groups, ("bias", "weight", "norm")):
        group["name"] = tag
        group["initial_lr"] = lr
    return opt


def lr_factor(epochs: int, lrf: float, cosine: bool = False) -> Callable[[float], float]:
    """The per-epoch LR multiplier ``lf(epoch)``: 1 at epoch 0, ``lrf`` at ``epochs``."""
    if cosine:
        return lambda x: ((1 - math.cos(x * math.pi / epochs)) / 2) * (lrf - 1.0) + 1.0
    return lambda x: (1 - x / epochs) * (1.0 - lrf) + lrf


def warmup_iterations(warmup_epochs: float, nb: int) -> int:
    """Warm-up length in iterations: ``max(round(warmup_epochs * nb), 100)`` (0 when warm-up is off)."""
    return max(round(warmup_epochs * nb), 100) if warmup_epochs > 0 else 0


def accumulate_steps(nbs: int, batch: int) -> int:
    """Batches whose gradients are summed before one optimizer step: ``max(round(nbs / batch), 1)``."""
    return max(round(nbs / batch), 1)


def set_epoch_lr(optimizer: torch.optim.Optimizer, lf: Callable[[float], float], epoch: int) -> None:
    """Set every group's LR to ``initial_lr * lf(epoch)`` (the scheduler position of ``epoch``)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lf(epoch)


def apply_warmup(
    optimizer: torch.optim.Optimizer,
    ni: int,
    nw: int,
    epoch: int,
    lf: Callable[[float], float],
    hyp: dict[str, Any],
    nbs: int,
    batch: int,
) -> int:
    """Warm-up at integrated iteration ``ni`` (``0 <= ni <= nw``); returns the accumulation count.

    Group 0 (biases) goes from ``warmup_bias_lr`` down to its scheduled LR, the others up from 0;
    momentum (or Adam's beta1) goes from ``warmup_momentum`` to ``momentum``; accumulation from 1 to
    ``nbs / batch`` (rounded half to even, as numpy does).
    """
    xi = [0, nw]
    accumulate = max(1, int(np.interp(ni, xi, [1, nbs / batch]).round()))
    for j, group in enumerate(optimizer.param_groups):
        start = hyp["warmup_bias_lr"] if j == 0 else 0.0
        group["lr"] = float(np.interp(ni, xi, [start, group["initial_lr"] * lf(epoch)]))
        mom = float(np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]]))
        if "momentum" in group:
            group["momentum"] = mom
        elif "betas" in group:
            group["betas"] = (mom, group["betas"][1])
    return accumulate
