"""DDIM (Song, Meng & Ermon 2021, eq. 12) and DPM-Solver++ (Lu et al. 2022), multistep.

DDIM, t -> s:  x_s = a_s x0 + sqrt(1 - a_s^2 - c^2) eps + c z,
               c = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s);
eta = 0 is the deterministic probability-flow map, eta = 1 is respaced DDPM with beta_tilde.
DPM-Solver++ works in lambda = log(a / sigma) with the x0 prediction m_i: order 1 is DDIM
(eta = 0); orders 2 and 3 extrapolate m from the previous steps (multistep). The final step
to t = 0 returns the x0 prediction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import batch_times, randn_like
from scorelab.errors import ScorelabError
from scorelab.processes.parameterization import from_eps
from scorelab.samplers.registry import Option, between, register_sampler
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import Callback, EpsFn, Schedule


@register_sampler(
    "ddim",
    summary="DDIM; eta=0 deterministic (PF-ODE), eta=1 equals respaced DDPM",
    paper="Song, Meng & Ermon 2021",
    nfe="1 per step",
    options={
        "eta": Option(
            float,
            0.0,
            "0 deterministic (the PF-ODE map) ... 1 DDPM-like noise",
            check=between(0, 1),
        ),
    },
)
@torch.no_grad()
def sample_ddim(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12). eta=0 is deterministic; eta=1 is DDPM's variance."""
    if not 0 <= eta <= 1:
        raise ScorelabError(f"eta must be in [0, 1], got {eta}")
    # one time per step for the whole batch: the coefficients are plain floats
    alpha_bar = schedule.alpha_bar(timesteps.to(torch.float64)).tolist()
    for i in range(len(timesteps) - 1):
        t, s = batch_times(timesteps[i], x), batch_times(timesteps[i + 1], x)
        ab_t, ab_s = alpha_bar[i], alpha_bar[i + 1]
        eps = eps_fn(x, t)
        x0 = (x - math.sqrt(1 - ab_t) * eps) / math.sqrt(ab_t)
        if timesteps[i + 1] > 0:
            sigma_s2 = 1 - ab_s
            c = eta * math.sqrt(sigma_s2 / (1 - ab_t) * max(1 - ab_t / ab_s, 0.0))
            x = math.sqrt(ab_s) * x0 + math.sqrt(max(sigma_s2 - c**2, 0.0)) * eps
            if eta > 0:
                x = x + c * randn_like(x, generator)
        else:
            x = x0
        if callback is not None:
            callback(i, s, x, x0)
    return x


@register_sampler(
    "dpm-solver++",
    summary="multistep DPM-Solver++ in log-SNR, data prediction, order=1|2|3",
    paper="Lu et al. 2022",
    nfe="1 per step",
    spacing="logsnr",
    options={"order": Option(int, 2, "solver order (1 is DDIM)", choices=(1, 2, 3))},
)
@torch.no_grad()
def sample_dpm_solver_pp(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    order: int = 2,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """DPM-Solver++(order)M, data prediction, multistep (Lu et al. 2022, Algorithm 2)."""
    if order not in (1, 2, 3):
        raise ScorelabError(f"order must be 1, 2 or 3, got {order}")
    g = grid_coefficients(schedule, timesteps)
    # lambda = log(a / sigma) is half the log-SNR
    lam = (schedule.log_snr(timesteps[:-1].to(torch.float64)) / 2).tolist()
    history: list[Tensor] = []  # x0 predictions, newest last
    for i in range(len(timesteps) - 1):
        t = batch_times(timesteps[i], x)
        x0 = from_eps(eps_fn(x, t), "x0", x, g.alpha_bar[i])
        history = (history + [x0])[-3:]
        if timesteps[i + 1] == 0:
            x = x0
        else:
            # x_s = (sigma_s / sigma_t) x - a_s phi D, phi = e^{-h} - 1, with D the order-k
            # extrapolation of the x0 predictions: written as one float-weighted sum of them
            h = lam[i + 1] - lam[i]
            phi = math.expm1(-h)
            a_s = g.signal[i + 1]
            weights = _dpm_weights(min(order, len(history)), lam, i, h, phi, a_s)
            x = (g.sigma[i + 1] / g.sigma[i]) * x
            for w, m in zip(weights, reversed(history), strict=False):
                x = x.add_(m, alpha=w)
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, x0)
    return x


def _dpm_weights(k: int, lam: list[float], i: int, h: float, phi: float, a_s: float) -> list[float]:
    """The weights of x0_i, x0_{i-1}, x0_{i-2} in DPM-Solver++(k)M's step (newest first).

    k = 1: -a_s phi m_i.  k = 2: -a_s phi (m_i + (m_i - m_{i-1}) / (2 r0)), r0 = h_{i-1} / h.
    k = 3: -a_s phi m_i + a_s (phi / h + 1) D1 - 2 a_s ((phi + h) / h^2 - 1/2) D2 with
    D1 = (1 + q) d0 - q d1, D2 = (d0 - d1) / (r0 + r1), q = r0 / (r0 + r1),
    d0 = (m_i - m_{i-1}) / r0, d1 = (m_{i-1} - m_{i-2}) / r1. The Taylor term's exact weight is
    int_0^h e^{-u} (h - u)^2 / 2 du / (h^2 / 2) = -2 ((e^{-h} - 1 + h) / h^2 - 1/2); with the
    factor 2 the step is third order (tested), without it (as often written) only second.
    """
    A = a_s * phi
    if k == 1:
        return [-A]
    r0 = (lam[i] - lam[i - 1]) / h
    if k == 2:
        return [-A * (1 + 1 / (2 * r0)), A / (2 * r0)]
    r1 = (lam[i - 1] - lam[i - 2]) / h
    B, C = a_s * (phi / h + 1), 2 * a_s * ((phi + h) / h**2 - 0.5)
    q = r0 / (r0 + r1)
    e0 = B * (1 + q) - C / (r0 + r1)  # weight of d0
    e1 = -B * q + C / (r0 + r1)  # weight of d1
    return [-A + e0 / r0, -e0 / r0 + e1 / r1, -e1 / r1]
