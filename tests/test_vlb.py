"""The variational bound: its terms against closed forms and torch.distributions, and the total
against the exact NLL of Gaussian data under the exact eps."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.distributions import Normal, kl_divergence

from scorelab.errors import ScorelabError
from scorelab.likelihood import bits_per_dim, vlb
from scorelab.oracle import GaussianMixture
from scorelab.processes import make_schedule, p_mean_variance
from scorelab.processes.ddpm import (
    discretized_gaussian_log_likelihood,
    gaussian_log_likelihood,
    normal_kl,
    prior_kl,
    reverse_log_variance,
    vlb_term,
)
from scorelab.processes.parameterization import split_learned_variance

finite = st.floats(-3, 3)
positive = st.floats(0.01, 4)


@given(finite, positive, finite, positive)
def test_normal_kl_matches_torch_distributions(m1, v1, m2, v2):
    ours = normal_kl(*(torch.tensor([a], dtype=torch.float64) for a in (m1, v1, m2, v2)))
    m1, s1, m2, s2 = (torch.tensor(a, dtype=torch.float64) for a in (m1, v1, m2, v2))
    ref = kl_divergence(Normal(m1, s1.sqrt()), Normal(m2, s2.sqrt()))
    assert float(ours) == pytest.approx(float(ref), rel=1e-9, abs=1e-12)


@given(finite, finite, positive)
def test_gaussian_log_likelihood_matches_torch(x, m, v):
    ours = gaussian_log_likelihood(*(torch.tensor([a], dtype=torch.float64) for a in (x, m, v)))
    m, v = torch.tensor(m, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)
    ref = Normal(m, v.sqrt()).log_prob(torch.tensor(x, dtype=torch.float64))
    assert float(ours) == pytest.approx(float(ref), rel=1e-10)


@given(st.floats(-1.5, 1.5), st.floats(1e-4, 1.0))
def test_discretized_decoder_sums_to_one_and_matches_cdf_differences(mean, std):
    bins = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    mean_t = torch.full_like(bins, mean)
    var = torch.full_like(bins, std**2)
    log_p = discretized_gaussian_log_likelihood(bins, mean_t, var)
    assert torch.isfinite(log_p).all()
    assert float(torch.logsumexp(log_p, 0).exp()) == pytest.approx(1.0, abs=1e-9)
    normal = Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64))
    half = 1 / 255
    ref = normal.cdf(bins + half) - normal.cdf(bins - half)
    ref[0], ref[-1] = normal.cdf(bins[0] + half), 1 - normal.cdf(bins[-1] - half)
    big = ref > 1e-6  # where the CDF difference itself is accurate
    assert torch.allclose(log_p[big].exp(), ref[big], rtol=1e-6, atol=1e-12)


def test_prior_kl_is_l_t_formula(generator):
    sched = make_schedule("linear", T=50)
    x0 = torch.randn(7, 3, generator=generator, dtype=torch.float64) * 2
    ab = sched.alpha_bar(torch.tensor(50.0, dtype=torch.float64))
    formula = 0.5 * (ab * x0**2 + (1 - ab) - 1 - torch.log(1 - ab)).sum(1)
    one = torch.ones_like(x0)
    ref = kl_divergence(Normal(ab.sqrt() * x0, (1 - ab).sqrt() * one), Normal(0 * one, one)).sum(1)
    # atol=0: L_T is about 1e-5 here, below allclose's default absolute tolerance
    torch.testing.assert_close(prior_kl(sched, x0), formula, rtol=1e-10, atol=0)
    torch.testing.assert_close(prior_kl(sched, x0), ref, rtol=1e-8, atol=0)


def test_reverse_log_variance_against_the_betas():
    """log Sigma against beta_t and beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)
    beta_t computed here from the betas by a running product: "beta", "beta_tilde" (its 0 at
    t = 1 clipped to beta_tilde_2, improved DDPM), a learned v that differs per element
    (log Sigma = v log beta + (1 - v) log beta_tilde), and a respaced grid t = 4, 8, ..., 20
    with s = t - 4 (beta_{t|s} = 1 - alpha_bar_t / alpha_bar_s, the step to s = 0 clipped to
    the pair (8, 4)). Catches beta_tilde's ratio inverted and a clip to t + 1 in place of
    the next grid time (both passed the old restatement), and v weighting log beta_tilde."""
    T = 20
    sched = make_schedule("cosine", T=T)
    betas = sched.betas.tolist()
    ab = [1.0]
    for beta in betas:
        ab.append(ab[-1] * (1 - beta))

    def pair(t, s):  # (beta_{t|s}, beta_tilde_{t|s}) from the running product
        beta = 1 - ab[t] / ab[s]
        return beta, (1 - ab[s]) / (1 - ab[t]) * beta

    as64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    t = torch.arange(1, T + 1, dtype=torch.float64)
    log_beta = torch.log(as64(betas))
    tilde = [pair(i, i - 1)[1] for i in range(1, T + 1)]
    log_tilde = torch.log(as64([tilde[1], *tilde[1:]]))
    torch.testing.assert_close(reverse_log_variance(sched, t, variance="beta"), log_beta)
    torch.testing.assert_close(reverse_log_variance(sched, t, variance="beta_tilde"), log_tilde)
    v = torch.rand(T, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(
        reverse_log_variance(sched, t, v=v), v * log_beta[:, None] + (1 - v) * log_tilde[:, None]
    )
    times = list(range(4, T + 1, 4))
    t, s = as64(times), as64([i - 4 for i in times])
    respaced = [pair(i, i - 4) for i in times]
    clipped = [pair(8, 4)[1]] + [b for _, b in respaced[1:]]
    got_beta = reverse_log_variance(sched, t, s, variance="beta")
    torch.testing.assert_close(got_beta, torch.log(as64([b for b, _ in respaced])))
    got_tilde = reverse_log_variance(sched, t, s, variance="beta_tilde")
    torch.testing.assert_close(got_tilde, torch.log(as64(clipped)))


def _gaussian(mu=(0.5, -0.3), var=0.3):
    return GaussianMixture(torch.ones(1), torch.tensor([mu]), torch.tensor([var]))


def test_vlb_terms_layout_and_kl_against_torch(generator):
    sched = make_schedule("linear", T=8)
    g = _gaussian()
    x0, _ = g.sample(16, generator=generator)
    res = vlb(g.eps_fn(sched), x0, sched, generator=generator)
    assert res.terms.shape == (16, 9) and res.dim == 2
    assert torch.allclose(res.terms.sum(1), res.total)
    assert torch.allclose(res.terms[:, -1], prior_kl(sched, x0))
    assert torch.allclose(res.bits_per_dim, res.total / (2 * math.log(2)))
    assert float(bits_per_dim(2 * math.log(2), 2)) == pytest.approx(1.0)
    # one term by hand: KL of the true posterior to p_theta at t = 5 via torch.distributions
    t = torch.full((16,), 5.0, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    ab = sched.alpha_bar(t)[:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    step = p_mean_variance(g.eps_fn(sched), x_t, t, sched, variance="beta")
    ab_s = sched.alpha_bar(t - 1)[:, None]
    beta = 1 - ab / ab_s
    q_mean = (ab_s.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - ab_s) * x_t) / (1 - ab)
    q_std = ((1 - ab_s) / (1 - ab) * beta).sqrt()
    ref = kl_divergence(Normal(q_mean, q_std), Normal(step.mean, step.var.sqrt())).sum(1)
    ours = vlb_term(
        g.eps_fn(sched)(x_t, t),
        x0,
        x_t,
        t,
        sched,
        log_var=reverse_log_variance(sched, t, variance="beta"),
    )
    assert torch.allclose(ours, ref, rtol=1e-8)


@pytest.mark.parametrize("variance", ["beta_tilde", "beta"])
def test_vlb_bounds_the_exact_nll_and_the_gap_shrinks_with_T(variance):
    """Gaussian data N(mu, s^2 I) with the exact eps: E[L_VLB] >= -log p(x_0), and the gap
    (mean over examples, with its standard error) gets smaller as T grows."""
    g = _gaussian()
    gen = torch.Generator().manual_seed(0)
    x0, _ = g.sample(1000, generator=gen)
    nll = -g.log_prob(x0)
    gaps = []
    for T in (10, 40, 160):
        sched = make_schedule("linear", T=T)
        gap = vlb(g.eps_fn(sched), x0, sched, variance=variance, generator=gen).total - nll
        mean, se = float(gap.mean()), float(gap.std()) / math.sqrt(len(gap))
        assert mean > -3 * se, (T, mean, se)
        gaps.append((mean, se))
    assert gaps[0][0] > gaps[1][0] and gaps[1][0] > gaps[2][0] - 3 * gaps[2][1], gaps


def test_learned_variance_at_v_one_is_fixed_large():
    """A VarianceFn returning v = 1 everywhere is exactly Sigma = beta_t."""
    g = _gaussian()
    sched = make_schedule("linear", T=12)
    x0, _ = g.sample(64, generator=torch.Generator().manual_seed(3))
    fixed = vlb(
        g.eps_fn(sched), x0, sched, variance="beta", generator=torch.Generator().manual_seed(5)
    )
    learned = vlb(
        g.eps_fn(sched),
        x0,
        sched,
        variance=lambda x, t: torch.ones_like(x),
        generator=torch.Generator().manual_seed(5),
    )
    assert torch.allclose(fixed.terms, learned.terms, rtol=1e-10)


def test_split_learned_variance_shares_one_network_call():
    calls = []

    def net(x, t):
        calls.append(1)
        return torch.cat([x * 2, torch.zeros_like(x)], dim=1)

    pred, var = split_learned_variance(net)
    x, t = torch.randn(4, 3), torch.full((4,), 3.0)
    assert torch.equal(pred(x, t), 2 * x)
    assert torch.equal(var(x, t), torch.full_like(x, 0.5))  # r = 0 -> v = 1/2
    assert len(calls) == 1
    x.add_(1.0)  # changed in place: a new call
    pred(x, t)
    assert len(calls) == 2
    sched = make_schedule("linear", T=10)
    step = p_mean_variance(pred, x, t, sched, variance=var)
    expected = (
        0.5 * reverse_log_variance(sched, t, variance="beta")
        + 0.5 * reverse_log_variance(sched, t, variance="beta_tilde")
    ).exp()
    assert torch.allclose(step.var, expected[:, None].expand_as(x).float())


def _phi(z: float) -> float:
    """The standard normal CDF in Python floats; erfc keeps the lower tail's relative accuracy."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def test_discretized_decoder_far_in_the_tails_float64():
    """log P where the probabilities are tiny, against the normal CDF from math.erfc: the edge
    bins x = -1 and x = 1 with the mean 30 standard deviations away (log Phi(-30) = -454.3,
    which a CDF difference 1 - Phi(30) cannot reach: it rounds to 0), and an interior bin of
    probability 1.2e-13 (below a 1e-12 floor, which must not apply in float64)."""
    h, std = 1 / 255, 0.05
    as64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    x = as64([-1.0, 1.0])
    mean = as64([-1 + h + 30 * std, 1 - h - 30 * std])
    got = discretized_gaussian_log_likelihood(x, mean, torch.full_like(x, std**2))
    expected = math.log(_phi(-30.0))
    torch.testing.assert_close(got, as64([expected, expected]), rtol=1e-9, atol=0)
    x_mid = 35 / 127.5 - 1
    p = _phi((x_mid + h) / 0.1) - _phi((x_mid - h) / 0.1)
    assert 1e-13 < p < 1e-12
    got = discretized_gaussian_log_likelihood(as64([x_mid]), as64([0.0]), as64([0.01]))
    assert float(got) == pytest.approx(math.log(p), abs=1e-2)  # 1%: erf's rounding near -1


def test_discretized_decoder_between_grid_values_uses_the_unextended_bin():
    """Only the outermost values -1 and 1 own a half-line; x = 1 - h and x = -1 + h (midpoints
    between the two outer grid values) have the bin [x - h, x + h]."""
    h, mean, std = 1 / 255, 0.3, 0.5
    x = torch.tensor([1 - h, -1 + h], dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(
        x, torch.full_like(x, mean), torch.full_like(x, std**2)
    )
    expected = [math.log(_phi((v + h - mean) / std) - _phi((v - h - mean) / std)) for v in x]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_discretized_decoder_float32_is_finite_and_accurate():
    """float32 on all 256 values with a narrow Gaussian: the bins far from the mean (whose CDF
    difference is 0 in float32) still have a finite log-probability, and the likely bins
    (P > 1e-3) match the CDF differences from math.erfc to float32 precision."""
    bins = torch.arange(256, dtype=torch.float32) / 127.5 - 1
    mean, std, h = 0.1, 0.05, 1 / 255
    got = discretized_gaussian_log_likelihood(
        bins, torch.full_like(bins, mean), torch.full_like(bins, std**2)
    )
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    ref = [_phi((v + h - mean) / std) - _phi((v - h - mean) / std) for v in bins.double().tolist()]
    ref = torch.tensor(ref, dtype=torch.float64)
    likely = ref > 1e-3
    assert int(likely.sum()) >= 5
    torch.testing.assert_close(got[likely].double(), ref[likely].log(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("decoder", ["gaussian", "discretized"])
def test_vlb_term_at_t_one_is_the_decoder_nll(decoder, generator):
    """L_0 = -log p(x_0 | x_1) summed over dimensions, for 8-bit data on the grid of [-1, 1]:
    the reverse mean (x_1 - sqrt(beta_1) eps_model) / sqrt(1 - beta_1) written out with
    beta_1 from the betas, Sigma = 0.01, and the density of N(mean, 0.01) at x_0
    ("gaussian") or its mass on x_0's bin, the edge bins extended to infinity
    ("discretized"), from math.erfc."""
    sched = make_schedule("linear", T=10)
    beta1 = float(sched.betas[0])
    x0 = torch.randint(0, 256, (4, 3), generator=generator).double() / 127.5 - 1
    x0[0, 0], x0[1, 1] = -1.0, 1.0  # both edge bins
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    eps_model = eps + 0.02 * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    x_t = math.sqrt(1 - beta1) * x0 + math.sqrt(beta1) * eps
    mean = (x_t - math.sqrt(beta1) * eps_model) / math.sqrt(1 - beta1)
    t = torch.ones(4, dtype=torch.float64)
    log_var = torch.full((4,), math.log(0.01), dtype=torch.float64)
    got = vlb_term(eps_model, x0, x_t, t, sched, log_var=log_var, decoder=decoder)
    if decoder == "gaussian":
        ref = -Normal(mean, 0.1).log_prob(x0).sum(1)
    else:
        h, nll = 1 / 255, []
        for xs, ms in zip(x0.tolist(), mean.tolist(), strict=True):
            total = 0.0
            for x, m in zip(xs, ms, strict=True):
                hi = 1.0 if x > 1 - h / 2 else _phi((x + h - m) / 0.1)
                lo = 0.0 if x < -1 + h / 2 else _phi((x - h - m) / 0.1)
                total -= math.log(hi - lo)
            nll.append(total)
        ref = torch.tensor(nll, dtype=torch.float64)
    torch.testing.assert_close(got, ref, rtol=1e-7, atol=1e-9)


def test_vlb_term_is_in_the_dtype_of_x_with_a_float64_log_variance(generator):
    """float32 data with the float64 log-variance that reverse_log_variance returns: the term is
    float32 and equals the float64 computation to float32 precision."""
    sched = make_schedule("linear", T=10)
    x0 = torch.randn(3, 2, generator=generator)
    eps = torch.randn(3, 2, generator=generator)
    t = torch.tensor([1.0, 4.0, 9.0])
    ab = sched.alpha_bar(t.double())[:, None].float()
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    log_var = reverse_log_variance(sched, t.double(), variance="beta")
    got = vlb_term(eps, x0, x_t, t, sched, log_var=log_var)
    ref = vlb_term(eps.double(), x0.double(), x_t.double(), t.double(), sched, log_var=log_var)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref.float(), rtol=1e-4, atol=1e-4)


def test_reverse_log_variance_defaults_dtype_and_errors():
    """The default is beta_tilde; a learned float32 v gives a float32 log-variance (the float64
    table cast to v's dtype); unknown names of a variance or a decoder list the choices."""
    sched = make_schedule("cosine", T=20)
    t = torch.arange(1, 21, dtype=torch.float64)
    tilde = reverse_log_variance(sched, t, variance="beta_tilde")
    torch.testing.assert_close(reverse_log_variance(sched, t), tilde)
    beta = reverse_log_variance(sched, t, variance="beta")
    v = torch.rand(20, 3, generator=torch.Generator().manual_seed(0))
    got = reverse_log_variance(sched, t, v=v)
    assert got.dtype == torch.float32
    ref = v.double() * beta[:, None] + (1 - v.double()) * tilde[:, None]
    torch.testing.assert_close(got, ref.float())
    with pytest.raises(
        ScorelabError, match=r"^unknown variance 'big'; choose one of: beta, beta_tilde$"
    ):
        reverse_log_variance(sched, t, variance="big")
    x = torch.zeros(20, 2, dtype=torch.float64)
    with pytest.raises(
        ScorelabError, match=r"^unknown decoder 'big'; choose one of: gaussian, discretized$"
    ):
        vlb_term(x, x, x, t, sched, log_var=tilde, decoder="big")


def test_prior_kl_follows_the_device_of_x0():
    """On the meta device (a device other than the CPU that needs no accelerator) L_T is
    computed there: its times are made on x0's device, not on the default one."""
    sched = make_schedule("linear", T=10)
    x0 = torch.zeros(3, 2, device="meta")
    out = prior_kl(sched, x0)
    assert out.device.type == "meta" and out.shape == (3,)
