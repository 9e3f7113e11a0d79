"""Posterior sampling for linear inverse problems y = A x + sigma_y n with a diffusion prior.

sample(eps_fn, schedule, operator, y, sigma_y, method=NAME, steps=K, n=N) draws N samples of
p(x | y) for one observation y, with the prior given by eps_fn on any schedule (a DDPM
DiscreteSchedule or an SDE). Every method approximates, or sidesteps, the likelihood score
grad_x log p_t(y | x_t) that Bayes adds to the prior's score (docs/theory.md §31):

  dps      Chung et al. 2023       p(x_0 | x_t) ~ delta(x0_hat), step zeta / ||y - A x0_hat||
  pigdm    Song et al. 2023        p(x_0 | x_t) ~ N(x0_hat, r_t^2 I); exact for N(mu, v I) data
  ddnm     Wang et al. 2023        range-null projection of x0_hat with the SVD (DDNM+ noise)
  diffpir  Zhu et al. 2023         x0_hat -> prox of ||y - A z||^2 (SVD), re-noised; quadratic grid
  repaint  Lugmayr et al. 2022     observed pixels from the noised y (Mask only), resampling
  sdedit   Meng et al. 2022        start from A^+ y noised to t0; no likelihood term after

The exact answer for Gaussian-mixture priors is GaussianMixture.posterior (oracle.py): its
eps_fn run through scorelab.sample is the reference every method is measured against.
Methods work in the VP view x~ = input_scale(t) x_t that samplers use (samplers.sample).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# importing the method modules registers their methods, in this order
from scorelab.posterior import guided, projection  # noqa: F401  # isort: skip
from scorelab._tensor import append_dims, randn
from scorelab.errors import ScorelabError
from scorelab.posterior.guided import pigdm_guided, sample_dps, sample_pigdm
from scorelab.posterior.projection import (
    repaint_path,
    sample_ddnm,
    sample_diffpir,
    sample_repaint,
    sample_sdedit,
)
from scorelab.posterior.registry import (
    METHODS,
    MethodSpec,
    accepted,
    get_method,
    parse_options,
    register_method,
    validate_options,
)
from scorelab.samplers.timesteps import make_timesteps
from scorelab.typing import EpsFn, Schedule


@dataclass
class PosteriorResult:
    """n samples x (n, *shape) of p(x | y), the NFE used, their mean and std over the samples
    (shape), and the measurement residual ||A x - y|| of each sample (n,)."""

    x: Tensor
    nfe: int
    mean: Tensor
    std: Tensor
    residual: Tensor


def observation(operator: Any, y: Tensor) -> Tensor:
    """One observation as (1, *out_shape): y of the operator's out_shape, with or without a
    batch of 1; anything else is a one-line ScorelabError."""
    y = torch.as_tensor(y)
    out = tuple(operator.out_shape)
    if tuple(y.shape) == out:
        y = y[None]
    if tuple(y.shape) != (1, *out):
        raise ScorelabError(
            f"the observation must have the operator's shape {out} (or (1, *{out})), "
            f"got {tuple(y.shape)}"
        )
    if not torch.isfinite(y).all():
        raise ScorelabError("the observation y must be finite")
    return y


def residual(operator: Any, x: Tensor, y: Tensor) -> Tensor:
    """||A x - y|| per sample, (n,)."""
    return (operator.forward(x) - y).reshape(x.shape[0], -1).norm(dim=1)


def sample(
    eps_fn: EpsFn,
    schedule: Schedule,
    operator: Any,
    y: Tensor,
    sigma_y: float,
    method: str = "pigdm",
    steps: int | None = None,
    *,
    spacing: str | None = None,
    n: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    **options: Any,
) -> PosteriorResult:
    """n samples of p(x | y) for y = A x + sigma_y n, the prior given by eps_fn(x, t).

    steps: grid intervals (default: the schedule's default_steps), on the grid `spacing` (one
    of samplers.timesteps.SPACINGS; default: the method's own, `METHODS[name].spacing`, uniform
    for all but diffpir's quadratic); options go to the method (`METHODS[name].options`,
    checked). Bad input (y's shape, sigma_y < 0 or not finite, an operator the method cannot
    use, an unknown method, option or spacing) is a one-line ScorelabError.
    """
    spec = get_method(method)
    validate_options(method, options)
    sigma_y = float(sigma_y)
    if not (math.isfinite(sigma_y) and sigma_y >= 0):
        raise ScorelabError(f"sigma_y must be finite and >= 0, got {sigma_y}")
    if not (isinstance(n, int) and n >= 1):
        raise ScorelabError(f"n must be a positive integer, got {n}")
    spec.check_operator(operator)
    y = observation(operator, y).to(device=device, dtype=dtype)
    timesteps = make_timesteps(
        schedule,
        steps or schedule.default_steps,
        spacing or spec.spacing,
        t_min=schedule.sampling_t_min,
    )
    nfe = 0

    def vp_eps_fn(x_tilde: Tensor, t: Tensor) -> Tensor:
        # the VP view x~ = c x_t (samplers.sample): the user's eps_fn sees x_t = x~ / c
        nonlocal nfe
        nfe += 1
        c = schedule.input_scale(t).to(x_tilde.dtype)
        return eps_fn(x_tilde / append_dims(c, x_tilde.ndim), t)

    x = randn((n, *operator.shape), generator=generator, dtype=dtype, device=device)
    x = spec.fn(
        vp_eps_fn, x, schedule, timesteps, operator, y, sigma_y, generator=generator, **options
    )
    # every grid ends at t = 0, where the VP view's scale is 1: x is in the data's units
    std = x.std(dim=0) if n > 1 else torch.zeros_like(x[0])
    return PosteriorResult(x, nfe, x.mean(dim=0), std, residual(operator, x, y))


__all__ = [
    "METHODS",
    "MethodSpec",
    "PosteriorResult",
    "accepted",
    "get_method",
    "observation",
    "parse_options",
    "pigdm_guided",
    "register_method",
    "repaint_path",
    "residual",
    "sample",
    "sample_ddnm",
    "sample_diffpir",
    "sample_dps",
    "sample_pigdm",
    "sample_repaint",
    "sample_sdedit",
    "validate_options",
]
