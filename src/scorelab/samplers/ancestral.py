"""Ancestral sampling of the discrete process (Algorithm 2 of Ho et al. 2020).

x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z,
sigma_t^2 = beta_t or beta_tilde_t, no noise on the last step. On a coarser grid t -> s every
beta is recomputed for the actual pair: beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s.
The same step, seed 001 task 1: x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab._tensor import append_dims, batch_times, randn_like
from scorelab.processes.ddpm import Variance, p_mean_variance, score_step_coefficients
from scorelab.processes.parameterization import convert, from_eps
from scorelab.typing import Callback, EpsFn, Schedule


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
    """Algorithm 2 of Ho et al. 2020 on a decreasing grid T = t_0 > ... > t_K = 0."""
    for i in range(len(timesteps) - 1):
        t, s = batch_times(timesteps[i], x), batch_times(timesteps[i + 1], x)
        step = p_mean_variance(eps_fn, x, t, schedule, s, variance=variance)
        x = step.mean
        if timesteps[i + 1] > 0:  # DDPM adds no noise on the step to t = 0
            x = x + step.var.sqrt() * randn_like(x, generator)
        if callback is not None:
            callback(i, s, x, step.x0)
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
    for i in range(len(timesteps) - 1):
        t, s = batch_times(timesteps[i], x), batch_times(timesteps[i + 1], x)
        alpha_bar = schedule.alpha_bar(t)
        score = from_eps(eps_fn(x, t), "score", x, alpha_bar)
        A, B, C = (
            append_dims(c.to(x.dtype), x.ndim)
            for c in score_step_coefficients(schedule, t, s, variance)
        )
        x0 = convert(score, "score", "x0", x, alpha_bar)
        x = A * x + B * score
        if timesteps[i + 1] > 0:
            x = x + C.sqrt() * randn_like(x, generator)
        if callback is not None:
            callback(i, s, x, x0)
    return x
