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
        live = self._floating(module)
        self.names = list(live)
        self.shadow = [v.detach().clone() for v in live.values()]

    @staticmethod
    def _floating(module: nn.Module) -> dict[str, Tensor]:
        return {k: v for k, v in module.state_dict(keep_vars=True).items() if v.is_floating_point()}

    def effective_decay(self, step: int) -> float:
        """Warm-up of the decay, min(d, (1 + n) / (10 + n)): early averages forget the init."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, module: nn.Module, step: int) -> None:
        """theta_ema <- d theta_ema + (1 - d) theta, theta read from module at this call.

        Reading the module each time (not tensors kept from construction) follows parameters
        that were replaced or moved since; a module with other tensors is refused.
        """
        live = self._live(module)
        torch._foreach_lerp_(self.shadow, live, 1.0 - self.effective_decay(step))

    def _live(self, module: nn.Module) -> list[Tensor]:
        state = self._floating(module)
        if list(state) != self.names:
            missing = sorted(set(self.names) - set(state))
            extra = sorted(set(state) - set(self.names))
            raise ValueError(
                "EMA.update got a module with other tensors than the one it was built for: "
                f"missing {missing[:3]}, unexpected {extra[:3]}"
            )
        live = list(state.values())
        for i, (name, s, v) in enumerate(zip(self.names, self.shadow, live, strict=True)):
            if s.shape != v.shape or s.dtype != v.dtype:
                raise ValueError(
                    f"EMA.update: {name} is {v.dtype} {tuple(v.shape)} in the module, "
                    f"{s.dtype} {tuple(s.shape)} in the average"
                )
            if s.device != v.device:  # the module moved: the average follows it
                self.shadow[i] = s.to(v.device)
        return live

    def state_dict(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.shadow, strict=True))

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        if set(state) != set(self.names):
            raise KeyError("EMA state does not match the model's parameters")
        self.shadow = [state[k].clone() for k in self.names]
