"""Ancestral sampling of the discrete process (Algorithm 2 of Ho et al. 2020).

x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps_theta(x_t, t)) / sqrt(alpha_t) + sigma_t z,
sigma_t^2 = beta_t or beta_tilde_t, no noise on the last step. On a coarser grid t -> s every
beta is recomputed for the actual pair: beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s.
The same step in score form (docs/theory.md §8):
x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from scorelab._tensor import batch_times, randn_like
from scorelab.errors import ScorelabError
from scorelab.processes.ddpm import (
    VARIANCES,
    Variance,
    VarianceFn,
    analytic_variance,
    p_mean_variance,
    q_sample,
    score_step_coefficients,
)
from scorelab.processes.parameterization import convert, from_eps
from scorelab.samplers.registry import Option, register_sampler
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import Callback, EpsFn, Schedule


def _step_coefficients(
    schedule: Schedule,
    timesteps: Tensor,
    variance: str,
    gamma: Tensor | None,
) -> tuple[list[float], list[float], list[float]]:
    """A, B, C of every step of the grid at once (float64), as floats for the loop."""
    t = timesteps.to(torch.float64)
    if variance == "analytic":
        if gamma is None or torch.as_tensor(gamma).shape != (len(t) - 1,):
            raise ScorelabError(
                f"variance='analytic' needs gamma of shape ({len(t) - 1},) or data= to estimate it"
            )
        A, B, _ = score_step_coefficients(schedule, t[:-1], t[1:], "beta")
        C = analytic_variance(schedule, t[:-1], t[1:], torch.as_tensor(gamma).to(torch.float64))
    elif variance in VARIANCES:
        A, B, C = score_step_coefficients(schedule, t[:-1], t[1:], variance)
    else:
        choices = ", ".join((*VARIANCES, "analytic"))
        raise ScorelabError(f"unknown variance {variance!r}; choose one of: {choices}")
    return A.tolist(), B.tolist(), C.tolist()


@torch.no_grad()
def analytic_gamma(
    eps_fn: EpsFn,
    schedule: Schedule,
    timesteps: Tensor,
    x0: Tensor,
    *,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
) -> Tensor:
    """Gamma_t = E||eps(x_t)||^2 / d at each positive time of the grid, x_t = q_sample(x0):
    the one statistic of the model that Analytic-DPM's variance needs (float64, (K,))."""
    if x0.ndim < 2 or x0.shape[0] == 0 or not torch.isfinite(x0).all():
        raise ScorelabError("data for the analytic variance must be a finite (N, ...) batch")
    out = []
    for time in timesteps[:-1].tolist():
        total = 0.0
        for chunk in x0.split(batch_size):
            t = batch_times(time, chunk)
            eps = eps_fn(q_sample(schedule, chunk, t, generator=generator), t)
            total += float(eps.double().pow(2).sum())
        out.append(total / x0.numel())
    return torch.tensor(out, dtype=torch.float64)


@register_sampler(
    "ddpm",
    summary="ancestral sampling, sigma^2 = beta, beta_tilde or analytic (variance=); "
    "respacing recomputes beta",
    paper="Ho et al. 2020, Algorithm 2; Bao et al. 2022 (variance=analytic)",
    nfe="1 per step",
    options={
        "variance": Option(
            str,
            "beta_tilde",
            "reverse variance sigma_t^2 of Algorithm 2: beta, beta_tilde, or analytic "
            "(Analytic-DPM: Gamma_t from gamma= or data=; the CLI estimates it from 2000 "
            "training examples); from Python also a learned variance function",
            choices=(*VARIANCES, "analytic"),
            python_types=(Callable,),
        ),
        "gamma": Option(
            Tensor,
            None,
            "analytic: Gamma_t at each positive grid time (analytic_gamma)",
            nullable=True,
        ),
        "data": Option(
            Tensor, None, "analytic: x_0 samples to estimate Gamma_t from", nullable=True
        ),
    },
)
@torch.no_grad()
def sample_ddpm(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    variance: Variance | VarianceFn | str = "beta_tilde",
    gamma: Tensor | None = None,
    data: Tensor | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Algorithm 2 of Ho et al. 2020 on a decreasing grid T = t_0 > ... > t_K = 0.

    The mean (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) is A_t x_t - B_t / sigma_t
    eps with the coefficients of score_step_coefficients, computed once for the whole grid.
    variance="analytic" is Analytic-DPM's (Bao et al. 2022): it takes gamma from analytic_gamma,
    or data (x_0 samples) to estimate it with K extra eps_fn calls per 1000 examples. A
    callable variance is a learned one, (x_t, t) -> v (improved DDPM; see p_mean_variance).
    """
    if callable(variance):  # a learned variance: Sigma depends on x_t, so step with tensors
        return _sample_ddpm_learned(eps_fn, x, schedule, timesteps, variance, generator, callback)
    if variance == "analytic" and gamma is None and data is not None:
        gamma = analytic_gamma(eps_fn, schedule, timesteps, data.to(x), generator=generator)
    A, B, C = _step_coefficients(schedule, timesteps, variance, gamma)
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


def _sample_ddpm_learned(eps_fn, x, schedule, timesteps, variance_fn, generator, callback):
    """Algorithm 2 with the network's own Sigma(x_t, t): the literal p_mean_variance step."""
    for i in range(len(timesteps) - 1):
        t, s = batch_times(timesteps[i], x), batch_times(timesteps[i + 1], x)
        step = p_mean_variance(eps_fn, x, t, schedule, s, variance=variance_fn)
        x = step.mean
        if timesteps[i + 1] > 0:
            x = x + step.var.sqrt() * randn_like(x, generator)
        if callback is not None:
            callback(i, s, x, step.x0)
    return x


@register_sampler(
    "ddpm-score",
    summary="the DDPM step as A_t x + B_t score + sqrt(C_t) z",
    paper="Ho et al. 2020, Algorithm 2, written as A_t x + B_t score + sqrt(C_t) z "
    "(docs/theory.md §8)",
    nfe="1 per step",
    options={
        "variance": Option(
            str, "beta_tilde", "reverse variance sigma_t^2: beta or beta_tilde", choices=VARIANCES
        ),
    },
)
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
    """The DDPM step as x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z (docs/theory.md §8)."""
    A, B, C = _step_coefficients(schedule, timesteps, variance, None)
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
