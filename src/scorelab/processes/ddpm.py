"""The discrete variance-preserving process and its Gaussian posteriors (Ho et al. 2020).

Forward:   q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)
Marginal:  q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
Posterior: q(x_s | x_t, x_0) = N(mu_tilde, beta_tilde I) for s < t (s = t - 1 by default), with
  alpha_{t|s} = alpha_bar_t / alpha_bar_s, beta_{t|s} = 1 - alpha_{t|s},
  mu_tilde    = sqrt(alpha_bar_s) beta_{t|s} / (1 - alpha_bar_t) x_0
              + sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t
              = (x_t - beta_{t|s} / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_{t|s})   (eps form)
  beta_tilde  = (1 - alpha_bar_s) / (1 - alpha_bar_t) beta_{t|s}.
Taking s = t - 1 gives the formulas of Ho et al. 2020; a general s is what respacing needs.
Times are (B,) tensors in [0, T]; x has shape (B, *).

The variational bound (Ho et al. 2020, eq. 5) is a sum of KLs between Gaussians, each in
closed form: L_T = KL(q(x_T|x_0) || N(0, I)), L_{t-1} = KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t)),
L_0 = -log p(x_0|x_1). The reverse variance is beta_t, beta_tilde_t, or learned: an
interpolation log Sigma = v log beta_t + (1 - v) log beta_tilde_t (Nichol & Dhariwal 2021).
The totals over t, in nats and bits/dim, live in scorelab.likelihood.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from scorelab._tensor import append_dims, flat_sum, randn_like
from scorelab.errors import ScorelabError
from scorelab.typing import EpsFn, Schedule

Variance = Literal["beta", "beta_tilde"]
VARIANCES: tuple[str, ...] = ("beta", "beta_tilde")
# a learned variance: (x_t, t) -> v, the interpolation weight of log beta (shape of x_t)
VarianceFn = Callable[[Tensor, Tensor], Tensor]
DECODERS: tuple[str, ...] = ("gaussian", "discretized")


class Gaussian(NamedTuple):
    """A diagonal Gaussian: mean (B, *) and variance broadcastable to it."""

    mean: Tensor
    var: Tensor


def _coeffs(schedule: Schedule, t: Tensor, x: Tensor) -> Tensor:
    return append_dims(schedule.alpha_bar(t).to(x.dtype), x.ndim)


def signal_noise(schedule: Schedule, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """a_t = sqrt(alpha_bar_t) and sigma_t = sqrt(1 - alpha_bar_t), shaped to broadcast with x."""
    alpha_bar = _coeffs(schedule, t, x)
    return alpha_bar.sqrt(), (1 - alpha_bar).sqrt()


def _prev(t: Tensor, s: Tensor | None) -> Tensor:
    return t - 1 if s is None else s


def q_step(schedule: Schedule, x_prev: Tensor, t: Tensor) -> Gaussian:
    """q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)."""
    alpha = _coeffs(schedule, t, x_prev) / _coeffs(schedule, t - 1, x_prev)
    return Gaussian(alpha.sqrt() * x_prev, (1 - alpha).expand_as(x_prev))


def q_marginal(schedule: Schedule, x0: Tensor, t: Tensor) -> Gaussian:
    """q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), the closed form."""
    alpha_bar = _coeffs(schedule, t, x0)
    return Gaussian(alpha_bar.sqrt() * x0, (1 - alpha_bar).expand_as(x0))


def q_sample(
    schedule: Schedule,
    x0: Tensor,
    t: Tensor,
    eps: Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Algorithm 1's noising)."""
    if eps is None:
        eps = randn_like(x0, generator)
    alpha_bar = _coeffs(schedule, t, x0)
    return alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps


def posterior_variance(
    schedule: Schedule, t: Tensor, s: Tensor | None = None, kind: Variance = "beta_tilde"
) -> Tensor:
    """The reverse-step variance for t -> s: beta_{t|s}, or beta_tilde (the posterior's), (B,)."""
    if kind not in VARIANCES:
        raise ScorelabError(f"unknown variance {kind!r}; choose one of: {', '.join(VARIANCES)}")
    s = _prev(t, s)
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
    beta = 1 - alpha_bar_t / alpha_bar_s
    if kind == "beta":
        return beta
    return (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta


def analytic_variance(
    schedule: Schedule, t: Tensor, s: Tensor, gamma: Tensor
) -> Tensor:
    """Analytic-DPM's optimal reverse variance for t -> s given the score (Bao et al. 2022):

    sigma*^2 = beta_tilde_{t|s} + beta_{t|s}^2 / (alpha_{t|s} (1 - alpha_bar_t)) (1 - Gamma_t),

    with Gamma_t = E||eps(x_t)||^2 / d over the data (clipped to [0, 1]): the posterior's
    variance plus the expected variance of x_0 given x_t that the mean prediction leaves out.
    """
    alpha_bar_t, alpha_bar_s = schedule.alpha_bar(t), schedule.alpha_bar(s)
    alpha = alpha_bar_t / alpha_bar_s
    beta = 1 - alpha
    gamma = torch.as_tensor(gamma, dtype=beta.dtype, device=beta.device).clamp(0, 1)
    beta_tilde = (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta
    return beta_tilde + beta**2 / (alpha * (1 - alpha_bar_t)) * (1 - gamma)


def q_posterior(
    schedule: Schedule, x0: Tensor, x_t: Tensor, t: Tensor, s: Tensor | None = None
) -> Gaussian:
    """q(x_s | x_t, x_0): mean mu_tilde(x_t, x_0) and variance beta_tilde."""
    s = _prev(t, s)
    alpha_bar_t, alpha_bar_s = _coeffs(schedule, t, x_t), _coeffs(schedule, s, x_t)
    alpha = alpha_bar_t / alpha_bar_s
    beta = 1 - alpha
    mean = (alpha_bar_s.sqrt() * beta * x0 + alpha.sqrt() * (1 - alpha_bar_s) * x_t) / (
        1 - alpha_bar_t
    )
    var = (1 - alpha_bar_s) / (1 - alpha_bar_t) * beta
    return Gaussian(mean, var.expand_as(x_t))


def q_posterior_mean_eps(
    schedule: Schedule, x_t: Tensor, eps: Tensor, t: Tensor, s: Tensor | None = None
) -> Tensor:
    """mu_tilde in its eps form: (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)."""
    s = _prev(t, s)
    alpha_bar_t, alpha_bar_s = _coeffs(schedule, t, x_t), _coeffs(schedule, s, x_t)
    alpha = alpha_bar_t / alpha_bar_s
    return (x_t - (1 - alpha) / (1 - alpha_bar_t).sqrt() * eps) / alpha.sqrt()


class ReverseStep(NamedTuple):
    """p_theta(x_s | x_t) = N(mean, var), with the x_0 it predicts."""

    mean: Tensor
    var: Tensor
    x0: Tensor


def p_mean_variance(
    eps_fn: EpsFn,
    x_t: Tensor,
    t: Tensor,
    schedule: Schedule,
    s: Tensor | None = None,
    *,
    variance: Variance | VarianceFn = "beta_tilde",
) -> ReverseStep:
    """p_theta(x_s | x_t): the posterior with x_0 replaced by the model's prediction.

    ``variance`` is "beta", "beta_tilde", or a learned VarianceFn (x_t, t) -> v, giving
    Sigma = exp(v log beta + (1 - v) log beta_tilde) (see reverse_log_variance).
    """
    s = _prev(t, s)
    eps = eps_fn(x_t, t)
    alpha_bar_t = _coeffs(schedule, t, x_t)
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    mean = q_posterior_mean_eps(schedule, x_t, eps, t, s)
    if callable(variance):
        var = reverse_log_variance(schedule, t, s, v=variance(x_t, t)).exp()
        return ReverseStep(mean, var.expand_as(x_t), x0)
    var = append_dims(posterior_variance(schedule, t, s, variance).to(x_t.dtype), x_t.ndim)
    return ReverseStep(mean, var.expand_as(x_t), x0)


def score_step_coefficients(
    schedule: Schedule, t: Tensor, s: Tensor | None = None, variance: Variance = "beta_tilde"
) -> tuple[Tensor, Tensor, Tensor]:
    """A_t, B_t, C_t of x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z (docs/theory.md §8).

    A_t = 1 / sqrt(alpha_t), B_t = beta_t / sqrt(alpha_t), C_t = the chosen variance.
    """
    s = _prev(t, s)
    alpha = schedule.alpha_bar(t) / schedule.alpha_bar(s)
    return (
        1 / alpha.sqrt(),
        (1 - alpha) / alpha.sqrt(),
        posterior_variance(schedule, t, s, variance),
    )


# -- the variational bound: its terms in closed form ---------------------------------------
def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise, in nats (diagonal Gaussians)."""
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1)


def gaussian_log_likelihood(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """log N(x; mean, var) elementwise, in nats."""
    return -0.5 * (math.log(2 * math.pi) + torch.log(var) + (x - mean) ** 2 / var)


def _approx_std_normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(
    x: Tensor, mean: Tensor, var: Tensor, *, bins: int = 256
) -> Tensor:
    """log P(x) elementwise for data on the grid of `bins` values in [-1, 1] (8-bit images).

    The bin of x is [x - 1/(bins-1), x + 1/(bins-1)], the outer bins extended to -inf and
    +inf, so the probabilities of the `bins` values sum to one (Ho et al. 2020, eq. 13).
    """
    std = var.sqrt()
    half = 1.0 / (bins - 1)
    upper = torch.where(
        x > 1 - half, torch.ones_like(x), _approx_std_normal_cdf((x - mean + half) / std)
    )
    lower = torch.where(
        x < -1 + half, torch.zeros_like(x), _approx_std_normal_cdf((x - mean - half) / std)
    )
    # log of the CDF difference; the tails use log_ndtr for accuracy far from the mean
    log_upper_tail = torch.special.log_ndtr((mean + half - x) / std)  # log(1 - cdf(x-half))
    log_lower_tail = torch.special.log_ndtr((x - mean + half) / std)  # log cdf(x + half)
    mid = torch.log((upper - lower).clamp(min=1e-300 if x.dtype == torch.float64 else 1e-12))
    out = torch.where(x < -1 + half, log_lower_tail, mid)
    return torch.where(x > 1 - half, log_upper_tail, out)


def reverse_log_variance(
    schedule: Schedule,
    t: Tensor,
    s: Tensor | None = None,
    *,
    variance: Variance = "beta_tilde",
    v: Tensor | None = None,
) -> Tensor:
    """log Sigma of p(x_s | x_t) as the bound uses it, (B,) or, with v, shaped like v.

    beta_tilde is 0 on the step to s = 0, so its log is clipped to the next step's
    (t + (t - s) -> t), as in improved DDPM. With v (learned variance, Nichol & Dhariwal
    2021, eq. 15): log Sigma = v log beta_{t|s} + (1 - v) log beta_tilde (clipped).
    """
    s = _prev(t, s)
    log_beta = torch.log(posterior_variance(schedule, t, s, "beta"))
    t_next = torch.minimum(2 * t - s, torch.full_like(t, float(schedule.T)))
    tilde = torch.where(
        s <= 0,
        posterior_variance(schedule, t_next, t, "beta_tilde"),
        posterior_variance(schedule, t, s, "beta_tilde"),
    )
    log_tilde = torch.log(tilde)
    if v is not None:
        v_dtype = v.dtype
        log_beta = append_dims(log_beta.to(v_dtype), v.ndim)
        log_tilde = append_dims(log_tilde.to(v_dtype), v.ndim)
        return v * log_beta + (1 - v) * log_tilde
    if variance not in VARIANCES:
        raise ScorelabError(f"unknown variance {variance!r}; choose one of: {', '.join(VARIANCES)}")
    return log_beta if variance == "beta" else log_tilde


def prior_kl(schedule: Schedule, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) summed over dimensions, (B,), in nats."""
    # T in float64: in bfloat16 or float16 data's dtype T need not be representable
    t = torch.full((x0.shape[0],), float(schedule.T), dtype=torch.float64, device=x0.device)
    q = q_marginal(schedule, x0, t)
    return flat_sum(normal_kl(q.mean, q.var, torch.zeros_like(x0), torch.ones_like(x0)))


def vlb_term(
    eps: Tensor,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    schedule: Schedule,
    *,
    log_var: Tensor,
    decoder: str = "gaussian",
) -> Tensor:
    """L_{t-1} (t >= 2) or L_0 (t = 1) per example, (B,), in nats, given the model's eps at
    (x_t, t) and the reverse log-variance: KL(q(x_{t-1}|x_t,x_0) || N(mu_theta, Sigma)) in
    closed form, and at t = 1 -log p(x_0 | x_1), a Gaussian density ("gaussian", continuous
    data) or the discretized Gaussian of 8-bit data in [-1, 1] ("discretized")."""
    if decoder not in DECODERS:
        raise ScorelabError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODERS)}")
    mean = q_posterior_mean_eps(schedule, x_t, eps, t)
    log_var = log_var if log_var.ndim == x_t.ndim else append_dims(log_var, x_t.ndim)
    var = log_var.to(x_t.dtype).exp().expand_as(x_t)
    q = q_posterior(schedule, x0, x_t, t)
    first = t <= 1
    kl = flat_sum(normal_kl(q.mean, q.var.clamp(min=torch.finfo(x_t.dtype).tiny), mean, var))
    if decoder == "gaussian":
        nll = -flat_sum(gaussian_log_likelihood(x0, mean, var))
    else:
        nll = -flat_sum(discretized_gaussian_log_likelihood(x0, mean, var))
    return torch.where(first, nll, kl)
