"""Sample metrics for vector data.

Sliced Wasserstein-2: SW_2(P, Q)^2 = E_theta W_2(theta^T P, theta^T Q)^2 over directions theta
uniform on the sphere; each 1-D W_2 compares sorted projections (quantile functions).
The floor of any metric is its value between two independent sets of true samples.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _quantiles(x: Tensor, n: int) -> Tensor:
    """The n mid-point quantiles of each row of x (P, m), by linear interpolation: (P, n)."""
    x, _ = torch.sort(x, dim=1)  # rows are contiguous: sorting along the last dim is fastest
    m = x.shape[1]
    pos = ((torch.arange(n, dtype=x.dtype, device=x.device) + 0.5) / n * m - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    frac = pos - lo
    return x[:, lo] * (1 - frac) + x[:, hi] * frac


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    n_projections: int = 512,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein-2 distance between samples x (n, d) and y (m, d)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    n = max(x.shape[0], y.shape[0])
    qx, qy = _quantiles((x @ theta).T.contiguous(), n), _quantiles((y @ theta).T.contiguous(), n)
    return float(((qx - qy) ** 2).mean().sqrt())
