"""A diagnostic for the VAE: does the aggregate posterior cover the prior (docs/theory.md §27)?

The aggregate posterior q(z) = (1/n) sum_i q(z | x_i) is what the decoder was trained on;
sampling feeds it z ~ p(z) = N(0, I) instead. Where KL(q(z) || p(z)) is large, prior samples
land where the decoder has seen little, and their decodings are poor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab.nn.vae import VAE


@torch.no_grad()
def aggregate_posterior(vae: VAE, x: Tensor) -> tuple[Tensor, Tensor]:
    """The n components of q(z) = (1/n) sum_i N(mean_i, diag(var_i)): (mean, log_var), (n, L)."""
    return vae.encode(x)


@torch.no_grad()
def sample_aggregate_posterior(
    mean: Tensor, log_var: Tensor, n: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """n draws z ~ q(z): a component uniformly, then its Gaussian."""
    k = torch.randint(0, mean.shape[0], (n,), generator=generator)
    e = torch.randn(n, mean.shape[1], generator=generator, dtype=mean.dtype)
    return mean[k] + torch.exp(0.5 * log_var[k]) * e


@torch.no_grad()
def aggregate_posterior_kl(
    mean: Tensor,
    log_var: Tensor,
    *,
    n_samples: int = 2000,
    generator: torch.Generator | None = None,
    chunk: int = 512,
) -> float:
    """KL(q(z) || N(0, I)) = E_q[log q(z) - log p(z)] by Monte Carlo, in nats.

    log q(z) is the exact log-density of the n-component mixture (logsumexp over components);
    the estimate is consistent in n_samples for the given components.
    """
    z = sample_aggregate_posterior(mean, log_var, n_samples, generator=generator)
    d = mean.shape[1]
    inv_var = torch.exp(-log_var)
    log_norm = -0.5 * (log_var.sum(1) + d * math.log(2 * math.pi))  # (n,)
    total = 0.0
    for zc in z.split(chunk):
        quad = (((zc[:, None, :] - mean[None]) ** 2) * inv_var[None]).sum(-1)  # (c, n)
        log_q = torch.logsumexp(log_norm[None] - 0.5 * quad, dim=1) - math.log(mean.shape[0])
        log_p = -0.5 * (zc**2).sum(1) - 0.5 * d * math.log(2 * math.pi)
        total += float((log_q - log_p).sum())
    return total / n_samples


@torch.no_grad()
def prior_coverage(
    mean: Tensor, log_var: Tensor, *, n: int = 1000, generator: torch.Generator | None = None
) -> dict[str, float]:
    """How far q(z) is from p(z): the KL, and the RBF MMD between n draws of each beside its
    floor (the MMD between two independent n-draws of p(z), what a perfect match scores)."""
    from scorelab.evaluation.metrics import mmd_rbf

    kl = aggregate_posterior_kl(mean, log_var, n_samples=n, generator=generator)
    q = sample_aggregate_posterior(mean, log_var, n, generator=generator)
    p = torch.randn(n, mean.shape[1], generator=generator, dtype=mean.dtype)
    p2 = torch.randn(n, mean.shape[1], generator=generator, dtype=mean.dtype)
    h = float(torch.cdist(q.double(), p.double()).median()) or 1.0  # one kernel for both
    mmd, floor = mmd_rbf(q, p, bandwidth=h), mmd_rbf(p2, p, bandwidth=h)
    return {"kl": kl, "mmd": mmd, "mmd_floor": floor, "n": n}
