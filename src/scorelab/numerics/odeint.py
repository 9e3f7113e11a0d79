"""Adaptive Runge-Kutta integration of dx/dt = f(x, t) for batched tensors.

Dormand-Prince 5(4) (Dormand & Prince 1980) with the usual step-size control: the error of
the embedded 4th-order solution, measured as the RMS over all elements of
err / (atol + rtol * max(|x|, |x_new|)), must be <= 1. One step size is shared by the batch,
as in torchdiffeq. Used by the probability-flow ODE sampler and the ODE likelihood.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scorelab.errors import ScorelabError

# Dormand-Prince tableau
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)


def odeint_rk45(
    f: Callable[[Tensor, float], Tensor],
    x: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    first_step: float | None = None,
    max_steps: int = 10_000,
) -> tuple[Tensor, int]:
    """Integrate from t0 to t1 (either direction); returns x(t1) and the number of f calls."""
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    if span == 0:
        return x, 0
    h = min(first_step or span / 20, span)
    t, nfe = t0, 0
    k1 = f(x, t)
    nfe += 1
    for _ in range(max_steps):
        if abs(t1 - t) <= 1e-12 * span:
            return x, nfe
        h = min(h, abs(t1 - t))
        dt = direction * h
        ks = [k1]
        for stage in range(1, 7):
            xi = x + dt * sum(a * k for a, k in zip(_A[stage], ks, strict=False))
            ks.append(f(xi, t + _C[stage] * dt))
        nfe += 6
        x5 = x + dt * sum(b * k for b, k in zip(_B5, ks, strict=True) if b != 0.0)
        x4 = x + dt * sum(b * k for b, k in zip(_B4, ks, strict=True) if b != 0.0)
        scale = atol + rtol * torch.maximum(x.abs(), x5.abs())
        err = float(((x5 - x4) / scale).pow(2).mean().sqrt())
        if err <= 1.0:
            t, x, k1 = t + dt, x5, ks[6]  # first same as last
        factor = 0.9 * (err + 1e-12) ** -0.2
        h *= min(5.0, max(0.2, factor))
    raise ScorelabError(f"the ODE solver took more than {max_steps} steps; loosen rtol/atol")
