"""Built-in 2-D distributions, generated from an explicit generator (no files, no downloads)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab.oracle import ring_mixture


def ring(n: int, generator: torch.Generator) -> Tensor:
    """Eight equal Gaussians (std 0.15) on a circle of radius 2: an exact mixture (oracle)."""
    return ring_mixture().sample(n, generator=generator)[0].float()


def ring_labels(n: int, generator: torch.Generator) -> Tensor:
    """The component (0..7) of each point of ring(n, generator) drawn with the same seed."""
    return ring_mixture().sample(n, generator=generator)[1]


def swiss_roll(n: int, generator: torch.Generator) -> Tensor:
    """The 2-D swiss roll: angle u in [1.5 pi, 4.5 pi], point u (cos u, sin u) / 5, noise 0.1."""
    u = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator))
    x = torch.stack([u * torch.cos(u), u * torch.sin(u)], dim=1) / 5
    return x + 0.1 * torch.randn(n, 2, generator=generator)


def moons(n: int, generator: torch.Generator) -> Tensor:
    """Two interleaved half circles with Gaussian noise 0.05, centred."""
    u = math.pi * torch.rand(n, generator=generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, torch.cos(u), 1 - torch.cos(u))
    y = torch.where(upper, torch.sin(u), 0.5 - torch.sin(u))
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 1.5
    return pts + 0.05 * torch.randn(n, 2, generator=generator)


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the black squares of a 4x4 checkerboard over [-2, 2]^2."""
    x1 = 4 * torch.rand(n, generator=generator) - 2
    x2 = torch.rand(n, generator=generator) - torch.randint(0, 2, (n,), generator=generator) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], dim=1)


TOY_DATASETS = {
    "ring": ring,
    "swissroll": swiss_roll,
    "moons": moons,
    "checkerboard": checkerboard,
}
# datasets whose points carry class labels: the same seed gives the points and their labels
TOY_LABELS = {"ring": ring_labels}
