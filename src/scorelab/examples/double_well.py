"""A tilted 2-D double well, p(x) ∝ exp(-U(x)), for target score matching (De Bortoli et al. 2024).

U(x) = a (x_1² − 1)² − b x_1 + x_2² / 2 with a = 4, b = 0.5: two modes near x_1 = ±1 behind a
barrier of about a = 4 nats; the tilt makes the right mode about e^{2b} ≈ 2.7 times heavier.
Unadjusted Langevin started anywhere crosses the barrier rarely, so the two weights it returns
can be wrong: a reason for annealed Langevin and for diffusion models.

    scorelab train --objective tsm --sde ve --target scorelab.examples.double_well:score \\
        --out runs/double-well
"""

from __future__ import annotations

import torch
from torch import Tensor

A = 4.0
B = 0.5


def log_prob_unnormalized(x: Tensor) -> Tensor:
    """-U(x), (n,)."""
    x1, x2 = x[:, 0], x[:, 1]
    return -(A * (x1**2 - 1) ** 2 - B * x1 + 0.5 * x2**2)


def score(x: Tensor) -> Tensor:
    """∇log p(x) = −∇U(x), (n, 2)."""
    x1, x2 = x[:, 0], x[:, 1]
    return torch.stack([-4 * A * x1 * (x1**2 - 1) + B, -x2], dim=1)


def mode_weights(n: int = 200_001) -> tuple[float, float]:
    """The exact masses of x_1 < 0 and x_1 > 0 (the x_2 factor cancels), by quadrature."""
    x1 = torch.linspace(-3.0, 3.0, n, dtype=torch.float64)
    p = torch.exp(-(A * (x1**2 - 1) ** 2 - B * x1))
    left = float(p[x1 < 0].sum() / p.sum())
    return left, 1 - left
