"""Samplers: stateless functions of an eps_fn, a start x and a decreasing time grid.

sample(eps_fn, shape, schedule, sampler=NAME, steps=K) draws x_T from the prior, runs the named
sampler and returns the samples, the number of eps_fn evaluations (NFE) and, on request, the
trajectory. SAMPLERS maps each name to its function; SAMPLER_INFO describes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab._tensor import append_dims, batch_times, randn
from scorelab.errors import ScorelabError
from scorelab.samplers.ancestral import sample_ddpm, sample_ddpm_score
from scorelab.samplers.continuous import (
    sample_annealed_langevin,
    sample_euler_maruyama,
    sample_heun_edm,
    sample_langevin,
    sample_ode_euler,
    sample_ode_heun,
    sample_ode_rk45,
    sample_pc,
)
from scorelab.samplers.ddim import sample_ddim, sample_dpm_solver_pp
from scorelab.samplers.timesteps import SPACINGS, make_timesteps
from scorelab.typing import Callback, EpsFn, Schedule


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler is, where it comes from, its eps_fn calls and its default time grid."""

    summary: str
    paper: str
    nfe: str
    spacing: str = "uniform"


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddpm-score": sample_ddpm_score,
    "ddim": sample_ddim,
    "dpm-solver++": sample_dpm_solver_pp,
    "heun-edm": sample_heun_edm,
    "ode-euler": sample_ode_euler,
    "ode-heun": sample_ode_heun,
    "ode-rk45": sample_ode_rk45,
    "euler-maruyama": sample_euler_maruyama,
    "pc": sample_pc,
    "langevin": sample_langevin,
    "annealed-langevin": sample_annealed_langevin,
}

SAMPLER_INFO: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo(
        "ancestral sampling, sigma^2 = beta or beta_tilde (variance=); respacing recomputes beta",
        "Ho et al. 2020, Algorithm 2",
        "1 per step",
    ),
    "ddpm-score": SamplerInfo(
        "the DDPM step as A_t x + B_t score + sqrt(C_t) z", "seed 001, task 1", "1 per step"
    ),
    "ddim": SamplerInfo(
        "DDIM; eta=0 deterministic (PF-ODE), eta=1 equals respaced DDPM",
        "Song, Meng & Ermon 2021",
        "1 per step",
    ),
    "dpm-solver++": SamplerInfo(
        "multistep DPM-Solver++ in log-SNR, data prediction, order=1|2|3",
        "Lu et al. 2022",
        "1 per step",
        "logsnr",
    ),
    "heun-edm": SamplerInfo(
        "Heun on the sigma-hat ODE, Karras grid (rho=7), optional churn",
        "Karras et al. 2022, Algorithm 2",
        "2 per step, 1 on the last",
        "karras",
    ),
    "ode-euler": SamplerInfo(
        "Euler on the probability-flow ODE in t", "Song et al. 2021", "1 per step"
    ),
    "ode-heun": SamplerInfo(
        "Heun on the probability-flow ODE in t", "Song et al. 2021", "2 per step, 1 on the last"
    ),
    "ode-rk45": SamplerInfo(
        "adaptive Dormand-Prince 5(4) on the PF-ODE (rtol, atol); grid gives only the ends",
        "Song et al. 2021; Dormand & Prince 1980",
        "adaptive (reported)",
    ),
    "euler-maruyama": SamplerInfo(
        "Euler-Maruyama on the reverse VP-SDE", "Song et al. 2021, eq. 6", "1 per step"
    ),
    "pc": SamplerInfo(
        "predictor-corrector: reverse-SDE predictor + Langevin corrector at a target snr",
        "Song et al. 2021, Algorithm 1",
        "1 + n_corrector per step",
    ),
    "langevin": SamplerInfo(
        "unadjusted Langevin dynamics on p_t at one small t, step_size or snr",
        "seed 000; Roberts & Tweedie 1996",
        "1 per step",
    ),
    "annealed-langevin": SamplerInfo(
        "annealed Langevin over the grid's noise levels, n_inner steps each, then denoise",
        "Song & Ermon 2019",
        "n_inner per level + 1",
    ),
}


@dataclass
class SampleResult:
    """Samples x (B, *), the NFE used and, if recorded, [(t, x_t), ...] from t = T down to 0."""

    x: Tensor
    nfe: int
    trajectory: list[tuple[float, Tensor]] | None = None


def sample(
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    schedule: Schedule,
    sampler: str = "ddpm",
    steps: int | None = None,
    *,
    spacing: str | None = None,
    t_min: float | None = None,
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    record_trajectory: bool = False,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> SampleResult:
    """Draw samples with a named sampler from any eps_fn(x, t); t runs in schedule units.

    steps is the number of grid intervals (default T); spacing picks the grid (the sampler's
    default if None); other options go to the sampler (variance=, eta=, order=, churn=, ...).
    """
    if sampler not in SAMPLERS:
        raise ScorelabError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    spacing = SAMPLER_INFO[sampler].spacing if spacing is None else spacing
    t_min = schedule.sampling_t_min if t_min is None else t_min
    timesteps = make_timesteps(schedule, steps or schedule.default_steps, spacing, t_min=t_min)
    # Samplers integrate x~ = input_scale(t) x_t, a VP process for every SDE (sde.py); for a
    # DiscreteSchedule the scale is 1 and these maps are exact identities.
    scale = schedule.input_scale
    unit_scale = bool((scale(timesteps) == 1).all())  # VP: skip the per-call identity maps

    def to_x(x_tilde: Tensor, t: Tensor | float) -> Tensor:
        if unit_scale:
            return x_tilde
        s = scale(batch_times(t, x_tilde)).to(x_tilde.dtype)
        return x_tilde / append_dims(s, x_tilde.ndim)

    if x_T is None:
        x = randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    elif unit_scale:
        x = x_T
    else:
        x = x_T * append_dims(scale(batch_times(timesteps[0], x_T)).to(x_T.dtype), x_T.ndim)
    nfe = 0

    def counted(x: Tensor, t: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        return eps_fn(to_x(x, t), t)

    trajectory: list[tuple[float, Tensor]] | None = None
    if record_trajectory:
        trajectory = [(float(timesteps[0]), to_x(x, timesteps[0]).detach().cpu())]

    def on_step(i: int, t: Tensor, x_t: Tensor, x0: Tensor) -> None:
        x_t = to_x(x_t, t)
        if trajectory is not None:
            trajectory.append((float(t.flatten()[0]), x_t.detach().cpu()))
        if callback is not None:
            callback(i, t, x_t, x0)

    out = SAMPLERS[sampler](
        counted, x, schedule, timesteps, generator=generator, callback=on_step, **options
    )
    # samplers end at t = 0, where every scale is 1 (Langevin stops at the last positive
    # level, where the scale is 1 - O(sigma_t^2 + 1 - alpha_t^2): ~1e-8 VE, ~5e-5 sub-VP)
    return SampleResult(to_x(out, timesteps[-1]), nfe, trajectory)


__all__ = [
    "SAMPLERS",
    "SAMPLER_INFO",
    "SPACINGS",
    "SampleResult",
    "SamplerInfo",
    "make_timesteps",
    "sample",
]
