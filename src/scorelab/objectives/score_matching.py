"""Score matching: learn s(x) = grad log p(x) without knowing it (seeds 000-002).

Each loss is per example, shape (B,), a half squared norm summed over dimensions:
  esm  ½‖s(x) − ∇log p(x)‖²                       (explicit: needs the true score; tests only)
  ism  ½‖s(x)‖² + div s(x)                         (Hyvärinen 2005; = esm − ½E‖∇log p‖², seed 001)
  ssm  ½‖s(x)‖² + vᵀ(∂s/∂x)v, E[vvᵀ] = I           (Song et al. 2019, variance-reduced form;
       the plain form has ½(vᵀs)² in place of ½‖s‖²)
On an SDE (processes/sde.py), with x_t = alpha_t x_0 + sigma_t eps and t ~ U[t_min, T]:
  dsm  λ(t) ½‖s(x_t, t) + eps / sigma_t‖²          (Vincent 2011: the target is ∇log q(x_t | x_0))
  tsm  λ(t) ½‖s(x_t, t) − ∇log p_0(x_0) / alpha_t‖²  (target score matching, seed 001 task 3:
       ∇log p_t(y) = E[∇log p_0(X_0) | X_t = y] / alpha_t for X_t = alpha_t X_0 + noise)
  ism, ssm on x_t at each t: noise-conditional, every level its own term (NCSN).
λ(t) is sigma_t² ("sigma2", Song & Ermon 2019), g(t)² ("likelihood", Song et al. 2021b) or 1.
All four have the same minimiser, the score of p_t; they differ by θ-independent constants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scorelab._tensor import append_dims, flat_sum, randn_like
from scorelab.divergence import divergence_exact, divergence_hutchinson, sample_probes
from scorelab.errors import ScorelabError

SCORE_OBJECTIVES: tuple[str, ...] = ("dsm", "ism", "ssm", "tsm")
WEIGHTINGS: tuple[str, ...] = ("sigma2", "likelihood", "none")
Score = Callable[[Tensor], Tensor]


def esm_loss(score_fn: Score, x: Tensor, true_score: Tensor) -> Tensor:
    """Explicit score matching ½‖s(x) − ∇log p(x)‖², (B,)."""
    return 0.5 * flat_sum((score_fn(x) - true_score) ** 2)


def ism_loss(score_fn: Score, x: Tensor) -> Tensor:
    """Implicit score matching ½‖s(x)‖² + div s(x) with the exact divergence, (B,).

    One backward pass per dimension (divergence_exact): for low dimension only.
    """
    s, div = divergence_exact(score_fn, x, create_graph=True)
    return 0.5 * flat_sum(s**2) + div


def ssm_loss(
    score_fn: Score,
    x: Tensor,
    *,
    probes: int = 1,
    distribution: str = "rademacher",
    variance_reduced: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sliced score matching, mean over probes of ½‖s‖² + vᵀ(∂s/∂x)v (or ½(vᵀs)² + ...), (B,)."""
    if probes < 1:
        raise ScorelabError(f"probes must be >= 1, got {probes}")
    v = sample_probes(
        (probes, *x.shape),
        distribution=distribution,
        generator=generator,
        dtype=x.dtype,
        device=x.device,
    )
    s, div = divergence_hutchinson(score_fn, x, v=v, create_graph=True)
    if variance_reduced:  # E_v[(vᵀs)²] = ‖s‖² in closed form
        return 0.5 * flat_sum(s**2) + div
    quad = torch.stack([flat_sum(vk * s) ** 2 for vk in v]).mean(0)
    return 0.5 * quad + div


def sample_times(sde, n: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """n times uniform on [t_min, T], float64: VE's alpha_bar_eq at t_min is 1 - 2e-8, which
    float32 rounds to 1."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=gen_device, dtype=torch.float64).to(device)
    return sde.t_min + u * (sde.T - sde.t_min)


def weight(sde, t: Tensor, weighting: str) -> Tensor:
    """λ(t): sigma_t², g(t)² or 1, shape (B,)."""
    if weighting == "sigma2":
        return sde.std(t) ** 2
    if weighting == "likelihood":
        return sde.diffusion(t) ** 2
    if weighting == "none":
        return torch.ones_like(t)
    raise ScorelabError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


def score_matching_loss(
    objective: str,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    *,
    sde,
    weighting: str = "sigma2",
    clean_score: Callable[[Tensor], Tensor] | None = None,
    probes: int = 1,
    distribution: str = "rademacher",
    variance_reduced: bool = True,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """λ(t) × the named objective at x_t ~ q(x_t | x_0), t ~ U[t_min, T] unless given, (B,).

    score_fn(x, t) is the model's score in the SDE's own coordinates; clean_score(x0) is
    ∇log p_0 (tsm only).
    """
    if objective not in SCORE_OBJECTIVES:
        raise ScorelabError(
            f"unknown objective {objective!r}; choose one of: {', '.join(SCORE_OBJECTIVES)}"
        )
    if t is None:
        t = sample_times(sde, x0.shape[0], generator=generator, device=x0.device)
    lam = weight(sde, t, weighting).to(x0.dtype)
    eps = randn_like(x0, generator)
    x_t = sde.marginal_sample(x0, t, eps)
    sigma = append_dims(sde.std(t).to(x0.dtype), x0.ndim)
    if objective == "dsm":
        # ½‖s + eps/sigma‖² = ½‖sigma s + eps‖² / sigma²: no 1/sigma blow-up before weighting
        return lam / sigma.flatten() ** 2 * 0.5 * flat_sum((sigma * score_fn(x_t, t) + eps) ** 2)
    if objective == "tsm":
        if clean_score is None:
            raise ScorelabError("tsm needs the clean score grad log p_0 (clean_score=)")
        alpha = append_dims(sde.mean_coeff(t).to(x0.dtype), x0.ndim)
        target = clean_score(x0).to(x0.dtype) / alpha
        return lam * 0.5 * flat_sum((score_fn(x_t, t) - target) ** 2)
    fn = lambda x: score_fn(x, t)  # noqa: E731
    if objective == "ism":
        return lam * ism_loss(fn, x_t)
    return lam * ssm_loss(
        fn,
        x_t,
        probes=probes,
        distribution=distribution,
        variance_reduced=variance_reduced,
        generator=generator,
    )


__all__ = [
    "SCORE_OBJECTIVES",
    "WEIGHTINGS",
    "esm_loss",
    "ism_loss",
    "sample_times",
    "score_matching_loss",
    "ssm_loss",
    "weight",
]
