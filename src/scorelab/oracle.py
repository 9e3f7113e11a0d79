"""Gaussian mixtures whose noisy marginals, scores and eps are known exactly.

Data x_0 ~ sum_k w_k N(mu_k, S_k), S_k = diag(s_k^2) or a full covariance U_k diag(l_k) U_k^T.
Under the VP marginal x_t = a x_0 + sigma eps (a^2 = alpha_bar_t, sigma^2 = 1 - alpha_bar_t)
each component stays Gaussian: N(a mu_k, a^2 S_k + sigma^2 I), which for a full covariance is
U_k diag(a^2 l_k + sigma^2) U_k^T (one eigendecomposition serves every alpha_bar), so log p_t,
grad log p_t (the score) and the optimal eps = -sigma * score are closed forms. A linear-Gaussian
observation y = A x + sigma_y n turns the mixture into another one (`posterior`).
Computed in float64, returned in the input's dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from scorelab.errors import ScorelabError
from scorelab.processes.parameterization import denoiser_from_eps, process_from_eps
from scorelab.typing import ClassifierFn, CondEpsFn, EpsFn, ModelFn, Schedule, ScoreFn

# Eigenvalues below this fraction of a covariance's largest are zero when allow_singular
# (scipy.stats.multivariate_normal's cut-off for float64: 1e6 machine epsilons).
_SINGULAR_RTOL = 1e6 * torch.finfo(torch.float64).eps


@dataclass(frozen=True, eq=False)
class GaussianMixture:
    """weights (K,), means (K, d), variances (K,) isotropic, (K, d) diagonal or (K, d, d) full.

    A full covariance must be symmetric positive definite, or positive semi-definite with
    allow_singular=True (eigenvalues below 1e6 machine epsilons of the largest become 0; such a
    mixture samples and has noisy scores for alpha_bar < 1, but no density at alpha_bar = 1).
    Full covariances are stored with their eigendecomposition S_k = U_k diag(l_k) U_k^T:
    eigvals (K, d) and eigvecs (K, d, d), both None for a diagonal mixture.
    """

    weights: Tensor
    means: Tensor
    variances: Tensor
    allow_singular: bool = False
    eigvals: Tensor | None = field(init=False, default=None, repr=False)
    eigvecs: Tensor | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        m = torch.as_tensor(self.means, dtype=torch.float64)
        v = torch.as_tensor(self.variances, dtype=torch.float64)
        if m.ndim != 2 or w.shape != (m.shape[0],):
            raise ScorelabError("means must be (K, d) and weights (K,)")
        if v.ndim == 3:
            self._set_full(w, m, v)
            return
        if v.ndim == 1:
            v = v[:, None].expand_as(m)
        if v.shape != m.shape or (v <= 0).any() or (w <= 0).any():
            raise ScorelabError("variances must be positive, (K,) or (K, d); weights positive")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "variances", v.contiguous())

    def _set_full(self, w: Tensor, m: Tensor, v: Tensor) -> None:
        """Check (K, d, d) covariances (symmetric, positive (semi-)definite); store U and l."""
        k, d = m.shape
        if v.shape != (k, d, d) or not (w > 0).all():
            raise ScorelabError(
                f"full covariances must be (K, d, d) = {(k, d, d)}, got "
                f"{tuple(v.shape)}; weights positive"
            )
        if not (torch.isfinite(v).all() and torch.isfinite(m).all()):
            raise ScorelabError("means and covariances must be finite")
        scale = v.diagonal(dim1=-2, dim2=-1).abs().amax()
        if not torch.allclose(v, v.mT, rtol=1e-10, atol=1e-12 * float(scale)):
            raise ScorelabError("covariances must be symmetric")
        v = (v + v.mT) / 2
        l, u = torch.linalg.eigh(v)
        if self.allow_singular:
            cut = _SINGULAR_RTOL * l.abs().amax(-1, keepdim=True)
            bad = (l < -cut).any(-1) | (l[:, -1] <= 0)
            l = torch.where(l < cut, torch.zeros_like(l), l)
            what = "positive semi-definite"
        else:
            bad = (torch.linalg.cholesky_ex(v).info != 0) | (l <= 0).any(-1)
            what = "positive definite (allow_singular=True accepts semi-definite ones)"
        if bad.any():
            raise ScorelabError(f"covariance {int(bad.nonzero()[0])} is not {what}")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "variances", v.contiguous())
        object.__setattr__(self, "eigvals", l.contiguous())
        object.__setattr__(self, "eigvecs", u.contiguous())

    @property
    def full(self) -> bool:
        """True for (K, d, d) covariances, False for diagonal ones."""
        return self.variances.ndim == 3

    @property
    def covariances(self) -> Tensor:
        """The covariances as (K, d, d) matrices, diagonal or full."""
        return self.variances if self.full else torch.diag_embed(self.variances)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def _component_log_probs(self, x: Tensor, alpha_bar: Tensor | float) -> tuple[Tensor, ...]:
        """log w_k + log N(x; a mu_k, a^2 S_k + sigma^2 I) (B, K), and the per-component terms:
        x - a mu_k and the variances (B, K, d), in each component's eigenbasis if full."""
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        if x.shape[1] != self.dim:
            raise ScorelabError(f"x has {x.shape[1]} features, the mixture has {self.dim}")
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x.device)
        ab = ab.expand(x.shape[0]) if ab.ndim == 0 else ab.reshape(-1)
        if self.full:
            return self._full_log_probs(x, ab)
        a = ab.sqrt()[:, None, None]
        mean = a * self.means.to(x.device)  # (B, K, d)
        var = ab[:, None, None] * self.variances.to(x.device) + (1 - ab)[:, None, None]
        diff = x[:, None, :] - mean
        log_n = -0.5 * ((diff**2 / var) + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(self.weights.to(x.device)) + log_n, diff, var

    def _full_log_probs(self, x: Tensor, ab: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The full-covariance case: z = U_k^T (x - a mu_k), var = a^2 l_k + sigma^2 (B, K, d)."""
        u, l = self.eigvecs.to(x.device), self.eigvals.to(x.device)
        mean_rot = torch.einsum("ki,kij->kj", self.means.to(x.device), u)
        z = torch.einsum("bi,kij->bkj", x, u) - ab.sqrt()[:, None, None] * mean_rot
        var = ab[:, None, None] * l + (1 - ab)[:, None, None]
        if not (var > 0).all():
            raise ScorelabError("a singular covariance has no density at alpha_bar = 1")
        log_n = -0.5 * ((z**2 / var) + torch.log(2 * math.pi * var)).sum(-1)
        return torch.log(self.weights.to(x.device)) + log_n, z, var

    def log_prob(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """log p_t(x) of the noisy marginal with the given alpha_bar (1 = the data), (B,)."""
        lp, _, _ = self._component_log_probs(x, alpha_bar)
        return torch.logsumexp(lp, dim=1).to(x.dtype)

    def responsibilities(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """p(k | x_t = x), (B, K): the exact classifier of the mixture's components."""
        lp, _, _ = self._component_log_probs(x, alpha_bar)
        return torch.softmax(lp, dim=1).to(x.dtype)

    def score(self, x: Tensor, alpha_bar: Tensor | float = 1.0) -> Tensor:
        """grad log p_t(x) = sum_k p(k|x) (a^2 S_k + sigma^2 I)^-1 (a mu_k - x), shape of x."""
        lp, diff, var = self._component_log_probs(x, alpha_bar)
        r = torch.softmax(lp, dim=1)[:, :, None]
        if self.full:  # diff and var are in each eigenbasis: rotate back with U_k
            g = torch.einsum("kij,bkj->bi", self.eigvecs.to(x.device), r * diff / var)
            return (-g).reshape(x.shape).to(x.dtype)
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

    def denoiser_fn(self, schedule: Schedule) -> ModelFn:
        """The exact denoiser D_t(x) = E[x_0 | x_t = x] (Tweedie; EDM's D), on any process."""
        return denoiser_from_eps(self.eps_fn(schedule), schedule)

    def velocity_fn(self, schedule: Schedule) -> ModelFn:
        """The exact velocity u(x, t) = E[alpha'_t x_0 + sigma'_t eps | x_t = x] = f(t) x +
        (g(t)^2 / (2 sigma_t)) E[eps | x]: flow matching's minimiser, the PF-ODE's drift, for
        any (alpha_t, sigma_t) (processes/sde.py; a DDPM schedule: its VP-SDE)."""
        eps_fn = self.eps_fn(schedule)

        def velocity_fn(x: Tensor, t: Tensor) -> Tensor:
            return process_from_eps(eps_fn(x, t), "velocity", x, t, schedule)

        return velocity_fn

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
        v = self.variances[k : k + 1]
        return GaussianMixture(torch.ones(1), self.means[k : k + 1], v, self.allow_singular)

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
        if self.full:  # x = mu_k + U_k diag(sqrt(l_k)) z, one component at a time (memory)
            x = torch.empty_like(z)
            for j in range(self.n_components):
                m = k == j
                x[m] = self.means[j] + (z[m] * self.eigvals[j].sqrt()) @ self.eigvecs[j].T
            return x, k
        return self.means[k] + self.variances[k].sqrt() * z, k

    def entropy(self, n: int = 100_000, *, generator: torch.Generator | None = None) -> float:
        """Differential entropy -E[log p(x)] by Monte Carlo (nats)."""
        x, _ = self.sample(n, generator=generator)
        return float(-self.log_prob(x).mean())

    def posterior(self, A: Any, y: Tensor, sigma_y: float) -> GaussianMixture:
        """p(x | y) for one observation y = A x + sigma_y n, n ~ N(0, I): a full-covariance mixture.

        With G_k = A S_k A^T + sigma_y^2 I and K_k = S_k A^T G_k^-1 (Gaussian conditioning):
        mu_k' = mu_k + K_k (y - A mu_k), S_k' = S_k - K_k A S_k and
        w_k' prop. to w_k N(y; A mu_k, G_k). This equals (S_k^-1 + A^T A / sigma_y^2)^-1 for
        sigma_y > 0 and stays valid at sigma_y = 0 when A S_k A^T is invertible (A of full row
        rank); S_k' is then singular and the result has allow_singular=True.
        A: an (m, d) matrix or an operator with matrix(d) (scorelab.operators). y: one
        observation with m entries, (m,) or the operator's out_shape (flattened).
        """
        d = self.dim
        a = A.matrix(d) if callable(getattr(A, "matrix", None)) else A
        a = torch.as_tensor(a, dtype=torch.float64)
        if a.ndim != 2 or a.shape[1] != d:
            raise ScorelabError(f"A must be (m, {d}) for this mixture, got {tuple(a.shape)}")
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if y.shape[0] != a.shape[0]:
            raise ScorelabError(
                f"y has {y.shape[0]} entries, A has {a.shape[0]} rows (one "
                "observation y of shape (m,) is expected)"
            )
        if not (torch.isfinite(y).all() and torch.isfinite(a).all()):
            raise ScorelabError("y and A must be finite")
        sigma_y = float(sigma_y)
        if not (math.isfinite(sigma_y) and sigma_y >= 0):
            raise ScorelabError(f"sigma_y must be finite and >= 0, got {sigma_y}")
        s = self.covariances  # (K, d, d)
        a_s = a @ s  # (K, m, d): A S_k
        g = a_s @ a.T + sigma_y**2 * torch.eye(a.shape[0], dtype=torch.float64)
        chol, info = torch.linalg.cholesky_ex(g)
        if (info != 0).any():
            raise ScorelabError(
                "A S A^T + sigma_y^2 I is singular: with sigma_y = 0 the rows of "
                "A must be linearly independent"
            )
        resid = y - self.means @ a.T  # (K, m): y - A mu_k
        gain_t = torch.cholesky_solve(a_s, chol)  # (K, m, d): G_k^-1 A S_k = K_k^T
        means = self.means + (gain_t.mT @ resid[:, :, None])[..., 0]
        cov = s - a_s.mT @ gain_t
        white = torch.linalg.solve_triangular(chol, resid[:, :, None], upper=False)[..., 0]
        log_evidence = -0.5 * (
            (white**2).sum(-1)
            + 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)
            + a.shape[0] * math.log(2 * math.pi)
        )
        logits = torch.log(self.weights) + log_evidence
        # floor: a component 700 nats less likely than the best keeps a tiny positive weight
        w = torch.softmax(logits, 0).clamp_min(torch.finfo(torch.float64).tiny)
        return GaussianMixture(w, means, (cov + cov.mT) / 2, allow_singular=sigma_y == 0)


def ring_mixture(
    n_modes: int = 8, radius: float = 2.0, std: float = 0.15, dim: int = 2
) -> GaussianMixture:
    """Equal-weight Gaussians on a circle in the first two coordinates."""
    angles = torch.arange(n_modes, dtype=torch.float64) * 2 * math.pi / n_modes
    means = torch.zeros(n_modes, dim, dtype=torch.float64)
    means[:, 0], means[:, 1] = radius * torch.cos(angles), radius * torch.sin(angles)
    return GaussianMixture(torch.ones(n_modes), means, torch.full((n_modes,), std**2))
