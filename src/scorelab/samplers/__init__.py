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

from scorelab._tensor import randn
from scorelab.errors import ScorelabError
from scorelab.samplers.ancestral import sample_ddpm, sample_ddpm_score
from scorelab.typing import Callback, EpsFn, Schedule


@dataclass(frozen=True)
class SamplerInfo:
    """What a sampler is, where it comes from, and its eps_fn calls per step."""

    summary: str
    paper: str
    nfe_per_step: int


SAMPLERS: dict[str, Callable[..., Tensor]] = {
    "ddpm": sample_ddpm,
    "ddpm-score": sample_ddpm_score,
}

SAMPLER_INFO: dict[str, SamplerInfo] = {
    "ddpm": SamplerInfo(
        "ancestral sampling, sigma^2 = beta or beta_tilde; respaced grids recompute beta",
        "Ho et al. 2020, Algorithm 2",
        1,
    ),
    "ddpm-score": SamplerInfo(
        "the DDPM step as A_t x + B_t score + sqrt(C_t) z",
        "seed 001, task 1; Song et al. 2021",
        1,
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
    generator: torch.Generator | None = None,
    x_T: Tensor | None = None,
    record_trajectory: bool = False,
    callback: Callback | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> SampleResult:
    """Draw samples with a named sampler from any eps_fn(x, t); t runs in schedule units."""
    if sampler not in SAMPLERS:
        raise ScorelabError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    timesteps = schedule.timesteps(steps)
    x = randn(tuple(shape), generator=generator, dtype=dtype, device=device) if x_T is None else x_T
    nfe = 0

    def counted(x: Tensor, t: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        return eps_fn(x, t)

    trajectory: list[tuple[float, Tensor]] | None = None
    if record_trajectory:
        trajectory = [(float(timesteps[0]), x.detach().cpu())]

    def on_step(i: int, t: Tensor, x_t: Tensor, x0: Tensor) -> None:
        if trajectory is not None:
            trajectory.append((float(t.flatten()[0]), x_t.detach().cpu()))
        if callback is not None:
            callback(i, t, x_t, x0)

    out = SAMPLERS[sampler](
        counted, x, schedule, timesteps, generator=generator, callback=on_step, **options
    )
    return SampleResult(out, nfe, trajectory)


__all__ = ["SAMPLERS", "SAMPLER_INFO", "SampleResult", "SamplerInfo", "sample"]
