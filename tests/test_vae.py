"""The VAE's bounds against a linear-Gaussian model, where log p(x) and the posterior are exact."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from scorelab.errors import ScorelabError
from scorelab.nn.vae import VAE, conv_vae, mlp_vae
from scorelab.objectives.vae import (
    BIN,
    discretized_logistic_log_prob,
    elbo,
    gaussian_kl,
    iwae_bound,
    sample_vae,
    vae_loss,
)

D, L, SIGMA = 4, 2, 0.5


def _linear_gaussian(shift: float = 0.0):
    """p(z) = N(0, I), p(x|z) = N(W z + b, SIGMA^2 I), W with orthogonal columns, so the posterior
    N(A (x - b), S) is diagonal; the encoder is that posterior, its mean moved by shift."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(D, L, generator=g, dtype=torch.float64))
    W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    S = torch.linalg.inv(torch.eye(L, dtype=torch.float64) + W.T @ W / SIGMA**2)
    A = S @ W.T / SIGMA**2
    enc, dec = nn.Linear(D, 2 * L).double(), nn.Linear(L, D).double()
    with torch.no_grad():
        enc.weight.zero_()
        enc.weight[:L] = A
        enc.bias[:L] = -A @ b + shift
        enc.bias[L:] = torch.log(torch.diagonal(S))
        dec.weight.copy_(W)
        dec.bias.copy_(b)
    vae = VAE(enc, dec, (D,), L, "gaussian").double()
    with torch.no_grad():
        vae.log_scale.fill_(math.log(SIGMA))
    marginal = torch.distributions.MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(D))
    return vae, marginal, S


def test_gaussian_kl_matches_torch_distributions(generator):
    mean = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    log_var = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    torch.testing.assert_close(gaussian_kl(mean, log_var), expected)


@torch.no_grad()
def test_bounds_with_the_exact_posterior_are_log_p_x(generator):
    """With q = p(z|x) every importance weight p(x, z) / q(z|x) equals p(x): IWAE_k is log p(x)
    for every draw; the analytic-KL ELBO is log p(x) on average."""
    vae, marginal, _ = _linear_gaussian()
    torch.manual_seed(1)
    x = marginal.sample((2000,))
    for k in (1, 7):
        torch.testing.assert_close(
            iwae_bound(vae, x, k, generator=generator), marginal.log_prob(x), rtol=1e-10, atol=1e-10
        )
    e = elbo(vae, x, generator=generator) - marginal.log_prob(x)
    assert abs(float(e.mean())) < 4 * float(e.std()) / math.sqrt(len(e))


@torch.no_grad()
def test_elbo_le_iwae_le_log_p_and_the_elbo_gap_is_the_posterior_kl(generator):
    """E[ELBO] = log p(x) - KL(q(z|x) || p(z|x)); IWAE_k rises with k towards log p(x)."""
    vae, marginal, S = _linear_gaussian(shift=0.8)
    torch.manual_seed(0)
    x = marginal.sample((3000,))
    log_p = marginal.log_prob(x)
    # both Gaussians share the covariance S; the means differ by the shift
    gap = 0.5 * (0.8**2) * torch.diagonal(torch.linalg.inv(S)).sum()
    e = elbo(vae, x, generator=generator) - log_p
    se = float(e.std()) / math.sqrt(len(e))
    assert abs(float(e.mean()) + float(gap)) < 4 * se
    means = []
    for k in (1, 5, 50):
        w = iwae_bound(vae, x, k, generator=generator) - log_p
        means.append((float(w.mean()), float(w.std()) / math.sqrt(len(w))))
    (m1, s1), (m5, s5), (m50, s50) = means
    assert m1 + 3 * s1 < m5 < m50 - 3 * s50
    assert m50 < 3 * s50  # a lower bound of log p(x) on average


def test_discretized_logistic_sums_to_one_over_the_256_levels():
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    for mean, log_scale in ((0.0, -3.0), (0.97, -5.0), (-0.4, 0.5), (1.3, -6.5)):
        lp = discretized_logistic_log_prob(
            levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale)
        )
        assert float(torch.logsumexp(lp, 0)) == pytest.approx(0.0, abs=1e-9)
    assert pytest.approx(float(levels[1] - levels[0])) == BIN


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic", "bernoulli"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 28, 28)])
def test_conv_vae_shapes(likelihood, shape, generator):
    vae = conv_vae(shape, latent_dim=5, width=8, likelihood=likelihood)
    x = torch.randint(0, 2, (3, *shape), generator=generator).float() * 2 - 1
    assert elbo(vae, x, generator=generator).shape == (3,)
    assert sample_vae(vae, 4, generator=generator).shape == (4, *shape)


def test_tiny_vae_trains_on_the_ring(generator):
    from scorelab.data import load_dataset

    torch.manual_seed(0)
    data = load_dataset("ring", 2000, seed=0).float()
    vae = mlp_vae(2, latent_dim=2, width=64)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(400):
        idx = torch.randint(0, len(data), (256,), generator=generator)
        loss = vae_loss(vae, data[idx], generator).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert math.isfinite(last) and last < first - 1.0, (first, last)


def test_bad_vae_input():
    vae = mlp_vae(3, likelihood="bernoulli")
    with pytest.raises(ScorelabError, match="shape"):
        elbo(vae, torch.zeros(2, 4))
    with pytest.raises(ScorelabError, match="binary"):
        elbo(vae, torch.full((2, 3), 0.5))
    with pytest.raises(ScorelabError, match="k must be"):
        iwae_bound(vae, torch.ones(2, 3), 0)
    with pytest.raises(ValueError, match="decoder"):
        mlp_vae(3, likelihood="poisson")


@pytest.mark.parametrize("shift", [0.0, 0.8])
def test_aggregate_posterior_kl_of_the_linear_gaussian_model(shift, generator):
    """With the exact posterior the aggregate posterior is the prior (KL 0); moving every mean
    by `shift` per latent dimension makes it N(shift, I): KL = L shift^2 / 2."""
    from scorelab.evaluation.latent import aggregate_posterior, aggregate_posterior_kl

    vae, marginal, _ = _linear_gaussian(shift=shift)
    torch.manual_seed(3)
    mean, log_var = aggregate_posterior(vae, marginal.sample((3000,)))
    kl = aggregate_posterior_kl(mean, log_var, n_samples=4000, generator=generator)
    assert kl == pytest.approx(L * shift**2 / 2, abs=0.05)


def _log_p_x_given_z_by_hand(likelihood, x, params, log_scale):
    """log p(x | z) summed per example from torch.distributions and the logistic CDF: a
    Gaussian with the shared scale, the 256-level discretized logistic (bins of width 2/255,
    the end bins taking the tails), or a Bernoulli on (x + 1) / 2."""
    mean = params[:, 0]
    if likelihood == "gaussian":
        lp = torch.distributions.Normal(mean, log_scale.exp()).log_prob(x)
    elif likelihood == "bernoulli":
        lp = torch.distributions.Bernoulli(logits=mean).log_prob((x + 1) / 2)
    else:
        s = params[:, 1].exp()
        upper = torch.where(x > 0.999, torch.ones_like(x), torch.sigmoid((x - mean + BIN / 2) / s))
        lower = torch.where(
            x < -0.999, torch.zeros_like(x), torch.sigmoid((x - mean - BIN / 2) / s)
        )
        lp = torch.log(upper - lower)
    return lp.flatten(1).sum(1)


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic", "bernoulli"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_conv_vae_elbo_equals_its_parts_computed_by_hand(likelihood, shape):
    """The conv VAE in float64 on 4 images of its likelihood's kind: elbo with a seeded
    generator equals log p(x | z) - KL(q(z|x) || N(0, I)) built here from the encoder's output
    (mean, log-variance = its two halves), z = mean + exp(log_var / 2) e with the same e, the
    decoder's output and torch.distributions (the KL too), to 1e-9; the 1-sample IWAE is the
    ELBO with the Monte Carlo KL, log p(x|z) + log N(z; 0, I) - log q(z|x), for the same z; and
    sample_vae returns the decoder's mean (clamped for logistic, its sign for bernoulli).
    Catches the encoder's halves swapped, a log-variance used as a log-std, the logistic's
    scale taken from the mean channel or the Gaussian's scale squared twice, and a sign of the
    KL."""
    torch.manual_seed(0)
    vae = conv_vae(shape, latent_dim=5, width=8, likelihood=likelihood).double()
    g = torch.Generator().manual_seed(1)
    if likelihood == "bernoulli":
        x = torch.randint(0, 2, (4, *shape), generator=g).double() * 2 - 1
    else:  # 8-bit levels in [-1, 1], the ends included
        x = torch.randint(0, 256, (4, *shape), generator=g).double() / 127.5 - 1
        x[0].fill_(-1.0)
        x[1].fill_(1.0)
    with torch.no_grad():
        got = elbo(vae, x, generator=torch.Generator().manual_seed(2))
        h = vae.encoder(x)
        mean, log_var = h[:, :5], h[:, 5:]
        e = torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        z = mean + (0.5 * log_var).exp() * e
        log_px = _log_p_x_given_z_by_hand(likelihood, x, vae.decode(z), vae.log_scale)
        q = torch.distributions.Normal(mean, (0.5 * log_var).exp())
        prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
        kl = torch.distributions.kl_divergence(q, prior).sum(1)
        torch.testing.assert_close(got, log_px - kl, rtol=1e-9, atol=1e-9)
        iwae = iwae_bound(vae, x, 1, generator=torch.Generator().manual_seed(2))
        mc = log_px + prior.log_prob(z).sum(1) - q.log_prob(z).sum(1)
        torch.testing.assert_close(iwae, mc, rtol=1e-9, atol=1e-9)
        params = vae.decoder(z).reshape(4, vae.params_per_dim, *shape)
        expected = {
            "gaussian": params[:, 0],
            "logistic": params[:, 0].clamp(-1, 1),
            "bernoulli": torch.where(params[:, 0] > 0, 1.0, -1.0),
        }[likelihood]
        torch.testing.assert_close(sample_vae(vae, 4, z=z), expected, check_dtype=False)
