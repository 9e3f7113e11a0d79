"""Samplers of the continuous-time view of the VP process (Song et al. 2021).

The schedule defines the VP-SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dW with
beta(t) = -d log alpha_bar / dt. Its reverse SDE and probability-flow ODE use the score
grad log p_t = -eps / sigma_t:
  reverse SDE:  dx = [-beta/2 x - beta score] dt + sqrt(beta) dW-bar
  PF-ODE:       dx/dt = -beta(t)/2 (x + score)
Karras et al. (2022) write the same ODE in sigma-hat = sigma/a and x-hat = x/a, where it is
d x-hat / d sigma-hat = eps: heun-edm integrates that form. Every sampler ends with the x0
prediction at its last positive time (the step to t = 0).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import append_dims, batch_times, randn_like
from scorelab.errors import ScorelabError
from scorelab.numerics.odeint import odeint_rk45
from scorelab.processes.ddpm import signal_noise
from scorelab.processes.parameterization import from_eps
from scorelab.samplers.registry import (
    Option,
    at_least,
    nonnegative,
    positive,
    register_sampler,
)
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import Callback, EpsFn, Schedule


def pf_ode_drift(eps_fn: EpsFn, schedule: Schedule, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """dx/dt of the probability-flow ODE at (x, t), and the eps it used."""
    _, sigma = signal_noise(schedule, t, x)
    beta = append_dims(schedule.beta_rate(t).to(x.dtype), x.ndim)
    eps = eps_fn(x, t)
    return -0.5 * beta * (x - eps / sigma), eps


def _x0(schedule: Schedule, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    return from_eps(eps, "x0", x, schedule.alpha_bar(t))


@register_sampler(
    "ode-euler",
    summary="Euler on the probability-flow ODE in t",
    paper="Song et al. 2021",
    nfe="1 per step",
)
@torch.no_grad()
def sample_ode_euler(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler steps of the probability-flow ODE in t (Song et al. 2021, eq. 13)."""
    return _ode_fixed(eps_fn, x, schedule, timesteps, heun=False, callback=callback)


@register_sampler(
    "ode-heun",
    summary="Heun on the probability-flow ODE in t",
    paper="Song et al. 2021",
    nfe="2 per step, 1 on the last",
)
@torch.no_grad()
def sample_ode_heun(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun (trapezoidal) steps of the probability-flow ODE in t; 2 NFE per step."""
    return _ode_fixed(eps_fn, x, schedule, timesteps, heun=True, callback=callback)


def _ode_fixed(eps_fn, x, schedule, timesteps, *, heun, callback):
    # the drift -beta/2 (x - eps/sigma) = kx x + ke eps, with float coefficients per grid time
    g = grid_coefficients(schedule, timesteps)
    kx = [-b / 2 for b in g.beta_rate]
    ke = [b / (2 * sd) if sd > 0 else 0.0 for b, sd in zip(g.beta_rate, g.sigma, strict=True)]
    for i in range(len(timesteps) - 1):
        t = batch_times(timesteps[i], x)
        eps = eps_fn(x, t)
        x0 = from_eps(eps, "x0", x, g.alpha_bar[i])
        if timesteps[i + 1] == 0:
            x = x0
        else:
            h = float(timesteps[i + 1] - timesteps[i])
            d = torch.add(kx[i] * x, eps, alpha=ke[i])
            x_next = x + h * d
            if heun:
                eps2 = eps_fn(x_next, batch_times(timesteps[i + 1], x))
                d2 = torch.add(kx[i + 1] * x_next, eps2, alpha=ke[i + 1])
                x_next = x + (h / 2) * (d + d2)
            x = x_next
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, x0)
    return x


@register_sampler(
    "ode-rk45",
    summary="adaptive Dormand-Prince 5(4) on the PF-ODE (rtol, atol); grid gives only the ends",
    paper="Song et al. 2021; Dormand & Prince 1980",
    nfe="adaptive (reported)",
    options={
        "rtol": Option(float, 1e-4, "relative tolerance of each step", check=positive),
        "atol": Option(float, 1e-4, "absolute tolerance of each step", check=positive),
        "t_end": Option(
            float,
            None,
            "the time where the ODE stops and the x0 prediction is taken, below the grid's top "
            "(none: the process's last sampling time, t = 1 for DDPM, t_min otherwise)",
            check=positive,
            nullable=True,
        ),
    },
)
@torch.no_grad()
def sample_ode_rk45(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-4,
    t_end: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Adaptive Dormand-Prince on the PF-ODE from the grid's first time down to t_end, then
    the x0 prediction there; the solver picks its own steps, so only timesteps[0] is used."""
    if t_end is None:
        t_end = schedule.sampling_t_min or schedule.t_min
    if not 0 < t_end < float(timesteps[0]):
        raise ScorelabError(f"t_end must be in (0, {float(timesteps[0]):g}), got {t_end}")
    f = lambda y, t: pf_ode_drift(eps_fn, schedule, y, batch_times(t, y))[0]  # noqa: E731
    x, _ = odeint_rk45(f, x, float(timesteps[0]), t_end, rtol=rtol, atol=atol)
    t = batch_times(t_end, x)
    x0 = _x0(schedule, x, t, eps_fn(x, t))
    if callback is not None:
        callback(0, t * 0, x0, x0)
    return x0


@register_sampler(
    "heun-edm",
    summary="Heun on the sigma-hat ODE, Karras grid (rho=7), optional churn",
    paper="Karras et al. 2022, Algorithm 2",
    nfe="2 per step, 1 on the last",
    spacing="karras",
    options={
        "churn": Option(
            float, 0.0, "stochastic churn S_churn (0: deterministic)", check=nonnegative
        ),
        "s_tmin": Option(float, 0.0, "churn only where sigma-hat >= s_tmin", check=nonnegative),
        "s_tmax": Option(
            float, float("inf"), "churn only where sigma-hat <= s_tmax", check=nonnegative
        ),
        "s_noise": Option(float, 1.0, "scale S_noise of the churn noise", check=nonnegative),
    },
)
@torch.no_grad()
def sample_heun_edm(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun's 2nd-order method in sigma-hat (Karras et al. 2022, Algorithm 2), optional churn."""
    positive = timesteps[:-1].to(torch.float64)
    sig = torch.cat([torch.exp(-schedule.log_snr(positive) / 2), positive.new_zeros(1)]).tolist()
    n = len(timesteps) - 1
    xh = x * math.sqrt(1 + sig[0] ** 2)  # x-hat = x / a, with a = 1 / sqrt(1 + sigma-hat^2)
    for i in range(n):
        t = float(timesteps[i])
        sigma = sig[i]
        if churn > 0 and s_tmin <= sigma <= s_tmax:
            gamma = min(churn / n, math.sqrt(2) - 1)
            sigma_hat = sigma * (1 + gamma)
            xh = xh + math.sqrt(sigma_hat**2 - sigma**2) * s_noise * randn_like(xh, generator)
            t = min(float(schedule.time_at_log_snr(-2 * math.log(sigma_hat))), schedule.T)
            sigma = sigma_hat
        d = _eps_hat(eps_fn, xh, t, sigma)
        x0 = xh - sigma * d
        x_next = xh + (sig[i + 1] - sigma) * d
        if sig[i + 1] > 0:
            d2 = _eps_hat(eps_fn, x_next, float(timesteps[i + 1]), sig[i + 1])
            x_next = xh + ((sig[i + 1] - sigma) / 2) * (d + d2)
        xh = x_next
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], xh), xh / math.sqrt(1 + sig[i + 1] ** 2), x0)
    return xh


def _eps_hat(eps_fn: EpsFn, xh: Tensor, t: float, sigma_hat: float) -> Tensor:
    """eps at x = a x-hat, a = 1 / sqrt(1 + sigma-hat^2) (VP: sigma-hat^2 = (1 - ab) / ab)."""
    return eps_fn(xh / math.sqrt(1 + sigma_hat**2), batch_times(t, xh))


@register_sampler(
    "euler-maruyama",
    summary="Euler-Maruyama on the reverse VP-SDE",
    paper="Song et al. 2021, eq. 6",
    nfe="1 per step",
)
@torch.no_grad()
def sample_euler_maruyama(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler-Maruyama on the reverse VP-SDE (Song et al. 2021, eq. 6), beta integrated exactly
    over each step: h beta = log(alpha_bar_s / alpha_bar_t)."""
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        x, x0 = _reverse_sde_step(eps_fn, g, timesteps, i, x, generator)
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, x0)
    return x


def _reverse_sde_step(eps_fn, g, timesteps, i, x, generator):
    """x + h beta (x / 2 + score) + sqrt(h beta) z with h beta = log(alpha_bar_s / alpha_bar_t)
    and score = -eps / sigma_t; the step to t = 0 returns the x0 prediction."""
    eps = eps_fn(x, batch_times(timesteps[i], x))
    x0 = from_eps(eps, "x0", x, g.alpha_bar[i])
    if timesteps[i + 1] == 0:
        return x0, x0
    hb = g.log_alpha_bar[i + 1] - g.log_alpha_bar[i]
    x = torch.add((1 + hb / 2) * x, eps, alpha=-hb / g.sigma[i])
    return x.add_(randn_like(x, generator), alpha=math.sqrt(hb)), x0


def _langevin(
    eps_fn: EpsFn,
    x: Tensor,
    t: Tensor,
    sigma: float,
    n: int,
    *,
    snr: float | None,
    step_size: float | None,
    generator: torch.Generator | None,
) -> Tensor:
    """n steps x <- x + delta score + sqrt(2 delta) z at time t, score = -eps / sigma.

    Unadjusted Langevin dynamics (Roberts & Tweedie 1996).

    delta is step_size, or set by a target signal-to-noise ratio r from batch-mean norms:
    delta = 2 (r ||z|| / ||score||)^2 (Song et al. 2021, Algorithms 4-5).
    """
    for _ in range(n):
        eps = eps_fn(x, t)
        z = randn_like(x, generator)
        if step_size is not None:
            delta = step_size
        else:
            # batch-mean norms: a per-example ratio explodes where the score vanishes
            norm = lambda v: float(v.reshape(v.shape[0], -1).norm(dim=1).mean())  # noqa: E731
            delta = 2 * (snr * sigma * norm(z) / norm(eps)) ** 2
        x = torch.add(x, eps, alpha=-delta / sigma).add_(z, alpha=math.sqrt(2 * delta))
    return x


def _check_langevin(snr, step_size):
    if (snr is None) == (step_size is None):
        raise ScorelabError("give exactly one of snr and step_size")
    if (snr is not None and snr <= 0) or (step_size is not None and step_size <= 0):
        raise ScorelabError("snr and step_size must be > 0")


@register_sampler(
    "langevin",
    summary="unadjusted Langevin dynamics on p_t at one small t, step_size or snr",
    paper="Roberts & Tweedie 1996; Song & Ermon 2019",
    nfe="1 per step",
    options={
        "t": Option(
            float,
            None,
            "the time whose p_t is sampled (none: the grid's last positive time)",
            check=positive,
            nullable=True,
        ),
        "step_size": Option(
            float,
            1e-3,
            "Langevin step delta (unused when snr is set)",
            check=positive,
            nullable=True,
        ),
        "snr": Option(
            float,
            None,
            "set delta by a target signal-to-noise ratio instead of step_size",
            check=positive,
            nullable=True,
        ),
    },
)
@torch.no_grad()
def sample_langevin(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    t: float | None = None,
    step_size: float | None = 1e-3,
    snr: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Unadjusted Langevin dynamics on p_t at one time t (the grid's last positive time by
    default), one step per grid interval: x <- x + delta grad log p_t(x) + sqrt(2 delta) z."""
    step_size = None if snr is not None else step_size
    _check_langevin(snr, step_size)
    tt = batch_times(float(timesteps[-2]) if t is None else t, x)
    sigma = float(torch.sqrt(-torch.expm1(schedule.log_alpha_bar(tt[:1].double()))))
    for i in range(len(timesteps) - 1):
        x = _langevin(eps_fn, x, tt, sigma, 1, snr=snr, step_size=step_size, generator=generator)
        if callback is not None:
            callback(i, tt, x, x)
    return x


@register_sampler(
    "annealed-langevin",
    summary="annealed Langevin over the grid's noise levels, n_inner steps each, then denoise",
    paper="Song & Ermon 2019",
    nfe="n_inner per level + 1",
    options={
        "n_inner": Option(int, 5, "Langevin steps at each noise level", check=at_least(1)),
        "snr": Option(
            float,
            0.16,
            "set each step by a target signal-to-noise ratio (none to use step_size)",
            check=positive,
            nullable=True,
        ),
        "step_size": Option(
            float,
            None,
            "a fixed Langevin step delta (needs snr=none)",
            check=positive,
            nullable=True,
        ),
        "denoise": Option(bool, True, "end with the x0 prediction at the last level"),
    },
)
@torch.no_grad()
def sample_annealed_langevin(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    n_inner: int = 5,
    snr: float | None = 0.16,
    step_size: float | None = None,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019): n_inner Langevin steps on each p_t of
    the grid from high to low noise, then (denoise) the x0 prediction at the last level."""
    _check_langevin(snr, step_size)
    levels = timesteps[:-1]
    g = grid_coefficients(schedule, levels)
    for i, level in enumerate(levels):
        t = batch_times(level, x)
        x = _langevin(
            eps_fn, x, t, g.sigma[i], n_inner, snr=snr, step_size=step_size, generator=generator
        )
        if callback is not None:
            callback(i, t, x, x)
    if denoise:
        t = batch_times(levels[-1], x)
        x = from_eps(eps_fn(x, t), "x0", x, g.alpha_bar[-1])
    return x


@register_sampler(
    "pc",
    summary="predictor-corrector: reverse-SDE predictor + Langevin corrector at a target snr",
    paper="Song et al. 2021, Algorithm 1",
    nfe="1 + n_corrector per step",
    options={
        "n_corrector": Option(
            int, 1, "Langevin corrector steps after each predictor step", check=nonnegative
        ),
        "snr": Option(float, 0.16, "target signal-to-noise ratio of the corrector", check=positive),
    },
)
@torch.no_grad()
def sample_pc(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    n_corrector: int = 1,
    snr: float = 0.16,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Predictor-corrector (Song et al. 2021, Algorithms 2-5): a reverse-SDE Euler-Maruyama
    predictor, then n_corrector Langevin steps at the new time with step set by snr."""
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        s = batch_times(timesteps[i + 1], x)
        x, x0 = _reverse_sde_step(eps_fn, g, timesteps, i, x, generator)
        if timesteps[i + 1] > 0 and n_corrector > 0:
            x = _langevin(
                eps_fn,
                x,
                s,
                g.sigma[i + 1],
                n_corrector,
                snr=snr,
                step_size=None,
                generator=generator,
            )
        if callback is not None:
            callback(i, s, x, x0)
    return x
