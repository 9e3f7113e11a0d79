"""The forward process and the posterior as identities (Ho et al. 2020).

The expected values are computed from the betas alone, with a running product written out
here (alpha_bar_t = prod_{s<=t} (1 - beta_s)) and, for the linear schedule, the betas written
out from the paper; never from the schedule's alpha_bar, which is what they check.
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.errors import ScorelabError
from scorelab.processes import (
    make_schedule,
    p_mean_variance,
    posterior_variance,
    q_marginal,
    q_posterior,
    q_posterior_mean_eps,
    q_sample,
    q_step,
)

names = st.sampled_from(["linear", "cosine", "quadratic", "sigmoid"])


def _alpha_bars(betas) -> list[float]:
    """[alpha_bar_0 = 1, alpha_bar_1, ..., alpha_bar_T]: the running product of 1 - beta_t in
    Python floats, independent of the schedule's log-space table."""
    out = [1.0]
    for beta in torch.as_tensor(betas, dtype=torch.float64).tolist():
        out.append(out[-1] * (1.0 - beta))
    return out


def _ddpm_linear_betas(T: int) -> list[float]:
    """Ho et al. 2020: beta from 1e-4 to 0.02 in T - 1 equal steps at T = 1000; for another T
    both ends are multiplied by 1000 / T (improved DDPM's get_named_beta_schedule)."""
    scale = 1000 / T
    return [scale * (1e-4 + (0.02 - 1e-4) * i / (T - 1)) for i in range(T)]


@given(names, st.integers(2, 300), st.floats(-3, 3))
def test_one_step_kernels_and_the_closed_form_against_the_betas(name, T, x0_value):
    """q(x_t | x_{t-1}) has mean sqrt(1 - beta_t) x_{t-1} and variance beta_t, and iterating it
    from x_0 (m_t = sqrt(1 - beta_t) m_{t-1}, v_t = (1 - beta_t) v_{t-1} + beta_t, a loop over
    the betas here) gives q(x_t | x_0) at every t. Catches a wrong alpha_bar table (an
    off-by-one in its cumulative sum or interpolation, a lost factor), which the old test,
    composing q_step from the same table, could not see."""
    s = make_schedule(name, T=T)
    betas = s.betas.tolist()
    t = torch.arange(1, T + 1, dtype=torch.float64)
    step = q_step(s, torch.ones(T, 1, dtype=torch.float64), t)
    closed = q_marginal(s, torch.full((T, 1), x0_value, dtype=torch.float64), t)
    mean, var, means, variances = x0_value, 0.0, [], []
    for beta in betas:
        mean, var = math.sqrt(1 - beta) * mean, (1 - beta) * var + beta
        means.append(mean)
        variances.append(var)
    as64 = lambda v: torch.tensor(v, dtype=torch.float64)[:, None]  # noqa: E731
    torch.testing.assert_close(
        step.mean, as64([math.sqrt(1 - b) for b in betas]), rtol=1e-9, atol=0
    )
    torch.testing.assert_close(step.var, as64(betas), rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(closed.mean, as64(means), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(closed.var, as64(variances), rtol=1e-9, atol=1e-15)


def test_forward_chain_simulated_from_the_betas_matches_the_closed_form(generator):
    """Monte Carlo in float64: 20,000 chains x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) e_t
    from x_0 = 1.5, run over DDPM's linear betas rescaled to T = 200 (written out here, not read
    from the schedule), against q_marginal and against q_sample at t = 20, 100, 200: the means
    within 4 standard errors (sqrt(v / n)), the variances within 4 standard errors of a
    Gaussian sample variance (v sqrt(2 / (n - 1))), and q_sample against the chain by a
    two-sample test (4 SE of the difference). Catches a wrongly rescaled schedule (scale T/1000
    for 1000/T gives alpha_bar_200 = 0.67 for 3e-5) and a dropped sqrt in q_sample."""
    T, n, x0_value = 200, 20_000, 1.5
    s = make_schedule("linear", T=T)
    betas = _ddpm_linear_betas(T)
    x = torch.full((n, 1), x0_value, dtype=torch.float64)
    x0 = torch.full((n, 1), x0_value, dtype=torch.float64)
    for t, beta in enumerate(betas, 1):
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * torch.randn(
            x.shape, generator=generator, dtype=x.dtype
        )
        if t not in (20, 100, 200):
            continue
        tt = torch.full((n,), float(t), dtype=torch.float64)
        closed = q_marginal(s, x0[:1], tt[:1])
        m, v = float(closed.mean), float(closed.var)
        assert abs(float(x.mean()) - m) < 4 * math.sqrt(v / n), t
        assert abs(float(x.var()) - v) < 4 * v * math.sqrt(2 / (n - 1)), t
        y = q_sample(s, x0, tt, generator=generator)
        assert abs(float(y.mean() - x.mean())) < 4 * math.sqrt(2 * v / n), t
        assert abs(float(y.var() - x.var())) < 4 * v * math.sqrt(4 / (n - 1)), t


@given(names, st.integers(1, 999), st.floats(-2, 2), st.floats(0.05, 3.0), st.floats(-3, 3))
def test_posterior_equals_bayes_by_gaussian_conditioning(name, t, mu0, s0, x_t_value):
    """Joint Gaussian of (x0, x_{t-1}, x_t) with x0 ~ N(mu0, s0^2), built from the one-step and
    closed-form kernels; condition x_{t-1} on (x_t, x0) by the Schur complement."""
    s = make_schedule(name, T=1000)
    tt = torch.tensor([float(t + 1)], dtype=torch.float64)
    ab_prev, ab_t = _alpha_bars(s.betas)[t : t + 2]
    a_prev, a_t = ab_prev**0.5, ab_t**0.5
    alpha = ab_t / ab_prev
    v0 = s0**2
    # covariance of (x0, x_{t-1}, x_t): x_{t-1} = a_prev x0 + noise, x_t = sqrt(alpha) x_{t-1} + ...
    var_prev = ab_prev * v0 + (1 - ab_prev)
    cov = torch.tensor(
        [
            [v0, a_prev * v0, a_t * v0],
            [a_prev * v0, var_prev, alpha**0.5 * var_prev],
            [a_t * v0, alpha**0.5 * var_prev, ab_t * v0 + 1 - ab_t],
        ],
        dtype=torch.float64,
    )
    mean = torch.tensor([mu0, a_prev * mu0, a_t * mu0], dtype=torch.float64)
    x0_value = mu0 + 0.7 * s0  # any conditioning value
    obs = torch.tensor([x0_value, x_t_value], dtype=torch.float64)
    idx_o, idx_u = [0, 2], [1]
    S_uo, S_oo = cov[idx_u][:, idx_o], cov[idx_o][:, idx_o]
    cond_mean = mean[idx_u] + S_uo @ torch.linalg.solve(S_oo, obs - mean[idx_o])
    cond_var = cov[1, 1] - S_uo @ torch.linalg.solve(S_oo, S_uo.T)
    got = q_posterior(
        s,
        torch.tensor([[x0_value]], dtype=torch.float64),
        torch.tensor([[x_t_value]], dtype=torch.float64),
        tt,
    )
    assert float(got.mean) == pytest.approx(float(cond_mean), rel=1e-7, abs=1e-9)
    assert float(got.var) == pytest.approx(float(cond_var), rel=1e-6, abs=1e-12)


@given(names, st.lists(st.integers(1, 1000), min_size=1, max_size=8), st.integers(0, 2**31))
def test_two_forms_of_the_posterior_mean_agree(name, ts, seed):
    s = make_schedule(name)
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(ts, dtype=torch.float64)
    x0 = torch.randn(len(ts), 2, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = q_sample(s, x0, t, eps)
    mu_x0 = q_posterior(s, x0, x_t, t).mean
    mu_eps = q_posterior_mean_eps(s, x_t, eps, t)
    assert torch.allclose(mu_x0, mu_eps, rtol=1e-7, atol=1e-9)


def test_posterior_variance_choices():
    """beta_tilde = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t; it is 0 at t = 1."""
    s = make_schedule("linear")
    t = torch.arange(1, 1001, dtype=torch.float64)
    ab = torch.tensor(_alpha_bars(s.betas), dtype=torch.float64)
    expected = (1 - ab[:-1]) / (1 - ab[1:]) * s.betas
    assert torch.allclose(posterior_variance(s, t), expected, rtol=1e-9, atol=1e-15)
    assert torch.allclose(posterior_variance(s, t, kind="beta"), s.betas, rtol=1e-9)
    assert posterior_variance(s, t)[0] == 0
    assert (posterior_variance(s, t) <= s.betas).all()


def test_q_sample_is_the_closed_form(generator):
    s = make_schedule("cosine")
    x0 = torch.randn(50_000, 1, generator=generator, dtype=torch.float64) * 0.5 + 1.0
    t = torch.full((50_000,), 400.0, dtype=torch.float64)
    x_t = q_sample(s, x0, t, generator=generator)
    ab = _alpha_bars(s.betas)[400]
    mean, var = ab**0.5 * 1.0, ab * 0.25 + (1 - ab)
    n = x0.shape[0]
    assert abs(float(x_t.mean()) - mean) < 4 * (var / n) ** 0.5
    assert abs(float(x_t.var()) - var) < 4 * var * (2 / n) ** 0.5


def test_p_mean_variance_with_true_eps_is_the_posterior(generator):
    s = make_schedule("linear")
    x0 = torch.randn(16, 4, generator=generator, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    t = torch.randint(1, 1001, (16,), generator=generator).double()
    x_t = q_sample(s, x0, t, eps)
    step = p_mean_variance(lambda x, tt: eps, x_t, t, s)
    post = q_posterior(s, x0, x_t, t)
    assert torch.allclose(step.mean, post.mean, rtol=1e-6, atol=1e-8)
    assert torch.allclose(step.var, post.var)
    assert torch.allclose(step.x0, x0, rtol=1e-6, atol=1e-6)


@given(names, st.integers(2, 1000), st.integers(1, 50), st.floats(-3, 3), st.floats(-3, 3))
def test_general_pair_posterior_equals_bayes(name, t, gap, x0_value, x_t_value):
    """q(x_s | x_t, x_0) for s < t - 1 (respacing): the same Schur complement with the
    composed kernel x_t = sqrt(abar_t / abar_s) x_s + noise."""
    s_time = max(t - gap, 0)
    sch = make_schedule(name)
    tt = torch.tensor([float(t)], dtype=torch.float64)
    ss = torch.tensor([float(s_time)], dtype=torch.float64)
    alpha_bar = _alpha_bars(sch.betas)
    ab_s, ab_t = alpha_bar[s_time], alpha_bar[t]
    # given x0: x_s ~ N(sqrt(ab_s) x0, 1 - ab_s); x_t | x_s ~ N(sqrt(ab_t/ab_s) x_s, 1 - ab_t/ab_s)
    c = (ab_t / ab_s) ** 0.5
    var_s = 1 - ab_s
    cov_st, var_t = c * var_s, 1 - ab_t
    mean_s, mean_t = ab_s**0.5 * x0_value, ab_t**0.5 * x0_value
    cond_mean = mean_s + cov_st / var_t * (x_t_value - mean_t)
    cond_var = var_s - cov_st**2 / var_t
    got = q_posterior(
        sch,
        torch.tensor([[x0_value]], dtype=torch.float64),
        torch.tensor([[x_t_value]], dtype=torch.float64),
        tt,
        ss,
    )
    assert float(got.mean) == pytest.approx(cond_mean, rel=1e-7, abs=1e-9)
    assert float(got.var) == pytest.approx(cond_var, rel=1e-6, abs=1e-12)
    assert float(posterior_variance(sch, tt, ss)) == pytest.approx(cond_var, rel=1e-6, abs=1e-12)


def _regress(x_prev: torch.Tensor, x_t: torch.Tensor) -> tuple[float, float, float]:
    """Least squares x_{t-1} ~ a + b x_t on samples: (b, its standard error, residual variance)."""
    xc, yc = x_t - x_t.mean(), x_prev - x_prev.mean()
    slope = float((xc * yc).sum() / (xc * xc).sum())
    resid = float(((yc - slope * xc) ** 2).sum()) / (len(x_t) - 2)
    return slope, math.sqrt(resid / float((xc * xc).sum())), resid


@pytest.mark.parametrize("t", [2, 50, 500, 1000])
def test_true_reverse_variance_is_beta_for_standard_normal_data(t, generator):
    """Ho et al. 2020, section 3.2: if x_0 ~ N(0, I) then q(x_{t-1} | x_t) has variance exactly
    beta_t (the upper choice of sigma_t^2); for a point x_0 it is beta_tilde_t (the lower one).

    Checked three ways, none through the schedule's alpha_bar: posterior_variance("beta")
    equals DDPM's beta_t written out; the law of total variance over x_0 | x_t,
    beta_t = beta_tilde_t + c_0^2 Var(x_0 | x_t) with c_0 the x_0 coefficient of q_posterior's
    mean and Var(x_0 | x_t) = 1 - alpha_bar_t (running product); and by simulation, 40,000
    pairs (x_{t-1}, x_t) drawn with the betas: the residual variance of x_{t-1} regressed on
    x_t is beta_t for N(0, 1) data and beta_tilde_t for x_0 = 1 (within 5 standard errors,
    v sqrt(2 / n)), and for x_0 = 1 the slope is q_posterior's x_t coefficient (5 SE).
    Catches a posterior variance or mean with beta_t and beta_tilde_t swapped, a dropped sqrt
    in the mean's coefficients, or a schedule off by one step."""
    s = make_schedule("linear")
    betas = _ddpm_linear_betas(1000)
    alpha_bar = _alpha_bars(betas)
    beta, ab_prev, ab_t = betas[t - 1], alpha_bar[t - 1], alpha_bar[t]
    tt = torch.tensor([float(t)], dtype=torch.float64)
    assert float(posterior_variance(s, tt, kind="beta")) == pytest.approx(beta, rel=1e-9)
    one = torch.ones(1, 1, dtype=torch.float64)
    post = q_posterior(s, one, 0 * one, tt)  # mean = c_0 x_0 at x_t = 0
    c0, c_t = float(post.mean), float(q_posterior(s, 0 * one, one, tt).mean)
    assert float(post.var) + c0**2 * (1 - ab_t) == pytest.approx(beta, rel=1e-9)
    beta_tilde = (1 - ab_prev) / (1 - ab_t) * beta
    assert float(post.var) == pytest.approx(beta_tilde, rel=1e-9)
    assert float(posterior_variance(s, tt)) == pytest.approx(beta_tilde, rel=1e-9)

    n = 40_000
    for x0, expected in ((torch.randn(n, generator=generator, dtype=torch.float64), beta),
                         (torch.ones(n, dtype=torch.float64), beta_tilde)):  # fmt: skip
        noise = torch.randn(2, n, generator=generator, dtype=torch.float64)
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * noise[0]
        x_t = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * noise[1]
        slope, slope_se, resid = _regress(x_prev, x_t)
        assert abs(resid - expected) < 5 * expected * math.sqrt(2 / n), (resid, expected)
    assert abs(slope - c_t) < 5 * slope_se, (slope, c_t, slope_se)


def test_q_step_mean_is_sqrt_one_minus_beta_times_x_prev():
    """The one-step kernel's mean scales x_{t-1} (values other than 1, so that a mean divided
    by x_{t-1} is seen); the variance does not depend on it. DDPM's betas at T = 100."""
    T = 100
    s = make_schedule("linear", T=T)
    betas = torch.tensor(_ddpm_linear_betas(T), dtype=torch.float64)
    t = torch.arange(1, T + 1, dtype=torch.float64)
    x_prev = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64).repeat(T, 1)
    step = q_step(s, x_prev, t)
    torch.testing.assert_close(step.mean, (1 - betas).sqrt()[:, None] * x_prev)
    torch.testing.assert_close(step.var, betas[:, None].expand(T, 3))


def test_q_sample_draws_its_noise_from_the_generator():
    """With a generator, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) z with z the
    generator's next normal draws (the same seed gives the same z), not the global RNG's."""
    T = 100
    s = make_schedule("linear", T=T)
    ab = _alpha_bars(_ddpm_linear_betas(T))
    x0 = torch.tensor([[0.3, -1.2], [2.0, 0.1], [-0.7, 0.9]], dtype=torch.float64)
    t = torch.tensor([5.0, 40.0, 100.0], dtype=torch.float64)
    z = torch.randn(x0.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    a = torch.tensor([ab[5], ab[40], ab[100]], dtype=torch.float64)[:, None]
    got = q_sample(s, x0, t, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(got, a.sqrt() * x0 + (1 - a).sqrt() * z)


def test_outputs_take_the_dtype_of_x_not_of_t(generator):
    """float32 states with float64 times (as a float64 time grid gives): every forward and
    posterior quantity is float32 and equals the float64 closed form (from the running product
    of DDPM's betas) to float32 precision."""
    T = 100
    s = make_schedule("linear", T=T)
    ab = _alpha_bars(_ddpm_linear_betas(T))
    t = torch.tensor([10.0, 50.0], dtype=torch.float64)
    x0 = torch.randn(2, 3, generator=generator)
    eps = torch.randn(2, 3, generator=generator)
    a_t = torch.tensor([ab[10], ab[50]], dtype=torch.float64)[:, None]
    a_s = torch.tensor([ab[9], ab[49]], dtype=torch.float64)[:, None]
    x_t = q_sample(s, x0, t, eps)
    beta, x0d, epsd = 1 - a_t / a_s, x0.double(), eps.double()
    x_t_ref = a_t.sqrt() * x0d + (1 - a_t).sqrt() * epsd
    mean_ref = (a_s.sqrt() * beta * x0d + (1 - beta).sqrt() * (1 - a_s) * x_t_ref) / (1 - a_t)
    var_ref = ((1 - a_s) / (1 - a_t) * beta).expand(2, 3)
    step = p_mean_variance(lambda x, tt: eps, x_t, t, s)
    marginal, post = q_marginal(s, x0, t), q_posterior(s, x0, x_t, t)
    pairs = [
        (x_t, x_t_ref),
        (marginal.mean, a_t.sqrt() * x0d),
        (marginal.var, (1 - a_t).expand(2, 3)),
        (post.mean, mean_ref),
        (post.var, var_ref),
        (q_posterior_mean_eps(s, x_t, eps, t), mean_ref),
        (step.mean, mean_ref),
        (step.var, var_ref),
        (step.x0, x0d),
    ]
    for got, ref in pairs:
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, ref.float(), rtol=1e-5, atol=1e-5)


def test_respaced_reverse_step_with_true_eps_is_the_posterior_to_s(generator):
    """p(x_s | x_t) for s = t - 7 (a respaced grid) with the true eps: the mean is q's
    posterior mean to s, sqrt(ab_s) beta_{t|s} / (1 - ab_t) x_0 + sqrt(alpha_{t|s}) (1 - ab_s)
    / (1 - ab_t) x_t, the x_0 prediction is x_0, the variance is beta_tilde_{t|s}, beta_{t|s},
    or for a learned v = 0.3, exp(0.3 log beta_{t|s} + 0.7 log beta_tilde_{t|s}); written out
    from the running product of DDPM's betas, not read from the code's t - 1 default."""
    T = 100
    s = make_schedule("linear", T=T)
    ab = _alpha_bars(_ddpm_linear_betas(T))
    times = [20, 55, 90]
    t = torch.tensor(times, dtype=torch.float64)
    prev = t - 7
    a_t = torch.tensor([ab[i] for i in times], dtype=torch.float64)[:, None]
    a_s = torch.tensor([ab[i - 7] for i in times], dtype=torch.float64)[:, None]
    beta = 1 - a_t / a_s
    tilde = (1 - a_s) / (1 - a_t) * beta
    x0 = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    eps = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    x_t = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
    mean = (a_s.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_s) * x_t) / (1 - a_t)
    torch.testing.assert_close(q_posterior_mean_eps(s, x_t, eps, t, prev), mean)
    eps_fn = lambda x, tt: eps  # noqa: E731
    learned = lambda x, tt: torch.full_like(x, 0.3)  # noqa: E731
    for variance, var in (
        ("beta_tilde", tilde),
        ("beta", beta),
        (learned, torch.exp(0.3 * beta.log() + 0.7 * tilde.log())),
    ):
        step = p_mean_variance(eps_fn, x_t, t, s, prev, variance=variance)
        torch.testing.assert_close(step.mean, mean)
        torch.testing.assert_close(step.var, var.expand(3, 2))
        torch.testing.assert_close(step.x0, x0)


def test_unknown_posterior_variance_names_the_choices():
    s = make_schedule("linear", T=10)
    t = torch.tensor([3.0])
    with pytest.raises(
        ScorelabError, match=r"^unknown variance 'big'; choose one of: beta, beta_tilde$"
    ):
        posterior_variance(s, t, kind="big")


def test_analytic_variance_clips_gamma_to_the_unit_interval_by_hand():
    """sigma*^2 = beta_tilde + beta^2 / (alpha (1 - alpha_bar_t)) (1 - Gamma) for t -> s from
    the betas: Gamma = 1 gives beta_tilde, Gamma = 0 the largest value; Gamma outside [0, 1]
    is clipped to it."""
    from scorelab.processes.ddpm import analytic_variance

    s = make_schedule("linear")
    t, u = torch.tensor([500.0], dtype=torch.float64), torch.tensor([450.0], dtype=torch.float64)
    ab = torch.cumprod(1 - s.betas, 0)
    ab_t, ab_s = ab[499], ab[449]
    alpha, beta = ab_t / ab_s, 1 - ab_t / ab_s
    beta_tilde = (1 - ab_s) / (1 - ab_t) * beta
    extra = beta**2 / (alpha * (1 - ab_t))
    for gamma, used in [(0.0, 0.0), (0.1, 0.1), (1.0, 1.0), (-0.5, 0.0), (1.5, 1.0)]:
        got = analytic_variance(s, t, u, gamma)  # a Python float, taken in the times' dtype
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, (beta_tilde + extra * (1 - used)).reshape(1),
                                   rtol=1e-12, atol=0)  # fmt: skip


def test_score_step_uses_beta_tilde_by_default():
    from scorelab.processes.ddpm import score_step_coefficients

    s = make_schedule("linear")
    t = torch.tensor([10.0, 500.0], dtype=torch.float64)
    default = score_step_coefficients(s, t)
    explicit = score_step_coefficients(s, t, variance="beta_tilde")
    for a, b in zip(default, explicit, strict=True):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(default[2], score_step_coefficients(s, t, variance="beta")[2])
