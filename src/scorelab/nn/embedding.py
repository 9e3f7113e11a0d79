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
