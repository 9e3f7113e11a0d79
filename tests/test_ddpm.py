"""The forward process and the posterior as identities (Ho et al. 2020)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

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


@given(names, st.integers(2, 300), st.floats(-3, 3))
def test_iterated_one_step_kernels_give_the_closed_form(name, T, x0_value):
    """x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps, iterated: mean and variance propagate
    as m_t = sqrt(alpha_t) m_{t-1}, v_t = alpha_t v_{t-1} + beta_t; compare with q(x_t|x_0)."""
    s = make_schedule(name, T=T)
    x0 = torch.full((1, 3), x0_value, dtype=torch.float64)
    mean, var = x0.clone(), torch.zeros_like(x0)
    for t in range(1, T + 1):
        tt = torch.tensor([float(t)], dtype=torch.float64)
        kernel = q_step(s, mean, tt)  # the mean of x_t is the kernel's (linear) mean map
        beta = kernel.var
        mean, var = kernel.mean, (1 - beta) * var + beta
        closed = q_marginal(s, x0, tt)
        assert torch.allclose(mean, closed.mean, rtol=1e-9, atol=1e-12)
        assert torch.allclose(var, closed.var, rtol=1e-9, atol=1e-12)


def test_one_step_sampling_chain_matches_closed_form_statistically(generator):
    """Monte Carlo: running q(x_t|x_{t-1}) 200 times on 20,000 chains gives q(x_T|x_0)."""
    s = make_schedule("linear", T=200)
    n, x0 = 20_000, torch.full((20_000, 1), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(1, 201):
        g = q_step(s, x, torch.full((n,), float(t), dtype=torch.float64))
        x = g.mean + g.var.sqrt() * torch.randn(x.shape, generator=generator, dtype=x.dtype)
    closed = q_marginal(s, x0[:1], torch.tensor([200.0], dtype=torch.float64))
    m, v = float(closed.mean), float(closed.var)
    se_mean, se_var = (v / n) ** 0.5, v * (2 / (n - 1)) ** 0.5
    assert abs(float(x.mean()) - m) < 4 * se_mean
    assert abs(float(x.var()) - v) < 4 * se_var


@given(names, st.integers(1, 999), st.floats(-2, 2), st.floats(0.05, 3.0), st.floats(-3, 3))
def test_posterior_equals_bayes_by_gaussian_conditioning(name, t, mu0, s0, x_t_value):
    """Joint Gaussian of (x0, x_{t-1}, x_t) with x0 ~ N(mu0, s0^2), built from the one-step and
    closed-form kernels; condition x_{t-1} on (x_t, x0) by the Schur complement."""
    s = make_schedule(name, T=1000)
    tt = torch.tensor([float(t + 1)], dtype=torch.float64)
    ab_prev = float(s.alpha_bar(tt - 1))
    ab_t = float(s.alpha_bar(tt))
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
    ab = s.alpha_bar_table
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
    ab = float(s.alpha_bar(torch.tensor(400.0, dtype=torch.float64)))
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
    ab_s, ab_t = float(sch.alpha_bar(ss)), float(sch.alpha_bar(tt))
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


@pytest.mark.parametrize("t", [2, 50, 500, 1000])
def test_true_reverse_variance_is_beta_for_standard_normal_data(t):
    """Ho et al. 2020, §3.2: if x_0 ~ N(0, I) then q(x_{t-1} | x_t) has variance exactly beta_t (the
    upper choice of sigma_t^2); for a single point x_0 it is beta_tilde_t (the lower one)."""
    s = make_schedule("linear")
    tt = torch.tensor([float(t)], dtype=torch.float64)
    ab_prev, ab_t = float(s.alpha_bar(tt - 1)), float(s.alpha_bar(tt))
    alpha = ab_t / ab_prev
    # x_0 ~ N(0, 1): every x_t ~ N(0, 1); x_t = sqrt(alpha) x_{t-1} + sqrt(1 - alpha) e
    reverse_var = 1 - alpha  # Var(x_{t-1} | x_t) = 1 - Cov^2 / Var = 1 - alpha
    assert reverse_var == pytest.approx(float(posterior_variance(s, tt, kind="beta")), rel=1e-9)
    # a point mass x_0 = c: the reverse conditional is the posterior itself
    assert float(
        q_posterior(
            s, torch.ones(1, 1, dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64), tt
        ).var
    ) == pytest.approx(float(posterior_variance(s, tt, kind="beta_tilde")), rel=1e-12)
