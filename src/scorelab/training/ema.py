"""Exponential moving average of weights: theta_ema <- d theta_ema + (1 - d) theta."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class EMA:
    """Shadow copies of a module's floating-point parameters and buffers."""

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        live = {
            k: v for k, v in module.state_dict(keep_vars=False).items() if v.is_floating_point()
        }
        self.names = list(live)
        # the state_dict tensors share storage with the parameters: kept, they track every step
        self._live = list(live.values())
        self.shadow = [v.detach().clone() for v in self._live]

    def effective_decay(self, step: int) -> float:
        """Warm-up of the decay, min(d, (1 + n) / (10 + n)): early averages forget the init."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """theta_ema <- d theta_ema + (1 - d) theta for the module given at construction."""
        torch._foreach_lerp_(self.shadow, self._live, 1.0 - self.effective_decay(step))

    def state_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.names):
            raise KeyError("EMA state does not match the model's parameters")
        self.shadow = [state[k].clone() for k in self.names]
