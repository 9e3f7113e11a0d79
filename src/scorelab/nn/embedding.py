"""Sinusoidal embedding of a real-valued time (Vaswani et al. 2017; used by DDPM)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[cos(t w_i), sin(t w_i)] with w_i geometric from 1 to 1/max_period, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by a two-layer MLP."""

    def __init__(self, dim: int, time_scale: float = 1.0) -> None:
        super().__init__()
        self.dim = dim
        self.time_scale = time_scale
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t * self.time_scale, self.dim))


class LabelEmbedding(nn.Module):
    """A learned vector per class plus one for the null class (index num_classes), which
    y = None selects: the conditional and unconditional model in one network (Ho & Salimans
    2022). Zero-initialized, so a new conditional net starts as its unconditional twin."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.zeros_(self.table.weight)

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if y.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(y.shape)}")
        return self.table(y.long())
