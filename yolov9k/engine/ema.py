"""Exponential moving average of model weights (the official ``ModelEMA`` behaviour).

After every optimizer step each floating-point entry of the state dict (parameters and BatchNorm
running statistics) moves as ``ema = d * ema + (1 - d) * model`` with
``d = decay * (1 - exp(-updates / tau))``, so early updates follow the model closely; integer buffers
(``num_batches_tracked``) are copied. The EMA copy is what is validated and saved as the result.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["ModelEMA", "unwrap_model"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


class ModelEMA:
    """EMA of a model's state.

    Args:
        model: the model being trained (wrappers are looked through).
        decay: the asymptotic decay ``d``.
        tau: warm-up constant of the decay, in updates.
        updates: updates already done (when resuming).

    Attributes:
        ema: the averaged copy, in eval mode, without gradients.
        updates: number of updates so far.
    """

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0
    ) -> None:
        self.ema = copy.deepcopy(unwrap_model(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.tau = float(tau)
        self.updates = int(updates)

    def current_decay(self) -> float:
        """The decay ``d`` for the current ``updates`` count."""
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current state."""
        self.updates += 1
        d = self.current_decay()
        msd = unwrap_model(model).state_dict()
        for k, v in self.ema.state_dict().items():
            src = msd[k].detach()
            if v.dtype.is_floating_point:
                v.mul_(d).add_(src.to(v.dtype), alpha=1 - d)
            else:
                v.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (a state dict of the model)."""
        return self.ema.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        """Restore averaged weights and the update count (resume)."""
        self.ema.load_state_dict(state)
        self.updates = int(updates)
