"""Ancestral sampling of the discrete process (Algorithm 2 of Ho et al. 2020).

x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z,
sigma_t^2 = beta_t or beta_tilde_t, no noise on the last step. On a coarser grid t -> s every
beta is recomputed for the actual pair: beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s.
The same step, seed 001 task 1: x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import batch_times, randn_like
from scorelab.processes.ddpm import Variance, score_step_coefficients
from scorelab.processes.parameterization import convert, from_eps
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import Callback, EpsFn, Schedule


def _step_coefficients(
    schedule: Schedule, timesteps: Tensor, variance: Variance
) -> tuple[list[float], list[float], list[float]]:
    """A, B, C of every step of the grid at once (float64), as floats for the loop."""
    t = timesteps.to(torch.float64)
    A, B, C = score_step_coefficients(schedule, t[:-1], t[1:], variance)
    return A.tolist(), B.tolist(), C.tolist()


@torch.no_grad()
def sample_ddpm(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    variance: Variance = "beta_tilde",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Algorithm 2 of Ho et al. 2020 on a decreasing grid T = t_0 > ... > t_K = 0.

    The mean (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) is A_t x_t - B_t / sigma_t
    eps with the coefficients of score_step_coefficients, computed once for the whole grid.
    """
    A, B, C = _step_coefficients(schedule, timesteps, variance)
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        t = batch_times(timesteps[i], x)
        eps = eps_fn(x, t)
        x0 = (x - g.sigma[i] * eps) / g.signal[i] if callback is not None else None
        x = torch.add(A[i] * x, eps, alpha=-B[i] / g.sigma[i])
        if timesteps[i + 1] > 0:  # DDPM adds no noise on the step to t = 0
            x = x.add_(randn_like(x, generator), alpha=math.sqrt(C[i]))
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, x0)
    return x


@torch.no_grad()
def sample_ddpm_score(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    variance: Variance = "beta_tilde",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """The DDPM step as x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z (seed 001, task 1)."""
    A, B, C = _step_coefficients(schedule, timesteps, variance)
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        t = batch_times(timesteps[i], x)
        score = from_eps(eps_fn(x, t), "score", x, g.alpha_bar[i])
        x0 = convert(score, "score", "x0", x, g.alpha_bar[i]) if callback is not None else None
        x = A[i] * x + B[i] * score
        if timesteps[i + 1] > 0:
            x = x + math.sqrt(C[i]) * randn_like(x, generator)
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, x0)
    return x
