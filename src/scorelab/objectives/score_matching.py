"""Score matching: learn s(x) = grad log p(x) without knowing it (docs/theory.md §§21-22).

Each loss is per example, shape (B,), a half squared norm summed over dimensions:
  esm  ½‖s(x) − ∇log p(x)‖²                       (explicit: needs the true score; tests only)
  ism  ½‖s(x)‖² + div s(x)                         (Hyvärinen 2005; = esm − ½E‖∇log p‖²)
  ssm  ½‖s(x)‖² + vᵀ(∂s/∂x)v, E[vvᵀ] = I           (Song et al. 2019, variance-reduced form;
       the plain form has ½(vᵀs)² in place of ½‖s‖²)
On an SDE (processes/sde.py), with x_t = alpha_t x_0 + sigma_t eps and t ~ U[t_min, T]:
  dsm  λ(t) ½‖s(x_t, t) + eps / sigma_t‖²          (Vincent 2011: the target is ∇log q(x_t | x_0))
  tsm  λ(t) ½‖s(x_t, t) − target‖², target = w_t ∇log p_0(x_0) / alpha_t − (1 − w_t) eps / sigma_t
       (target score matching, De Bortoli et al. 2024: ∇log p_t(y) = E[∇log p_0(X_0) | X_t = y]
       / alpha_t for X_t = alpha_t X_0 + noise, and = E[−eps / sigma_t | X_t = y] (dsm), so
       every blend w_t has the noisy score as its conditional mean). w_t = 1 is plain tsm,
       whose target's variance grows like sigma_t² at high noise; the default "snr" blend
       w_t = alpha_t² s² / (alpha_t² s² + sigma_t²) makes the target exact, of zero variance, for
       Gaussian data N(m, s² I): tsm at low noise, dsm at high noise (docs/theory.md §22). For
       other data s is the local scale sqrt(d / E‖∇log p_0‖²) (fisher_scale; s for a Gaussian,
       about the modes' width for a mixture of narrow modes).
  ism, ssm on x_t at each t: noise-conditional, every level its own term (NCSN).
λ(t) is sigma_t² ("sigma2", Song & Ermon 2019), g(t)² ("likelihood", Song et al. 2021b), 1,
EDM's λ(sigma) ("edm": a unit weight on EDM's preconditioned output F, Karras et al. 2022) or
b_t² sigma_t² with b_t = g² / (2 sigma_t) ("velocity": dsm is then ½‖u_θ − (alpha'_t x_0 +
sigma'_t eps)‖², flow matching's loss, Lipman et al. 2023).
Times come from the process (SDE.training_times): uniform on [t_min, T], EDM's log-normal
sigma, or flow's uniform / logit-normal t.
All of them have the same minimiser, the score of p_t; they differ by θ-independent constants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from scorelab._tensor import append_dims, flat_sum, randn_like
from scorelab.errors import ScorelabError
from scorelab.numerics.divergence import divergence_exact, divergence_hutchinson, sample_probes

SCORE_OBJECTIVES: tuple[str, ...] = ("dsm", "ism", "ssm", "tsm")
WEIGHTINGS: tuple[str, ...] = ("sigma2", "likelihood", "none", "edm", "velocity")
# w_t of the tsm target: snr (variance-optimal for Gaussian data), switch (tsm where
# alpha_t s > sigma_t, dsm elsewhere), none (plain tsm at every t)
TSM_BLENDS: tuple[str, ...] = ("snr", "switch", "none")
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
    """n training times of the process, float64 (VE's alpha_bar_eq at t_min is 1 - 2e-8,
    which float32 rounds to 1): uniform on [t_min, T] unless the process draws its own."""
    return sde.training_times(n, generator=generator, device=device)


def weight(sde, t: Tensor, weighting: str) -> Tensor:
    """λ(t) of dsm's ½‖s + eps/sigma_t‖², shape (B,), float64 for float64 t:
    sigma2: sigma_t²; likelihood: g(t)²; none: 1;
    edm: λ_EDM(s) sigma_t⁴ / alpha_t² = (s² + sd²) sigma_t² / sd² with s = sigma_t / alpha_t, sd =
      sigma_data, since ‖D − x_0‖² = sigma_t⁴ / alpha_t² ‖s_θ + eps/sigma_t‖² and λ_EDM(s) =
      (s² + sd²) / (s sd)²: ½ λ_EDM ‖D − x_0‖², a unit weight on EDM's F;
    velocity: b² sigma_t², b = g² / (2 sigma_t), since u − u_θ = b sigma_t (s_θ + eps / sigma_t)."""
    if weighting == "sigma2":
        return sde.std(t) ** 2
    if weighting == "likelihood":
        return sde.diffusion(t) ** 2
    if weighting == "none":
        return torch.ones_like(t)
    if weighting == "edm":
        alpha, sigma, sd = sde.mean_coeff(t), sde.std(t), float(sde.sigma_data)
        return ((sigma / alpha) ** 2 + sd**2) * sigma**2 / sd**2
    if weighting == "velocity":
        _, b = sde.velocity_coefficients(t)
        return (b * sde.std(t).to(b.dtype)) ** 2
    raise ScorelabError(f"unknown weighting {weighting!r}; choose one of: {', '.join(WEIGHTINGS)}")


def tsm_weight(sde, t: Tensor, blend: str = "snr", data_std: float = 1.0) -> Tensor:
    """w_t, the share of the clean-score target in the tsm blend, shape (B,), float64."""
    alpha_s2 = (sde.mean_coeff(t).to(torch.float64) * data_std) ** 2
    sigma2 = sde.std(t).to(torch.float64) ** 2
    if blend == "snr":
        return alpha_s2 / (alpha_s2 + sigma2)
    if blend == "switch":
        return (alpha_s2 > sigma2).to(torch.float64)
    if blend == "none":
        return torch.ones_like(alpha_s2)
    raise ScorelabError(f"unknown tsm blend {blend!r}; choose one of: {', '.join(TSM_BLENDS)}")


def fisher_scale(clean_score: Callable[[Tensor], Tensor], x0: Tensor) -> float:
    """sqrt(d / E‖∇log p_0(x_0)‖²), the data's local length scale: s for N(m, s² I), about the
    components' scale for a mixture of narrow modes; the tsm blend's data_std."""
    fisher = float(flat_sum(clean_score(x0).double() ** 2).mean())
    d = x0[0].numel()
    if not fisher > 0 or not torch.isfinite(torch.tensor(fisher)):
        raise ScorelabError(f"the clean score's mean squared norm is {fisher:g}; need a finite > 0")
    return (d / fisher) ** 0.5


def tsm_target(
    clean_score: Callable[[Tensor], Tensor],
    x0: Tensor,
    eps: Tensor,
    t: Tensor,
    *,
    sde,
    blend: str = "snr",
    data_std: float = 1.0,
) -> Tensor:
    """The tsm regression target w_t ∇log p_0(x_0) / alpha_t − (1 − w_t) eps / sigma_t for
    x_t = alpha_t x_0 + sigma_t eps, shape of x0; its mean given x_t is ∇log p_t(x_t)."""
    w = tsm_weight(sde, t, blend, data_std)
    alpha = sde.mean_coeff(t).to(torch.float64)
    sigma = sde.std(t).to(torch.float64)
    a = append_dims((w / alpha).to(x0.dtype), x0.ndim)
    # (1 - w) / sigma = sigma / (alpha² s² + sigma²) for "snr": bounded as sigma -> 0
    b = append_dims(((1 - w) / sigma).to(x0.dtype), x0.ndim)
    return a * clean_score(x0).to(x0.dtype) - b * eps


def score_matching_loss(
    objective: str,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    *,
    sde,
    weighting: str = "sigma2",
    clean_score: Callable[[Tensor], Tensor] | None = None,
    tsm_blend: str = "snr",
    data_std: float = 1.0,
    probes: int = 1,
    distribution: str = "rademacher",
    variance_reduced: bool = True,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """λ(t) × the named objective at x_t ~ q(x_t | x_0), t from the process unless given, (B,).

    score_fn(x, t) is the model's score in the SDE's own coordinates; clean_score(x0) is
    ∇log p_0 (tsm only; tsm_blend and data_std set its blend with dsm, see tsm_target).
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
        target = tsm_target(clean_score, x0, eps, t, sde=sde, blend=tsm_blend, data_std=data_std)
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
    "TSM_BLENDS",
    "WEIGHTINGS",
    "esm_loss",
    "fisher_scale",
    "ism_loss",
    "sample_times",
    "score_matching_loss",
    "ssm_loss",
    "tsm_target",
    "tsm_weight",
    "weight",
]
