"""Samplers: stateless functions of an eps_fn, a start x and a decreasing time grid.

sample(eps_fn, shape, schedule, sampler=NAME, steps=K) draws x_T from the prior, runs the named
sampler and returns the samples, the number of eps_fn evaluations (NFE) and, on request, the
trajectory. Each sampler registers where it is defined, with its options (registry.py);
SAMPLERS maps each name to its function and SAMPLER_INFO describes it, both read from the
registry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# importing the sampler modules registers their samplers, in this order
from scorelab.samplers import ancestral, ddim, continuous, unipc, flow  # noqa: F401  # isort: skip
from scorelab._tensor import append_dims, batch_times, is_broadcast, randn
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
from scorelab.samplers.flow import sample_flow_euler, sample_flow_heun, sample_flow_midpoint
from scorelab.samplers.registry import (
    REGISTRY,
    SAMPLER_INFO,
    SAMPLERS,
    Option,
    OptionSpec,
    SamplerInfo,
    SamplerSpec,
    get_sampler,
    parse_options,
    register_sampler,
    validate_options,
)
from scorelab.samplers.timesteps import SPACINGS, check_timesteps, make_timesteps
from scorelab.samplers.unipc import sample_unipc
from scorelab.typing import Callback, EpsFn, Schedule


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
    timesteps: Tensor | None = None,
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
    default if None); timesteps gives the grid itself instead (decreasing from at most T, ending
    at 0; e.g. a tuned one, samplers/tuning.py), with steps None or its length - 1; other
    options go to the sampler (variance=, eta=, order=, churn=, ...): each must be one it
    registered, of its type and range (`scorelab samplers` lists them).
    """
    spec = get_sampler(sampler)
    validate_options(sampler, options)
    if timesteps is not None:
        if spacing is not None or t_min is not None:
            raise ScorelabError("give timesteps or spacing/t_min, not both")
        timesteps = check_timesteps(schedule, timesteps, steps)
    else:
        spacing = spec.spacing if spacing is None else spacing
        t_min = schedule.sampling_t_min if t_min is None else t_min
        steps = steps or schedule.default_steps
        timesteps = make_timesteps(schedule, steps, spacing, t_min=t_min)
    # Samplers integrate x~ = input_scale(t) x_t, a VP process for every SDE (sde.py); for a
    # DiscreteSchedule the scale is 1 and these maps are exact identities.
    scale = schedule.input_scale
    unit_scale = bool((scale(timesteps) == 1).all())  # VP: skip the per-call identity maps

    def to_x(x_tilde: Tensor, t: Tensor | float) -> Tensor:
        if unit_scale:
            return x_tilde
        t = batch_times(t, x_tilde)
        if is_broadcast(t):  # one time for the whole batch: its scale once, not B times
            t = t[:1]
        s = scale(t).to(x_tilde.dtype)
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
        x_t = x_t if float(t.flatten()[0]) == 0 else to_x(x_t, t)  # t = 0: the x0 itself
        if trajectory is not None:
            trajectory.append((float(t.flatten()[0]), x_t.detach().cpu()))
        if callback is not None:
            callback(i, t, x_t, x0)

    steps_seen = on_step if trajectory is not None or callback is not None else None
    out = spec.fn(counted, x, schedule, timesteps, generator=generator, callback=steps_seen,
                  **options)  # fmt: skip
    # samplers end at t = 0 with the x0 prediction, which is the same in both coordinates (the
    # scale at t = 0 is 1 but for flow with sigma_min > 0); Langevin stops at the last positive
    # level, where the scale is 1 - O(sigma_t^2 + 1 - alpha_t^2): ~1e-8 VE, ~5e-5 sub-VP
    return SampleResult(out if float(timesteps[-1]) == 0 else to_x(out, timesteps[-1]), nfe,
                        trajectory)  # fmt: skip


__all__ = [
    "REGISTRY",
    "SAMPLERS",
    "SAMPLER_INFO",
    "SPACINGS",
    "Option",
    "OptionSpec",
    "SampleResult",
    "SamplerInfo",
    "SamplerSpec",
    "check_timesteps",
    "make_timesteps",
    "parse_options",
    "register_sampler",
    "sample",
    "sample_annealed_langevin",
    "sample_ddim",
    "sample_ddpm",
    "sample_ddpm_score",
    "sample_dpm_solver_pp",
    "sample_euler_maruyama",
    "sample_flow_euler",
    "sample_flow_heun",
    "sample_flow_midpoint",
    "sample_heun_edm",
    "sample_langevin",
    "sample_ode_euler",
    "sample_ode_heun",
    "sample_ode_rk45",
    "sample_pc",
    "sample_unipc",
    "validate_options",
]
