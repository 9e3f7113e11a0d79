"""Standardization of vector data: the model works on (x - shift) / scale.

One scalar scale (the mean per-feature std) keeps the data's shape isotropic, so the
noise of the forward process is the same in every direction, and the map is a plain
affine change of units: log-densities shift by -d log(scale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Normalizer:
    """x_model = (x - shift) / scale, with shift (d,) and a scalar scale."""

    shift: tuple[float, ...]
    scale: float

    @classmethod
    def fit(cls, x: Tensor) -> Normalizer:
        std = float(x.std(dim=0).mean()) if x.shape[0] > 1 else 1.0
        return cls(tuple(float(v) for v in x.mean(dim=0)), std if std > 0 else 1.0)

    def encode(self, x: Tensor) -> Tensor:
        return (x - torch.tensor(self.shift, dtype=x.dtype, device=x.device)) / self.scale

    def decode(self, x: Tensor) -> Tensor:
        return x * self.scale + torch.tensor(self.shift, dtype=x.dtype, device=x.device)

    def encode_score(self, score: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        """A data-unit score grad log p(x) as the score in model units: x' = (x - shift) / scale
        has grad_x' log p'(x') = scale * grad_x log p(decode(x')) (docs/theory.md §22)."""

        def model_score(x_model: Tensor) -> Tensor:
            return self.scale * score(self.decode(x_model))

        return model_score

    def to_dict(self) -> dict:
        return {"shift": list(self.shift), "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(tuple(float(v) for v in d["shift"]), float(d["scale"]))
