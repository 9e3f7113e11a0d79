"""Gaussian mixtures whose noisy marginals, scores and eps are known exactly.

Data x_0 ~ sum_k w_k N(mu_k, diag(s_k^2)). Under the VP marginal x_t = a x_0 + sigma eps
(a^2 = alpha_bar_t, sigma^2 = 1 - alpha_bar_t) each component stays Gaussian:
N(a mu_k, a^2 s_k^2 + sigma^2), so log p_t, grad log p_t (the score) and the optimal
eps = -sigma * score are closed forms. Computed in float64, returned in the input's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.typing import ClassifierFn, CondEpsFn, EpsFn, Schedule, ScoreFn


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """weights (K,), means (K, d), variances (K,) isotropic or (K, d) diagonal."""

    weights: Tensor
    means: Tensor
    variances: Tensor

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        m = torch.as_tensor(self.means, dtype=torch.float64)
        v = torch.as_tensor(self.variances, dtype=torch.float64)
        if m.ndim != 2 or w.shape != (m.shape[0],):
            raise ScorelabError("means must be (K, d) and weights (K,)")
        if v.ndim == 1:
            v = v[:, None].expand_as(m)
        if v.shape != m.shape or (v <= 0).any() or (w <= 0).any():
            raise ScorelabError("variances must be positive, (K,) or (K, d); weights positive")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "variances", v.contiguous())

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def _component_log_probs(self, x: Tensor, alpha_bar: Tensor | float) -> tuple[Tensor, ...]:
        """log w_k + log N(x; a mu_k, a^2 s_k^2 + sigma^2) (B, K), and the per-component terms."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ScorelabError(f"x has {x.shape[1]} features, the mixture has {self.dim}")
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x.device)
        ab = ab.expand(x.shape[0]) if ab.ndim == 0 else ab.reshape(-1)
        a = ab.sqrt()[:, None, None]
        mean = a * self.means.to(x.device)  # (B, K, d)
        var = ab[:, None, None] * self.variances.to(x.device) + (1 - ab)[:, None, None]
        diff = x[:, None, :] - mean
        log_n = -0.5 * ((diff**2 / var) + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(self.weights.to(x.device)) + log_n, diff, var

    def log_prob(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """log p_t(x) of the noisy marginal with the given alpha_bar (1 = the data), (B,)."""
        lp, _, _ = self._component_log_probs(x, alpha_bar)
        return torch.logsumexp(lp, dim=1).to(x.dtype)

    def responsibilities(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """p(k | x_t = x), (B, K): the exact classifier of the mixture's components."""
        lp, _, _ = self._component_log_probs(x, alpha_bar)
        return torch.softmax(lp, dim=1).to(x.dtype)

    def score(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """grad log p_t(x) = sum_k p(k|x) (a mu_k - x) / var_k, shape of x."""
        lp, diff, var = self._component_log_probs(x, alpha_bar)
        r = torch.softmax(lp, dim=1)[:, :, None]
        return (-(r * diff / var).sum(1)).reshape(x.shape).to(x.dtype)

    def score_fn(self, schedule: Schedule) -> ScoreFn:
        """The exact noisy score as a score_fn(x, t) under schedule's marginals.

        For an SDE (processes/sde.py) x_t = alpha_t x_0 + sigma_t eps is first mapped to the
        VP view x~ = c x_t, c = input_scale(t), where grad_x log p_t(x) = c grad log p~(c x);
        a DiscreteSchedule has c = 1.
        """

        def score_fn(x: Tensor, t: Tensor) -> Tensor:
            c = schedule.input_scale(t).to(torch.float64).reshape((-1,) + (1,) * (x.ndim - 1))
            ab = schedule.alpha_bar(t).to(torch.float64)
            return (c * self.score(c * x.to(torch.float64), ab)).to(x.dtype)

        return score_fn

    def eps_fn(self, schedule: Schedule) -> EpsFn:
        """The exact optimal eps(x, t) = -sigma_t grad log p_t(x) (the same in the VP view)."""

        def eps_fn(x: Tensor, t: Tensor) -> Tensor:
            ab = schedule.alpha_bar(t).to(torch.float64)
            shape = (-1,) + (1,) * (x.ndim - 1)
            c = schedule.input_scale(t).to(torch.float64).reshape(shape)
            sigma = (1 - ab).sqrt().reshape(shape)
            return (-sigma * self.score(c * x.to(torch.float64), ab)).to(x.dtype)

        return eps_fn

    def classifier_fn(self, schedule: Schedule) -> ClassifierFn:
        """The exact noise-aware classifier: logits(x, t) = log p(k | x_t = x), (B, K)."""

        def classifier_fn(x: Tensor, t: Tensor) -> Tensor:
            lp, _, _ = self._component_log_probs(x, schedule.alpha_bar(t).to(torch.float64))
            return torch.log_softmax(lp, dim=1).to(x.dtype)

        return classifier_fn

    def component(self, k: int) -> GaussianMixture:
        """The k-th component alone: the exact class-conditional distribution p(x | y = k)."""
        if not 0 <= k < self.n_components:
            raise ScorelabError(f"component {k} out of range 0..{self.n_components - 1}")
        return GaussianMixture(torch.ones(1), self.means[k : k + 1], self.variances[k : k + 1])

    def cond_eps_fn(self, schedule: Schedule, null_label: int | None = None) -> CondEpsFn:
        """The exact class-conditional eps(x, t, y) = eps of component y; y = null_label (default
        n_components) gives the unconditional mixture's eps, as a classifier-free model's null."""
        null = self.n_components if null_label is None else null_label
        parts = [self.component(k).eps_fn(schedule) for k in range(self.n_components)]
        uncond = self.eps_fn(schedule)

        def eps_fn(x: Tensor, t: Tensor, y: Tensor) -> Tensor:
            out = torch.empty_like(x)
            for k, f in [*enumerate(parts), (null, uncond)]:
                m = y == k
                if m.any():
                    out[m] = f(x[m], t[m])
            return out

        return eps_fn

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """n samples (n, d) float64 and their component labels (n,)."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[k] + self.variances[k].sqrt() * z, k

    def entropy(self, n: int = 100_000, *, generator: torch.Generator | None = None) -> float:
        """Differential entropy -E[log p(x)] by Monte Carlo (nats)."""
        x, _ = self.sample(n, generator=generator)
        return float(-self.log_prob(x).mean())


def ring_mixture(
    n_modes: int = 8, radius: float = 2.0, std: float = 0.15, dim: int = 2
) -> GaussianMixture:
    """Equal-weight Gaussians on a circle in the first two coordinates."""
    angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
    means = torch.zeros(n_modes, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    return GaussianMixture(torch.ones(n_modes), means, torch.full((n_modes,), std**2))
