"""The VAE's bounds (Kingma & Welling 2014; Burda et al. 2016), one value per example.

ELBO(x) = E_q(z|x)[log p(x|z)] - beta KL(q(z|x) || N(0, I)), the KL in closed form for a
diagonal Gaussian q and the expectation by the reparameterization z = mean + exp(log_var/2) e.
IWAE_k(x) = E[log (1/k) sum_i p(x, z_i) / q(z_i | x)], z_i ~ q: ELBO = IWAE_1 <= IWAE_k <= log p(x),
increasing in k. Both in nats per example; divide by d log 2 for bits per dimension.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from scorelab._tensor import flat_sum
from scorelab.errors import ScorelabError
from scorelab.nn.vae import VAE

LOG_2PI = math.log(2 * math.pi)
BIN = 2.0 / 255.0  # 8-bit levels in [-1, 1]


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, diag(exp(log_var))) || N(0, I)) = 1/2 sum(mean^2 + exp(log_var) - 1 - log_var)."""
    return 0.5 * flat_sum(mean**2 + log_var.exp() - 1.0 - log_var)


def _normal_log_prob(z: Tensor, mean: Tensor | float, log_var: Tensor | float) -> Tensor:
    log_var = torch.as_tensor(log_var, dtype=z.dtype, device=z.device)
    return -0.5 * flat_sum((z - mean) ** 2 * torch.exp(-log_var) + log_var + LOG_2PI)


def discretized_logistic_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """log P(x) per element for 8-bit data in [-1, 1] under a logistic discretized to 256 bins
    of width 2/255; the end bins take the tails (Salimans et al. 2017). Same shape as x."""
    centered = x - mean
    inv_s = torch.exp(-log_scale)
    plus, minus = inv_s * (centered + BIN / 2), inv_s * (centered - BIN / 2)
    log_cdf_plus = plus - F.softplus(plus)  # log sigmoid(plus), for the bin at -1
    log_sf_minus = -F.softplus(minus)  # log (1 - sigmoid(minus)), for the bin at 1
    # log(sigmoid(plus) - sigmoid(minus)) without cancellation
    log_delta = log_cdf_plus + torch.log(-torch.expm1(minus - plus)) - F.softplus(minus)
    inner = torch.where(x > 1 - BIN / 2, log_sf_minus, log_delta)
    return torch.where(x < -1 + BIN / 2, log_cdf_plus, inner)


def decoder_log_prob(vae: VAE, x: Tensor, params: Tensor) -> Tensor:
    """log p(x | z) summed over dimensions, (B,); params = vae.decode(z)."""
    if vae.likelihood == "gaussian":
        return _normal_log_prob(x, params[:, 0], 2 * vae.log_scale)
    if vae.likelihood == "logistic":
        log_scale = params[:, 1].clamp(min=-7.0)
        return flat_sum(discretized_logistic_log_prob(x, params[:, 0], log_scale))
    bce = F.binary_cross_entropy_with_logits(params[:, 0], (x + 1) / 2, reduction="none")
    return -flat_sum(bce)


def _check(vae: VAE, x: Tensor) -> None:
    if tuple(x.shape[1:]) != vae.shape:
        raise ScorelabError(f"data of shape {tuple(x.shape[1:])} for a VAE of shape {vae.shape}")
    if vae.likelihood == "bernoulli" and not ((x == -1) | (x == 1)).all():
        raise ScorelabError("the bernoulli decoder needs binary data in {-1, 1}")


def _reparameterize(mean: Tensor, log_var: Tensor, generator: torch.Generator | None) -> Tensor:
    e = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    return mean + torch.exp(0.5 * log_var) * e


def elbo(
    vae: VAE, x: Tensor, *, generator: torch.Generator | None = None, beta: float = 1.0
) -> Tensor:
    """One-sample reparameterized ELBO with the analytic KL, weighted by beta, (B,)."""
    _check(vae, x)
    mean, log_var = vae.encode(x)
    z = _reparameterize(mean, log_var, generator)
    return decoder_log_prob(vae, x, vae.decode(z)) - beta * gaussian_kl(mean, log_var)


def iwae_bound(
    vae: VAE, x: Tensor, k: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """The importance-weighted bound with k samples from q(z | x), (B,)."""
    if k < 1:
        raise ScorelabError(f"k must be >= 1, got {k}")
    _check(vae, x)
    mean, log_var = vae.encode(x)
    log_w = []
    for _ in range(k):
        z = _reparameterize(mean, log_var, generator)
        log_joint = decoder_log_prob(vae, x, vae.decode(z)) + _normal_log_prob(z, 0.0, 0.0)
        log_w.append(log_joint - _normal_log_prob(z, mean, log_var))
    return torch.logsumexp(torch.stack(log_w), dim=0) - math.log(k)


def vae_loss(
    vae: VAE, x: Tensor, generator: torch.Generator | None = None, *, beta: float = 1.0
) -> Tensor:
    """The training loss: the negative (beta-weighted) ELBO per example, (B,)."""
    return -elbo(vae, x, generator=generator, beta=beta)


@torch.no_grad()
def sample_vae(
    vae: VAE, n: int, *, generator: torch.Generator | None = None, z: Tensor | None = None
) -> Tensor:
    """Decode z ~ N(0, I) (or the given z) to the decoder's mean (its likeliest x), (n, *shape)."""
    device = next(vae.parameters()).device
    if z is None:
        z = torch.randn(n, vae.latent_dim, generator=generator).to(device)
    params = vae.decode(z)
    if vae.likelihood == "bernoulli":
        return torch.where(params[:, 0] > 0, 1.0, -1.0)
    return params[:, 0].clamp(-1, 1) if vae.likelihood == "logistic" else params[:, 0]
