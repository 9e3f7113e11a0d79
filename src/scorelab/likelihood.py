"""Likelihoods of a trained diffusion model: the variational bound and the exact PF-ODE one.

Two standard answers, both in nats per example (bits per dimension = nats / (d ln 2)):

* ``vlb``: the bound -log p(x_0) <= L_VLB = L_T + sum_{t>=2} L_{t-1} + L_0 of Ho et al. 2020
  (eq. 5), every term over all T steps (batched), each KL in closed form
  (scorelab.processes.ddpm.vlb_term) at one draw of x_t ~ q(x_t | x_0) per t, so L_VLB is an
  unbiased estimate of the bound. The per-t breakdown is returned too.
* ``ode_log_likelihood``: log p_{t0}(x) through the probability-flow ODE and the instantaneous
  change of variables (Chen et al. 2018; Song et al. 2021, appendix D.2):
      log p_{t0}(x(t0)) = log p_T(x(T)) + int_{t0}^{T} div f(x(t), t) dt,
  integrated with Dormand-Prince (scorelab.numerics.odeint) on the augmented state (x, int div f),
  in the variable rho = -log alpha_bar(t) where the schedule can invert its log-SNR,
  the divergence exact (autograd) or Hutchinson's estimate with probes held fixed along the
  trajectory (scorelab.numerics.divergence).

For discrete data (8-bit images in [-1, 1]) ``dequantize`` adds uniform noise inside each
bin and returns the log-volume of the bin, so that -log P(x) <= -log p(y) - log_volume.
Units: these functions work in the model's units; a data normalization x_model =
(x - shift) / scale adds d log(scale) nats to every NLL (scorelab.evaluation.nll does that).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab._tensor import append_dims, batch_times, flat_sum, randn_like
from scorelab.errors import ScorelabError
from scorelab.numerics.divergence import divergence_exact, divergence_hutchinson, sample_probes
from scorelab.numerics.odeint import odeint_rk45
from scorelab.processes.ddpm import (
    Variance,
    VarianceFn,
    prior_kl,
    q_sample,
    reverse_log_variance,
    vlb_term,
)
from scorelab.samplers.continuous import pf_ode_drift
from scorelab.typing import EpsFn, Schedule

LN2 = math.log(2.0)
DIVERGENCES = ("exact", "hutchinson")


def bits_per_dim(nats: Tensor | float, dim: int) -> Tensor | float:
    """Nats per example -> bits per dimension: nats / (d ln 2)."""
    return nats / (dim * LN2)


def standard_normal_log_prob(x: Tensor) -> Tensor:
    """log N(x; 0, I) per example, (B,)."""
    d = x[0].numel()
    return -0.5 * flat_sum(x**2) - 0.5 * d * math.log(2 * math.pi)


# -- the variational bound --------------------------------------------------------------------
@dataclass
class VLBResult:
    """total (B,) nats; terms (B, T + 1): column 0 is L_0, column t is L_t (t = 1..T-1 the
    KL at step t + 1 -> t, column T is the prior term L_T); dim the dimensions of an example."""

    total: Tensor
    terms: Tensor
    dim: int

    @property
    def bits_per_dim(self) -> Tensor:
        return self.total / (self.dim * LN2)


@torch.no_grad()
def vlb(
    eps_fn: EpsFn,
    x0: Tensor,
    schedule: Schedule,
    *,
    variance: Variance | VarianceFn = "beta_tilde",
    decoder: str = "gaussian",
    generator: torch.Generator | None = None,
    max_batch: int = 65_536,
) -> VLBResult:
    """L_VLB per example over all T steps (Ho et al. 2020, eq. 5), with the per-t breakdown.

    variance: "beta_tilde" (fixed small), "beta" (fixed large) or a learned VarianceFn
    (x_t, t) -> v. decoder: "gaussian" (continuous data, L_0 = -log N(x_0; mu, Sigma)) or
    "discretized" (8-bit data in [-1, 1]). Every step t = 1..T is evaluated for every
    example, stacked into batches of at most max_batch rows.
    """
    T = int(schedule.T)
    if T != schedule.T:
        raise ScorelabError("the VLB needs a discrete schedule with integer T")
    B = x0.shape[0]
    per_chunk = max(1, max_batch // B)
    steps = torch.arange(1, T + 1, dtype=x0.dtype, device=x0.device)
    columns = []
    for start in range(0, T, per_chunk):
        ts = steps[start : start + per_chunk]
        k = ts.numel()
        x0_rep = x0.repeat(k, *([1] * (x0.ndim - 1)))  # (k B, *), step-major
        t = ts.repeat_interleave(B)
        x_t = q_sample(schedule, x0_rep, t, randn_like(x0_rep, generator))
        eps = eps_fn(x_t, t)
        if callable(variance):
            log_var = reverse_log_variance(schedule, t, v=variance(x_t, t))
        else:
            log_var = reverse_log_variance(schedule, t, variance=variance)
        term = vlb_term(eps, x0_rep, x_t, t, schedule, log_var=log_var, decoder=decoder)
        columns.append(term.reshape(k, B).T)
    terms = torch.cat([*columns, prior_kl(schedule, x0)[:, None]], dim=1)
    return VLBResult(terms.sum(dim=1), terms, x0[0].numel())


# -- the exact likelihood through the probability-flow ODE -------------------------------------
@dataclass
class ODELikelihood:
    """log_prob (B,) nats of x at time t0 in model units, the NFE (eps_fn calls) and x(T)."""

    log_prob: Tensor
    nfe: int
    x_T: Tensor
    t0: float

    def bits_per_dim(self) -> Tensor:
        return -self.log_prob / (self.x_T[0].numel() * LN2)


def default_t0(schedule: Schedule) -> float:
    """Where the ODE starts: the process's likelihood_t0, where the noise is about 0.01 of the
    signal (1e-3 T: DDPM's t = 1, VP's t = 1e-3; EDM sigma = 0.01; flow t = 1/101)."""
    return float(schedule.likelihood_t0)


@torch.no_grad()
def ode_log_likelihood(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    *,
    divergence: str = "exact",
    probes: int = 1,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    t0: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    prior_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
) -> ODELikelihood:
    """log p_{t0}(x) by integrating the PF-ODE with its divergence from t0 to T.

    divergence "exact" takes d backward passes per evaluation (low dimension);
    "hutchinson" averages ``probes`` Rademacher or Gaussian probes (fixed along the
    trajectory, drawn from ``generator``): unbiased for log p, in expectation over probes.
    The prior p_T is N(0, I) unless prior_log_prob is given. An SDE (VE, sub-VP) is
    integrated in its VP view x~ = input_scale(t) x, as the samplers do: eps_fn is called at
    x = x~ / input_scale(t), the prior N(0, I) (or prior_log_prob) is evaluated at x~_T, and
    the change of variables x -> x~ at t0 adds d log input_scale(t0).
    """
    if divergence not in DIVERGENCES:
        raise ScorelabError(
            f"unknown divergence {divergence!r}; choose one of: {', '.join(DIVERGENCES)}"
        )
    if divergence == "hutchinson" and probes < 1:
        raise ScorelabError(f"probes must be >= 1, got {probes}")
    T = float(schedule.T)
    t0 = default_t0(schedule) if t0 is None else float(t0)
    if not 0 < t0 < T:
        raise ScorelabError(f"t0 must be in (0, {T:g}), got {t0}")
    shape, B = x.shape, x.shape[0]
    d = x[0].numel()
    s0 = float(schedule.input_scale(torch.tensor(t0, dtype=torch.float64)))
    x = x * s0
    log_scale_change = d * math.log(s0)
    model_eps_fn = eps_fn

    def eps_fn(z: Tensor, t: Tensor) -> Tensor:  # the VP view: the model sees x = x~ / scale
        scale = append_dims(schedule.input_scale(t).to(z.dtype), z.ndim)
        return model_eps_fn(z / scale, t)

    v = None
    if divergence == "hutchinson":
        v = sample_probes(
            (probes, *shape),
            distribution=distribution,
            generator=generator,
            dtype=x.dtype,
            device=x.device,
        )
    time_of = _time_of_rho(schedule)

    def f(state: Tensor, u: float) -> Tensor:
        y = state[:, :d].reshape(shape)
        tt = batch_times(u if time_of is None else time_of(u), y)
        # in rho = -log alpha_bar: dx/drho = (dx/dt) / beta(t), smooth where beta(t) is not
        rate = 1.0 if time_of is None else append_dims(schedule.beta_rate(tt).to(y.dtype), y.ndim)
        drift = lambda z: pf_ode_drift(eps_fn, schedule, z, tt)[0] / rate  # noqa: E731
        if v is None:
            dy, div = divergence_exact(drift, y)
        else:
            dy, div = divergence_hutchinson(drift, y, v=v)
        return torch.cat([dy.reshape(B, d), div[:, None].to(dy.dtype)], dim=1)

    state = torch.cat([x.reshape(B, d), x.new_zeros(B, 1)], dim=1)
    if time_of is None:
        u0, u1 = t0, T
    else:
        u0, u1 = (
            -float(schedule.log_alpha_bar(torch.tensor(u, dtype=torch.float64))) for u in (t0, T)
        )
    state, nfe = odeint_rk45(f, state, u0, u1, rtol=rtol, atol=atol)
    x_T = state[:, :d].reshape(shape)  # in the VP view (x~_T); x_T for a DDPM schedule
    log_prob = prior_log_prob(x_T) + state[:, d] + log_scale_change
    return ODELikelihood(log_prob, nfe, x_T, t0)


def _time_of_rho(schedule: Schedule) -> Callable[[float], float] | None:
    """t as a function of rho = -log alpha_bar(t), if the schedule can invert its log-SNR.

    The discrete schedule's beta(t) jumps at every integer t, which makes an adaptive solver
    in t crawl (hundreds of NFE) and lose accuracy; in rho the PF-ODE is
    dx/drho = -(x - eps / sigma) / 2, smooth but for eps's own dependence on t.
    """
    inverse = getattr(schedule, "time_at_log_snr", None)
    if inverse is None or not hasattr(schedule, "log_alpha_bar"):
        return None

    def time_of(rho: float) -> float:
        log_snr = -rho - math.log(-math.expm1(-rho))  # log(alpha_bar / (1 - alpha_bar))
        return float(inverse(torch.tensor(log_snr, dtype=torch.float64)))

    return time_of


# -- discrete data ------------------------------------------------------------------------------
def dequantize(
    x: Tensor, *, bins: int = 256, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Uniform dequantization of data on the grid of `bins` values in [-1, 1] (k / 127.5 - 1
    for 8 bits): y = x + u * width, u ~ U(-1/2, 1/2), width = 2 / (bins - 1). Returns y and
    log_volume = d log(width) per example (B,), so that -log P(x) <= -log p(y) - log_volume."""
    width = 2.0 / (bins - 1)
    device = generator.device if generator is not None else x.device
    u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
    y = x + (u - 0.5) * width
    log_volume = torch.full((x.shape[0],), x[0].numel() * math.log(width), dtype=x.dtype)
    return y, log_volume.to(x.device)


__all__ = [
    "DIVERGENCES",
    "ODELikelihood",
    "VLBResult",
    "bits_per_dim",
    "default_t0",
    "dequantize",
    "ode_log_likelihood",
    "standard_normal_log_prob",
    "vlb",
]
