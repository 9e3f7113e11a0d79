"""The discrete variance-preserving process and its Gaussian posteriors (Ho et al. 2020).

Forward:   q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I)
Marginal:  q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
Posterior: q(x_s | x_t, x_0) = N(mu_tilde, beta_tilde I) for s < t (s = t - 1 by default), with
  alpha_{t|s} = alpha_bar_t / alpha_bar_s, beta_{t|s} = 1 - alpha_{t|s},
  mu_tilde    = sqrt(alpha_bar_s) beta_{t|s} / (1 - alpha_bar_t) x_0
              + sqrt(alpha_{t|s}) (1 - alpha_bar_s) / (1 - alpha_bar_t) x_t
              = (x_t - beta_{t|s} / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_{t|s})   (eps form)
  beta_tilde  = (1 - alpha_bar_s) / (1 - alpha_bar_t) beta_{t|s}.
Taking s = t - 1 gives the formulas of the seeds; a general s is what respacing needs.
Times are (B,) tensors in [0, T]; x has shape (B, *).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from scorelab._tensor import append_dims, randn_like
from scorelab.errors import ScorelabError
from scorelab.typing import EpsFn, Schedule

Variance = Literal["beta", "beta_tilde"]
VARIANCES: tuple[str, ...] = ("beta", "beta_tilde")


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
    variance: Variance = "beta_tilde",
) -> ReverseStep:
    """p_theta(x_s | x_t): the posterior with x_0 replaced by the model's prediction."""
    s = _prev(t, s)
    eps = eps_fn(x_t, t)
    alpha_bar_t = _coeffs(schedule, t, x_t)
    x0 = (x_t - (1 - alpha_bar_t).sqrt() * eps) / alpha_bar_t.sqrt()
    mean = q_posterior_mean_eps(schedule, x_t, eps, t, s)
    var = append_dims(posterior_variance(schedule, t, s, variance).to(x_t.dtype), x_t.ndim)
    return ReverseStep(mean, var.expand_as(x_t), x0)


def score_step_coefficients(
    schedule: Schedule, t: Tensor, s: Tensor | None = None, variance: Variance = "beta_tilde"
) -> tuple[Tensor, Tensor, Tensor]:
    """A_t, B_t, C_t of x_s = A_t x_t + B_t grad log p_t(x_t) + sqrt(C_t) z (seed 001, task 1).

    A_t = 1 / sqrt(alpha_t), B_t = beta_t / sqrt(alpha_t), C_t = the chosen variance.
    """
    s = _prev(t, s)
    alpha = schedule.alpha_bar(t) / schedule.alpha_bar(s)
    return (
        1 / alpha.sqrt(),
        (1 - alpha) / alpha.sqrt(),
        posterior_variance(schedule, t, s, variance),
    )
