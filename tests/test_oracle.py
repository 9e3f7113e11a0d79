"""The exact Gaussian-mixture oracle: its score is the gradient of its log-density."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.processes import make_schedule


@given(st.floats(0.01, 1.0), st.integers(0, 2**31))
def test_noisy_score_is_the_gradient_of_the_noisy_log_density(alpha_bar, seed):
    g = torch.Generator().manual_seed(seed)
    gm = GaussianMixture(
        torch.tensor([0.2, 0.5, 0.3]),
        torch.randn(3, 4, generator=g) * 2,
        torch.rand(3, 4, generator=g) + 0.1,
    )
    x = torch.randn(10, 4, generator=g, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, alpha_bar).sum(), x)
    assert torch.allclose(gm.score(x.detach(), alpha_bar), grad, rtol=1e-8, atol=1e-10)


def test_log_prob_of_a_single_gaussian():
    gm = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -1.0]]), torch.tensor([[0.5, 2.0]]))
    x = torch.tensor([[0.3, 0.7]], dtype=torch.float64)
    d = torch.distributions.Normal(
        torch.tensor([1.0, -1.0], dtype=torch.float64),
        torch.tensor([0.5, 2.0], dtype=torch.float64).sqrt(),
    )
    assert torch.allclose(gm.log_prob(x), d.log_prob(x).sum(-1))


def test_noisy_marginal_matches_forward_process_samples(generator):
    """The noisy marginal's moments equal those of q_sample applied to mixture samples."""
    gm = ring_mixture()
    s = make_schedule("linear")
    ab = float(s.alpha_bar(torch.tensor(300.0, dtype=torch.float64)))
    x0, _ = gm.sample(100_000, generator=generator)
    x_t = ab**0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(
        x0.shape, generator=generator, dtype=x0.dtype
    )
    # E[score(x_t)] = 0 and E[x_t . score(x_t)] = -d (integration by parts)
    sc = gm.score(x_t, ab)
    n = x_t.shape[0]
    assert (sc.mean(0).abs() < 5 * sc.std(0) / math.sqrt(n)).all()
    dot = (x_t * sc).sum(1)
    assert abs(float(dot.mean()) + 2) < 5 * float(dot.std()) / math.sqrt(n)


def test_eps_fn_is_minus_sigma_times_score():
    gm = ring_mixture()
    s = make_schedule("cosine")
    x = torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), 250.0, dtype=torch.float64)
    ab = s.alpha_bar(t)
    expected = -(1 - ab).sqrt()[:, None] * gm.score(x, ab)
    assert torch.allclose(gm.eps_fn(s)(x, t), expected)


def test_entropy_of_a_gaussian():
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 3), torch.tensor([[1.0, 2.0, 0.5]]))
    exact = 0.5 * 3 * (1 + math.log(2 * math.pi)) + 0.5 * math.log(1.0)
    est = gm.entropy(200_000, generator=torch.Generator().manual_seed(0))
    assert abs(est - exact) < 0.02
