"""Step grids tuned to a model: the K times that minimise a deterministic sampler's error.

For an ODE sampler the samples are a deterministic map of the noise x_T, and the map it
approximates is the probability-flow ODE's. With the model's own eps and n noises x_T, the
discretization error of a grid t_0 = T > t_1 > ... > t_{K-1} > t_K = 0 is measured as

    E(grid) = mean_i || Phi_grid(x_T^i) - Phi_ref(x_T^i) ||^2 / d,

Phi_ref a reference solve of the same ODE (third-order DPM-Solver++ on a fine log-SNR grid,
whose own error is orders below E). The grid is parameterized in log-SNR: the first time
stays at the sampler grid's top, the K - 1 gaps are softmax weights of K - 1 numbers and the
last positive time's log-SNR is free between the top's and t_min's (a share of that range in
[0.02, 1]); Nelder-Mead (scipy) minimises E from the sampler's default grid. This is
local-truncation-error balancing by measurement rather than by a bound: the tuned grid is
the one whose steps' errors add up to the least on this model (compare Sabour et al. 2024,
"Align Your Steps", who minimise a KL bound between the sampler's and the true SDE's path
measures instead). A grid is tuned for one sampler, one K and one model; stochastic samplers
are refused (their error is not a function of x_T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.samplers import sample
from scorelab.samplers.registry import get_sampler
from scorelab.samplers.timesteps import make_timesteps
from scorelab.typing import EpsFn, Schedule

REFERENCE = {"sampler": "dpm-solver++", "order": 3}


@dataclass
class TunedGrid:
    """A tuned grid (float64, K + 1 times ending at 0), its error, the default grid's error on
    the same noises, and what it was tuned for."""

    timesteps: Tensor
    error: float
    baseline_error: float
    baseline_spacing: str
    sampler: str
    steps: int
    nfe: int
    evaluations: int

    def to_dict(self) -> dict:
        return {
            "timesteps": self.timesteps.tolist(),
            "error": self.error,
            "baseline_error": self.baseline_error,
            "baseline_spacing": self.baseline_spacing,
            "sampler": self.sampler,
            "steps": self.steps,
            "nfe": self.nfe,
            "evaluations": self.evaluations,
        }


def steps_for_nfe(sampler: str, nfe: int, schedule: Schedule, **options) -> tuple[int, int]:
    """The most grid steps whose run costs at most nfe network calls, and that cost."""

    def zero(x: Tensor, t: Tensor) -> Tensor:
        return torch.zeros_like(x)

    for steps in range(nfe, 0, -1):
        used = sample(zero, (1, 1), schedule, sampler, steps, **options).nfe
        if used <= nfe:
            return steps, used
    raise ScorelabError(f"{sampler} cannot run on {nfe} network calls")


@torch.no_grad()
def tune_timesteps(
    eps_fn: EpsFn,
    shape: tuple[int, ...],
    schedule: Schedule,
    sampler: str,
    steps: int,
    *,
    n: int = 256,
    max_evals: int = 300,
    reference_steps: int = 200,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    **options,
) -> TunedGrid:
    """Tune the K = steps times of a deterministic sampler on eps_fn (shape: one example's
    shape with n in front, e.g. (n, d)); see the module docstring for the error and the search."""
    from scipy.optimize import minimize

    spec = get_sampler(sampler)
    if steps < 1 or n < 1 or max_evals < 1:
        raise ScorelabError("steps, n and max_evals must be >= 1")
    x_T = torch.randn((n, *shape[1:]), generator=generator, dtype=dtype)
    probe = x_T[:2]
    twice = [
        sample(eps_fn, probe.shape, schedule, sampler, steps, x_T=probe, dtype=dtype,
               generator=torch.Generator().manual_seed(seed), **options).x  # fmt: skip
        for seed in (1, 2)
    ]
    if not torch.equal(*twice):
        raise ScorelabError(
            f"{sampler} with these options draws noise: tune-steps tunes deterministic samplers "
            "(ddim with eta=0, dpm-solver++, unipc, the ODE and flow solvers, heun-edm without "
            "churn)"
        )
    ref_grid = make_timesteps(schedule, reference_steps, "logsnr")
    ref_opts = {k: v for k, v in REFERENCE.items() if k != "sampler"}
    ref = sample(eps_fn, x_T.shape, schedule, REFERENCE["sampler"], x_T=x_T,
                 timesteps=ref_grid, dtype=dtype, **ref_opts).x  # fmt: skip
    d = x_T[0].numel()
    base = make_timesteps(schedule, steps, spec.spacing, t_min=schedule.sampling_t_min)
    evaluations, nfe = 0, 0

    def error(grid: Tensor) -> float:
        nonlocal evaluations, nfe
        evaluations += 1
        out = sample(eps_fn, x_T.shape, schedule, sampler, x_T=x_T, timesteps=grid, dtype=dtype,
                     **options)  # fmt: skip
        nfe = out.nfe
        e = float(((out.x - ref).double() ** 2).sum() / (n * d))
        return e if math.isfinite(e) else math.inf

    baseline = error(base)
    top = float(base[0])
    lam_top = float(schedule.log_snr(torch.tensor([top], dtype=torch.float64)))
    lo_t = float(schedule.t_min)
    lam_end = float(schedule.log_snr(torch.tensor([lo_t], dtype=torch.float64)))
    if steps == 1 or not lam_end > lam_top:
        return TunedGrid(base, baseline, baseline, spec.spacing, sampler, steps, nfe, evaluations)

    def grid_of(theta) -> Tensor:
        # theta: K - 1 logits of the log-SNR gaps, then the last time's share of the log-SNR
        # range from the top to t_min (clamped to [0.02, 1]: linear, so the search moves it)
        theta = torch.as_tensor(theta, dtype=torch.float64)
        gaps = torch.softmax(theta[:-1], 0)
        span = theta[-1].clamp(0.02, 1.0) * (lam_end - lam_top)
        lam = lam_top + torch.cat([gaps.new_zeros(1), torch.cumsum(gaps, 0)]) * span
        t = schedule.time_at_log_snr(lam).to(torch.float64)
        t[0] = top
        return torch.cat([t, t.new_zeros(1)])

    def objective(theta) -> float:
        grid = grid_of(theta)
        if not bool((grid[1:] < grid[:-1]).all()):
            return math.inf
        return error(grid)

    # start from the default grid: its gaps in log-SNR and its span; the first simplex moves
    # each gap's logit by 0.5 and the span by 0.1 (towards the inside of [0.02, 1])
    lam0 = schedule.log_snr(base[:-1].to(torch.float64)).to(torch.float64)
    gaps0 = (lam0[1:] - lam0[:-1]).clamp(min=1e-6)
    frac = float(((lam0[-1] - lam_top) / (lam_end - lam_top)).clamp(0.02, 1.0))
    theta0 = torch.cat([torch.log(gaps0 / gaps0.sum()), torch.tensor([frac], dtype=torch.float64)])
    dims = theta0.numel()
    simplex = theta0.repeat(dims + 1, 1)
    simplex[1:dims, : dims - 1] += 0.5 * torch.eye(dims - 1, dtype=torch.float64)
    simplex[dims, dims - 1] += -0.1 if frac > 0.5 else 0.1
    search = {"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-9 * baseline,
              "initial_simplex": simplex.numpy()}  # fmt: skip
    result = minimize(objective, theta0.numpy(), method="Nelder-Mead", options=search)
    grid, err = grid_of(result.x), float(result.fun)
    if not err < baseline:  # the search found nothing better: keep the default
        grid, err = base, baseline
    return TunedGrid(grid, err, baseline, spec.spacing, sampler, steps, nfe, evaluations)


__all__ = ["REFERENCE", "TunedGrid", "steps_for_nfe", "tune_timesteps"]
