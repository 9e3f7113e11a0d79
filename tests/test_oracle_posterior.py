"""Full-covariance mixtures and the exact posterior under y = A x + sigma_y n, checked against
the diagonal oracle, autograd, the textbook Gaussian formulas, Bayes' rule and importance
sampling."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.errors import ScorelabError
from scorelab.operators import Mask, RandomProjection
from scorelab.oracle import GaussianMixture
from scorelab.processes import make_schedule


def _spd(k, d, g):
    """k random symmetric positive definite (d, d) matrices."""
    l = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    return l @ l.mT / d + 0.1 * torch.eye(d, dtype=torch.float64)


def _full_mixture(g, k=3, d=4):
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(
        w, 2 * torch.randn(k, d, generator=g, dtype=torch.float64), _spd(k, d, g)
    )


def _mvn_mixture_log_prob(w, means, covs, x):
    """log sum_k w_k N(x; means_k, covs_k) by torch.distributions: x (B, d), means (B|1, K, d)."""
    mvn = torch.distributions.MultivariateNormal(means, covariance_matrix=covs)
    return torch.logsumexp(torch.log(w) + mvn.log_prob(x[:, None, :]), dim=1)


def test_full_covariance_equals_diagonal_when_diagonal():
    g = torch.Generator().manual_seed(0)
    w, m = torch.tensor([0.2, 0.5, 0.3]), torch.randn(3, 4, generator=g, dtype=torch.float64)
    v = torch.rand(3, 4, generator=g, dtype=torch.float64) + 0.1
    diag, full = GaussianMixture(w, m, v), GaussianMixture(w, m, torch.diag_embed(v))
    assert full.full and not diag.full
    x = 2 * torch.randn(6, 4, generator=g, dtype=torch.float64)
    for ab in (1.0, 0.3, torch.tensor(0.05), torch.rand(6, generator=g, dtype=torch.float64)):
        for f in ("log_prob", "score", "responsibilities"):
            assert torch.allclose(getattr(full, f)(x, ab), getattr(diag, f)(x, ab), atol=1e-10)
    s = make_schedule("linear")
    for t in (1.0, 100.0, 500.0, 999.0):
        tt = torch.full((6,), t, dtype=torch.float64)
        assert torch.allclose(full.eps_fn(s)(x, tt), diag.eps_fn(s)(x, tt), atol=1e-10)
        assert torch.allclose(full.score_fn(s)(x, tt), diag.score_fn(s)(x, tt), atol=1e-10)
        assert torch.allclose(
            full.classifier_fn(s)(x, tt), diag.classifier_fn(s)(x, tt), atol=1e-10
        )
    tt = torch.tensor([10.0, 200.0, 400.0, 600.0, 800.0, 990.0], dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(full.cond_eps_fn(s)(x, tt, y), diag.cond_eps_fn(s)(x, tt, y), atol=1e-10)
    assert torch.allclose(full.component(1).log_prob(x), diag.component(1).log_prob(x), atol=1e-10)


def test_full_covariance_returns_the_input_dtype():
    gm = _full_mixture(torch.Generator().manual_seed(1))
    x = torch.randn(5, 4)
    assert gm.score(x, 0.5).dtype == torch.float32 and gm.log_prob(x, 0.5).dtype == torch.float32


@given(st.floats(0.01, 1.0), st.integers(0, 2**31))
def test_full_noisy_score_is_the_gradient_of_the_noisy_log_density(alpha_bar, seed):
    g = torch.Generator().manual_seed(seed)
    gm = _full_mixture(g)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, alpha_bar).sum(), x)
    assert torch.allclose(gm.score(x.detach(), alpha_bar), grad, rtol=1e-8, atol=1e-10)


def test_full_noisy_log_prob_is_the_mixture_of_a2_s_plus_sigma2():
    """Per-example alpha_bar: component k of x_t is N(a mu_k, a^2 S_k + sigma^2 I)."""
    g = torch.Generator().manual_seed(2)
    gm = _full_mixture(g)
    x = torch.randn(7, 4, generator=g, dtype=torch.float64)
    ab = torch.rand(7, generator=g, dtype=torch.float64)
    a, eye = ab.sqrt()[:, None, None], torch.eye(4, dtype=torch.float64)
    covs = ab[:, None, None, None] * gm.variances + (1 - ab)[:, None, None, None] * eye
    expected = _mvn_mixture_log_prob(gm.weights, a * gm.means, covs, x)
    assert torch.allclose(gm.log_prob(x, ab), expected, rtol=0, atol=1e-10)


def test_posterior_of_a_single_gaussian_is_the_textbook_formula():
    """S' = (S^-1 + A^T A / sigma_y^2)^-1, mu' = S' (S^-1 mu + A^T y / sigma_y^2)."""
    g = torch.Generator().manual_seed(3)
    s, mu = _spd(1, 5, g), torch.randn(1, 5, generator=g, dtype=torch.float64)
    a = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y, sigma_y = torch.randn(3, generator=g, dtype=torch.float64), 0.3
    post = GaussianMixture(torch.ones(1), mu, s).posterior(a, y, sigma_y)
    s_inv = torch.linalg.inv(s[0])
    cov = torch.linalg.inv(s_inv + a.T @ a / sigma_y**2)
    mean = cov @ (s_inv @ mu[0] + a.T @ y / sigma_y**2)
    assert torch.allclose(post.variances[0], cov, rtol=0, atol=1e-10)
    assert torch.allclose(post.means[0], mean, rtol=0, atol=1e-10)
    assert torch.allclose(post.weights, torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize("prior", ["diagonal", "full"])
@pytest.mark.parametrize("observation", ["matrix", "operator"])
def test_posterior_is_bayes_rule(prior, observation):
    """log p(x | y) = log p(x) + log N(y; A x, sigma_y^2 I) - log p(y) at random points."""
    g = torch.Generator().manual_seed(4)
    gm = _full_mixture(g, k=4, d=5)
    if prior == "diagonal":
        gm = GaussianMixture(gm.weights, gm.means, gm.variances.diagonal(dim1=-2, dim2=-1))
    op = RandomProjection(2, 5, g)
    a = op.weight if observation == "matrix" else op
    y, sigma_y = torch.randn(2, generator=g, dtype=torch.float64), 0.4
    post = gm.posterior(a, y, sigma_y)
    eye = torch.eye(2, dtype=torch.float64)
    evidence_covs = op.weight @ gm.covariances @ op.weight.T + sigma_y**2 * eye
    log_evidence = _mvn_mixture_log_prob(gm.weights, gm.means @ op.weight.T, evidence_covs, y[None])
    x = 2 * torch.randn(20, 5, generator=g, dtype=torch.float64)
    log_lik = torch.distributions.Normal(x @ op.weight.T, sigma_y).log_prob(y).sum(-1)
    expected = gm.log_prob(x) + log_lik - log_evidence
    assert torch.allclose(post.log_prob(x), expected, rtol=0, atol=1e-8)


def test_posterior_samples_match_importance_weighted_prior_samples():
    """Mean and covariance of posterior samples equal those of prior samples weighted by
    N(y; A x, sigma_y^2 I), within 5 standard errors of their difference; the exact moments
    of the posterior mixture too."""
    g = torch.Generator().manual_seed(5)
    gm = _full_mixture(g, k=3, d=2)
    a = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    y, sigma_y = torch.tensor([0.7], dtype=torch.float64), 0.5
    post = gm.posterior(a, y, sigma_y)

    x_prior, _ = gm.sample(400_000, generator=g)
    w = torch.softmax(-0.5 * ((x_prior @ a.T - y) ** 2).sum(1) / sigma_y**2, 0)
    x_post, _ = post.sample(200_000, generator=g)

    def moments_is(f):  # self-normalized importance sampling: estimate and its standard error
        est = (w[:, None] * f).sum(0)
        return est, ((w[:, None] ** 2) * (f - est) ** 2).sum(0).sqrt()

    def moments_mc(f):
        return f.mean(0), f.std(0) / math.sqrt(f.shape[0])

    def features(x, mean):  # x and the 3 distinct entries of (x - mean)(x - mean)^T
        c = x - mean
        return torch.cat([x, c * c, c[:, :1] * c[:, 1:]], 1)

    m_is = (w[:, None] * x_prior).sum(0)
    est_is, se_is = moments_is(features(x_prior, m_is))
    est_mc, se_mc = moments_mc(features(x_post, x_post.mean(0)))
    se = (se_is**2 + se_mc**2).sqrt()
    assert (se < 0.02).all()  # the check has power
    assert ((est_is - est_mc).abs() < 5 * se).all()

    wk = post.weights[:, None]
    mean = (wk * post.means).sum(0)
    c = post.means - mean
    cov = (wk[:, :, None] * (post.variances + c[:, :, None] * c[:, None, :])).sum(0)
    exact = torch.stack([mean[0], mean[1], cov[0, 0], cov[1, 1], cov[0, 1]])
    assert ((est_is - exact).abs() < 5 * se_is).all()


def test_noiseless_mask_posterior_reproduces_the_observation():
    """sigma_y = 0: samples keep the observed coordinates, noisy scores stay exact."""
    g = torch.Generator().manual_seed(6)
    gm = _full_mixture(g, k=3, d=6)
    mask = Mask(torch.tensor([1, 0, 1, 1, 0, 0]))
    y = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    post = gm.posterior(mask, y, 0.0)
    assert post.allow_singular and (post.eigvals == 0).sum() == 3 * 3
    x, _ = post.sample(1000, generator=g)
    assert torch.allclose(mask.forward(x), y.expand(1000, 3), rtol=0, atol=1e-12)
    assert x[:, [1, 4, 5]].std(0).min() > 0.01
    x_t = torch.randn(8, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(post.log_prob(x_t, 0.7).sum(), x_t)
    assert torch.allclose(post.score(x_t.detach(), 0.7), grad, rtol=1e-8, atol=1e-10)
    with pytest.raises(ScorelabError, match="singular"):
        post.log_prob(x_t.detach())


def test_noiseless_posterior_is_the_limit_of_small_noise():
    g = torch.Generator().manual_seed(7)
    gm = _full_mixture(g, k=2, d=3)
    a = torch.randn(2, 3, generator=g, dtype=torch.float64)
    y = torch.randn(2, generator=g, dtype=torch.float64)
    exact, near = gm.posterior(a, y, 0.0), gm.posterior(a, y, 1e-6)
    assert torch.allclose(exact.means, near.means, atol=1e-8)
    assert torch.allclose(exact.variances, near.variances, atol=1e-8)
    assert torch.allclose(exact.weights, near.weights, atol=1e-8)


@pytest.mark.parametrize(
    "a, y, sigma_y",
    [
        (torch.ones(2, 4), torch.zeros(2), -0.1),
        (torch.ones(2, 4), torch.zeros(2), float("nan")),
        (torch.ones(2, 4), torch.zeros(2), float("inf")),
        (torch.ones(2, 3), torch.zeros(2), 0.1),
        (torch.ones(2, 4), torch.zeros(3), 0.1),
        (torch.ones(2, 4), torch.tensor([0.0, float("nan")]), 0.1),
        (torch.ones(2, 4), torch.zeros(2), 0.0),  # rank 1: no noiseless posterior
        (RandomProjection(2, 5), torch.zeros(2), 0.1),
    ],
)
def test_bad_posterior_inputs_are_refused(a, y, sigma_y):
    gm = _full_mixture(torch.Generator().manual_seed(8))
    with pytest.raises(ScorelabError):
        gm.posterior(a, y, sigma_y)


@pytest.mark.parametrize(
    "covariances",
    [
        torch.tensor([[[1.0, 0.5], [0.0, 1.0]]]),  # not symmetric
        torch.tensor([[[1.0, 2.0], [2.0, 1.0]]]),  # indefinite
        torch.tensor([[[1.0, 1.0], [1.0, 1.0]]]),  # singular
        torch.ones(1, 2, 3),
        torch.tensor([[[1.0, float("nan")], [float("nan"), 1.0]]]),
    ],
)
def test_bad_covariances_are_refused(covariances):
    with pytest.raises(ScorelabError):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), covariances)


def test_singular_covariances_need_allow_singular():
    s = torch.tensor([[[1.0, 1.0], [1.0, 1.0]]])
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 2), s, allow_singular=True)
    x, _ = gm.sample(100, generator=torch.Generator().manual_seed(9))
    assert torch.allclose(x[:, 0], x[:, 1], atol=1e-12)
    with pytest.raises(ScorelabError):
        GaussianMixture(torch.ones(1), torch.zeros(1, 2), -s, allow_singular=True)
