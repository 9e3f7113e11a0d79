"""Time grids shared by all samplers: K positive times from T down, then 0.

uniform: t = T u; quadratic: t = T u^2 (DDIM's); with u = (K - i) / K, i = 0..K-1. Without a
t_min, uniform is the process's own grid (schedule.timesteps): integer times for DDPM. On EDM,
whose time is the noise level sigma (own_spacing "karras"), uniform is karras with its rho.
logsnr: log-SNR uniform between t = T and t_min (DPM-Solver's choice).
karras: sigma = sqrt((1 - alpha_bar) / alpha_bar) with sigma^(1/rho) uniform between its
values at T and t_min (Karras et al. 2022, eq. 5, rho = 7).
leading: the uniform grid shifted down by one stride r = T / K, t = r (K - 1 - i) + t_min
(diffusers' timestep_spacing="leading" of DDIM/DDPM/Euler; t_min = 1 gives its 901, 801, ..., 1
at T = 1000, K = 10): the model is never evaluated at T and the last positive time is t_min.
leading-dpm: the same over K + 1 strides, t = r (K - i) + t_min with r = T / (K + 1)
(diffusers' "leading" of DPMSolverMultistep/UniPC: 901, 811, ..., 91 at T = 1000, K = 10): it
keeps a whole stride above t_min before the last step to 0. For both, t_min (default 1) is the
offset from diffusers' indices to our times (alphas_cumprod[k] is our alpha_bar(k + 1)).
Strides are whole steps (T // K, T // (K + 1)) when T is an integer of at least K + 1, as there.
The last step goes to t = 0, where a sampler returns its x_0 prediction.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.typing import Schedule

SPACINGS: tuple[str, ...] = ("uniform", "quadratic", "leading", "leading-dpm", "logsnr", "karras")


def make_timesteps(
    schedule: Schedule,
    steps: int,
    spacing: str = "uniform",
    *,
    t_min: float | None = None,
    rho: float = 7.0,
) -> Tensor:
    """A decreasing float64 grid t_0 = T > ... > t_{K-1} > t_K = 0 with K = steps."""
    if spacing not in SPACINGS:
        raise ScorelabError(f"unknown spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    if steps < 1:
        raise ScorelabError(f"steps must be >= 1, got {steps}")
    T = float(schedule.T)
    if spacing == "uniform" and getattr(schedule, "own_spacing", "uniform") == "karras":
        spacing, rho = "karras", float(getattr(schedule, "rho", rho))  # EDM: time is sigma
    u = torch.arange(steps, 0, -1, dtype=torch.float64) / steps  # 1, ..., 1/K
    if spacing == "uniform" and t_min is None:
        return schedule.timesteps(steps)  # integer times, as the network was trained on
    if spacing in ("leading", "leading-dpm"):
        n = steps if spacing == "leading" else steps + 1  # strides
        stride = T // n if float(T).is_integer() and n + 1 <= T else T / n
        t_min = schedule.t_min if t_min is None else float(t_min)
        if not 0 < t_min <= stride:
            raise ScorelabError(f"{spacing} t_min must be in (0, {stride:g}], got {t_min}")
        k = torch.arange(steps - 1, -1, -1, dtype=torch.float64)  # K - 1, ..., 0
        t = (k if spacing == "leading" else k + 1) * stride + t_min
    elif spacing in ("uniform", "quadratic"):
        t = T * (u if spacing == "uniform" else u**2)
        if t_min is not None:  # rescale so that the last positive time is t_min
            t = t_min + (t - t[-1]) * (T - t_min) / (T - float(t[-1])) if steps > 1 else t
    else:
        t_min = schedule.t_min if t_min is None else float(t_min)
        if not 0 < t_min < T:
            raise ScorelabError(f"t_min must be in (0, {T:g}), got {t_min}")
        ends = torch.tensor([T, t_min], dtype=torch.float64)
        lam_hi, lam_lo = schedule.log_snr(ends).tolist()
        w = torch.linspace(0, 1, steps, dtype=torch.float64)  # [0.] for one step
        if spacing == "logsnr":
            lam = lam_hi + w * (lam_lo - lam_hi)
        else:
            s_max, s_min = math.exp(-lam_hi / 2), math.exp(-lam_lo / 2)
            sigma = (s_max ** (1 / rho) + w * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
            lam = -2 * torch.log(sigma)
        t = schedule.time_at_log_snr(lam)
        t[0] = T
    return torch.cat([t, t.new_zeros(1)])


def check_timesteps(schedule: Schedule, timesteps: Tensor, steps: int | None = None) -> Tensor:
    """A given grid as float64, or a ScorelabError saying what is wrong with it: 1-D, finite,
    strictly decreasing from at most T to a last entry 0, with steps + 1 entries if given."""
    t = torch.as_tensor(timesteps, dtype=torch.float64).detach().flatten().cpu()
    if t.numel() < 2 or not torch.isfinite(t).all():
        raise ScorelabError("timesteps must hold at least two finite times, ending with 0")
    if steps is not None and t.numel() != steps + 1:
        raise ScorelabError(f"{t.numel()} timesteps make {t.numel() - 1} steps, not {steps}")
    if float(t[-1]) != 0 or not bool((t[1:] < t[:-1]).all()):
        raise ScorelabError("timesteps must decrease strictly and end at 0")
    if float(t[0]) > float(schedule.T) * (1 + 1e-12):
        raise ScorelabError(f"timesteps start at {float(t[0]):g}, above the process's T = "
                            f"{float(schedule.T):g}")  # fmt: skip
    return t


class GridCoefficients(NamedTuple):
    """The schedule's coefficients at each grid time as Python floats, computed once per call.

    Samplers step with these floats instead of per-step tensor arithmetic on (B,) times: the
    same numbers (float64, then rounded to x's dtype on use), a fraction of the overhead.
    """

    alpha_bar: list[float]
    log_alpha_bar: list[float]
    signal: list[float]  # a_t = sqrt(alpha_bar_t)
    sigma: list[float]  # sigma_t = sqrt(1 - alpha_bar_t)
    beta_rate: list[float]  # beta(t) = -d log alpha_bar / dt (segment below t)


def grid_coefficients(schedule: Schedule, timesteps: Tensor) -> GridCoefficients:
    """alpha_bar, log alpha_bar, a, sigma and beta(t) at every time of a grid, as floats."""
    t = timesteps.to(torch.float64)
    log_alpha_bar = schedule.log_alpha_bar(t).to(torch.float64)
    alpha_bar = torch.exp(log_alpha_bar)
    return GridCoefficients(
        alpha_bar.tolist(),
        log_alpha_bar.tolist(),
        alpha_bar.sqrt().tolist(),
        torch.sqrt(-torch.expm1(log_alpha_bar)).tolist(),
        schedule.beta_rate(t).to(torch.float64).tolist(),
    )
