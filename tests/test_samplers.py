"""Algorithm 2 with the exact eps of a Gaussian mixture reproduces the mixture."""

import math
import re

import pytest
import torch

from scorelab import make_schedule, sample
from scorelab.errors import ScorelabError
from scorelab.oracle import GaussianMixture
from scorelab.processes.ddpm import p_mean_variance
from scorelab.samplers import SAMPLERS, make_timesteps, sample_ddpm


def _check_mixture(x, mixture, z=5.0, bias=0.0):
    """Mode weights within z standard errors; the residuals standardized by their mode,
    pooled over modes, have mean 0 and variance 1 within z standard errors (+ an allowance
    for the variance, the known bias of fixed reverse variances at finite T)."""
    x = x.reshape(x.shape[0], -1).double()
    n = x.shape[0]
    labels = mixture.responsibilities(x).argmax(1)
    for k in range(mixture.n_components):
        w = float(mixture.weights[k])
        assert abs(float((labels == k).double().mean()) - w) <= z * math.sqrt(w * (1 - w) / n)
    std_resid = (x - mixture.means[labels]) / mixture.variances[labels].sqrt()
    m = std_resid.numel()
    assert (std_resid.mean(0).abs() < z / math.sqrt(n)).all(), std_resid.mean(0)
    assert abs(float(std_resid.var()) - 1) < z * math.sqrt(2 / m) + bias, float(std_resid.var())
    return float(std_resid.var())


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_with_exact_eps_reproduces_the_mixture(mixture_2d, variance):
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(0)
    out = sample(
        mixture_2d.eps_fn(s),
        (4000, 2),
        s,
        "ddpm",
        generator=g,
        dtype=torch.float64,
        variance=variance,
    )
    assert out.nfe == 1000
    _check_mixture(out.x, mixture_2d)


def test_ddpm_respaced_to_100_steps_still_reproduces_the_mixture(mixture_2d):
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(1)
    out = sample(
        mixture_2d.eps_fn(s),
        (4000, 2),
        s,
        "ddpm",
        100,
        generator=g,
        dtype=torch.float64,
        variance="beta_tilde",
    )
    assert out.nfe == 100
    # beta_tilde on a 10x coarser grid under-disperses (about 0.85 of the variance here);
    # weights and means stay exact
    var = _check_mixture(out.x, mixture_2d, bias=0.2)
    assert var < 1


def _ddpm_law(schedule, timesteps, means, variances):
    """Per-coordinate mean and variance of DDPM's final sample (beta_tilde, x_T ~ N(0, I)) for
    data N(means, diag(variances)) with the exact eps = sigma_t (x - a_t m) / v_t,
    v_t = alpha_bar_t var + sigma_t^2. Each step t -> s, x_s = (x_t - beta_{t|s} / sigma_t eps)
    / sqrt(alpha_{t|s}) + sqrt(beta_tilde) z (Ho et al. 2020, eq. 11; beta_{t|s} = 1 -
    alpha_bar_t / alpha_bar_s), is then affine in x_t and z."""
    alpha_bar = schedule.alpha_bar(timesteps.to(torch.float64)).tolist()
    mu, V = torch.zeros_like(means), torch.ones_like(variances)
    for ab_t, ab_s in zip(alpha_bar, alpha_bar[1:], strict=False):
        v = ab_t * variances + 1 - ab_t
        alpha, beta = ab_t / ab_s, 1 - ab_t / ab_s
        slope = (1 - beta / v) / math.sqrt(alpha)
        noise = (1 - ab_s) / (1 - ab_t) * beta  # beta_tilde; 0 on the step to t = 0
        mu = slope * mu + beta * math.sqrt(ab_t) * means / v / math.sqrt(alpha)
        V = slope**2 * V + noise
    return mu, V


def test_images_shaped_gaussian():
    """(B, 1, 8, 8) data: a 64-D Gaussian with its own mean and variance per pixel, DDPM with
    the exact eps on 200 steps of the cosine schedule. Image-shaped samples equal the flattened
    (B, 64) run from the same noise bit for bit (200 draws, 20 steps); 2000 draws match the
    chain's exact law (_ddpm_law): each pixel's mean within 4 standard errors sqrt(V / n), each
    pixel's variance within 4 standard errors V sqrt(2 / (n - 1)), and the variance ratio
    averaged over the independent pixels within 4 standard errors sqrt(2 / (n - 1)) / 8.
    Planted bugs that made it fail (each reverted): one noise draw per (example, channel)
    broadcast over the pixels (the runs differ); each step's noise variance taken from the
    next step's (variance ratio 0.966, 8 standard errors low). That law is the data's
    but for the fixed reverse variances' bias at 200 steps: the means are exact (1e-9) and the
    variances 3% to 7% low (beta_tilde under-disperses)."""
    means = torch.linspace(-1, 1, 64, dtype=torch.float64)[None]
    variances = torch.linspace(0.05, 0.5, 64, dtype=torch.float64)[None]
    gm = GaussianMixture(torch.ones(1), means, variances)
    s, n = make_schedule("cosine"), 2000

    def run(shape, steps=200):
        g = torch.Generator().manual_seed(1234)
        return sample(gm.eps_fn(s), shape, s, "ddpm", steps, generator=g, dtype=torch.float64).x

    assert torch.equal(run((200, 1, 8, 8), 20).reshape(200, 64), run((200, 64), 20))
    out = run((n, 1, 8, 8))
    assert out.shape == (n, 1, 8, 8)
    x = out.reshape(n, 64)
    mu, V = _ddpm_law(s, make_timesteps(s, 200), means[0], variances[0])
    assert ((x.mean(0) - mu).abs() < 4 * (V / n).sqrt()).all(), (x.mean(0) - mu) / (V / n).sqrt()
    ratio = x.var(0) / V
    assert ((ratio - 1).abs() < 4 * math.sqrt(2 / (n - 1))).all(), ratio
    assert abs(float(ratio.mean()) - 1) < 4 * math.sqrt(2 / (n - 1)) / 8, float(ratio.mean())
    assert ((mu - means[0]).abs() < 1e-6).all()
    assert ((V / variances[0] > 0.9) & (V / variances[0] < 1)).all(), V / variances[0]


def test_ddpm_score_form_equals_ddpm(mixture_2d):
    """x_{t-1} = A_t x_t + B_t grad log p_t + sqrt(C_t) z is Algorithm 2 (docs/theory.md §8)."""
    s = make_schedule("linear")
    eps_fn = mixture_2d.eps_fn(s)
    for variance in ("beta", "beta_tilde"):
        a = sample(
            eps_fn,
            (500, 2),
            s,
            "ddpm",
            50,
            generator=torch.Generator().manual_seed(5),
            dtype=torch.float64,
            variance=variance,
        )
        b = sample(
            eps_fn,
            (500, 2),
            s,
            "ddpm-score",
            50,
            variance=variance,
            generator=torch.Generator().manual_seed(5),
            dtype=torch.float64,
        )
        assert torch.allclose(a.x, b.x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_is_algorithm_2_written_with_p_mean_variance(mixture_2d, variance):
    """The float-coefficient loop equals the literal step: mean of p_mean_variance plus
    sqrt(var) z with the same z, on a respaced grid (beta recomputed per actual step)."""
    s = make_schedule("linear")
    eps_fn = mixture_2d.eps_fn(s)
    grid = make_timesteps(s, 37, "quadratic")
    x_T = torch.randn(300, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fast = sample_ddpm(
        eps_fn, x_T.clone(), s, grid, variance=variance, generator=torch.Generator().manual_seed(3)
    )
    x, g = x_T.clone(), torch.Generator().manual_seed(3)
    for i in range(len(grid) - 1):
        t = torch.full((300,), float(grid[i]), dtype=torch.float64)
        r = torch.full((300,), float(grid[i + 1]), dtype=torch.float64)
        step = p_mean_variance(eps_fn, x, t, s, r, variance=variance)
        x = step.mean
        if grid[i + 1] > 0:
            x = x + step.var.sqrt() * torch.randn(x.shape, generator=g, dtype=x.dtype)
    torch.testing.assert_close(fast, x, rtol=1e-10, atol=1e-10)


def test_score_step_coefficients_limit():
    """With beta_t = h gamma_t: A_t = 1 + h gamma_t / 2 + o(h), B_t = h gamma_t + o(h)."""
    from scorelab.processes import score_step_coefficients

    errors = []
    for T in (100, 1000, 10_000):
        s = make_schedule("linear", T=T)  # beta rescaled by 1000 / T: h = 1 / T
        t = torch.tensor([T // 2], dtype=torch.float64)
        beta = float(s.beta(T // 2))
        A, B, C = score_step_coefficients(s, t, variance="beta")
        errors.append((abs(float(A) - 1 - beta / 2), abs(float(B) - beta), beta))
        assert float(C) == pytest.approx(beta, rel=1e-12)  # C_t = beta_t = h gamma_t
    for (ea, eb, beta), (ea2, eb2, beta2) in zip(errors, errors[1:], strict=False):
        assert ea / beta > 5 * ea2 / beta2 and eb / beta > 5 * eb2 / beta2  # o(h): ratio -> 0


def test_trajectory_nfe_and_callback(mixture_2d):
    s = make_schedule("linear", T=100)
    seen = []
    out = sample(
        mixture_2d.eps_fn(s),
        (10, 2),
        s,
        "ddpm",
        20,
        record_trajectory=True,
        callback=lambda i, t, x, x0: seen.append(i),
        generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == 20 and seen == list(range(20))
    assert [t for t, _ in out.trajectory] == s.timesteps(20).tolist()
    assert torch.equal(out.trajectory[-1][1], out.x)


def test_same_generator_same_samples(mixture_2d):
    s = make_schedule("linear", T=50)
    runs = [
        sample(mixture_2d.eps_fn(s), (100, 2), s, generator=torch.Generator().manual_seed(9))
        for _ in range(2)
    ]
    assert torch.equal(runs[0].x, runs[1].x)


def test_registry_and_unknown_sampler():
    from scorelab.errors import ScorelabError

    assert SAMPLERS["ddpm"] is sample_ddpm
    with pytest.raises(ScorelabError, match="unknown sampler"):
        sample(lambda x, t: x, (2, 2), make_schedule(), "nope")


def _gaussian_gamma(s2: float, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Gamma_t = E||E[eps | x_t]||^2 / d for data N(0, s2 I): sigma^2 / (alpha_bar s2 + sigma^2)."""
    return (1 - alpha_bar) / (alpha_bar * s2 + 1 - alpha_bar)


def test_analytic_variance_is_the_exact_reverse_variance_for_gaussian_data():
    """For Gaussian data p(x_s | x_t) is Gaussian with Var = v_s - alpha_{t|s} v_s^2 / v_t
    (v = alpha_bar s2 + 1 - alpha_bar), and Analytic-DPM's variance is exactly that."""
    from scorelab.processes.ddpm import analytic_variance, posterior_variance

    sch, s2 = make_schedule("linear"), 0.3
    t = torch.tensor([1000.0, 500.0, 120.0, 7.0], dtype=torch.float64)
    s = torch.tensor([800.0, 499.0, 60.0, 1.0], dtype=torch.float64)
    ab_t, ab_s = sch.alpha_bar(t), sch.alpha_bar(s)
    v_t, v_s = ab_t * s2 + 1 - ab_t, ab_s * s2 + 1 - ab_s
    exact = v_s - (ab_t / ab_s) * v_s**2 / v_t
    got = analytic_variance(sch, t, s, _gaussian_gamma(s2, ab_t))
    torch.testing.assert_close(got, exact, rtol=1e-10, atol=1e-14)
    # Gamma = 1 (a point mass: x_0 known from x_t) leaves the posterior's beta_tilde
    torch.testing.assert_close(
        analytic_variance(sch, t, s, torch.ones(4)), posterior_variance(sch, t, s, "beta_tilde")
    )


def test_analytic_gamma_estimates_its_closed_form(generator):
    from scorelab.samplers.ancestral import analytic_gamma

    sch, s2 = make_schedule("linear"), 0.3
    mix = GaussianMixture(
        torch.ones(1), torch.zeros(1, 3, dtype=torch.float64), torch.full((1,), s2)
    )
    x0, _ = mix.sample(4000, generator=generator)
    grid = make_timesteps(sch, 8, "uniform")
    gamma = analytic_gamma(mix.eps_fn(sch), sch, grid, x0, generator=generator, batch_size=1500)
    exact = _gaussian_gamma(s2, sch.alpha_bar(grid[:-1]))
    # ||E[eps|x_t]||^2 / d = Gamma chi^2_d / d per example: sd of the mean is Gamma sqrt(2 / (n d))
    se = exact * math.sqrt(2 / x0.numel())
    assert ((gamma - exact).abs() < 4 * se).all(), (gamma, exact)


def test_analytic_variance_removes_the_fixed_variances_bias(mixture_2d):
    """At 100 steps with the exact eps, beta_tilde under- and beta over-disperses the modes;
    Analytic-DPM's variance (Gamma from data) is at 1 within sampling noise."""
    s = make_schedule("linear")
    eps_fn = mixture_2d.eps_fn(s)
    data, _ = mixture_2d.sample(4000, generator=torch.Generator().manual_seed(8))
    out = sample(
        eps_fn,
        (5000, 2),
        s,
        "ddpm",
        100,
        variance="analytic",
        data=data,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(9),
    )
    assert out.nfe == 100 + 100 * 4  # the grid's steps, and Gamma: 100 times x 4 batches
    _check_mixture(out.x, mixture_2d)
    tilde = sample(
        eps_fn,
        (5000, 2),
        s,
        "ddpm",
        100,
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(9),
    )
    with pytest.raises(AssertionError):
        _check_mixture(tilde.x, mixture_2d)
    with pytest.raises(ScorelabError, match="analytic"):
        sample(eps_fn, (10, 2), s, "ddpm", 10, variance="analytic")


def _point_mass_eps(schedule, m):
    """The exact eps of data that is the single point m: eps = (x - a_t m) / sigma_t, so every
    x0 prediction is m and the PF-ODE flow is x_t = a_t m + (sigma_t / sigma_T)(x_T - a_T m)."""

    def eps_fn(x, t):
        ab = schedule.alpha_bar(t.to(torch.float64)).to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return (x - ab.sqrt() * m) / (1 - ab).sqrt()

    return eps_fn


@pytest.mark.parametrize("grid_dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde", "analytic"])
def test_ddpm_on_a_point_mass_returns_the_point_whatever_the_grid_dtype(grid_dtype, variance):
    """The exact eps of a point mass m: the last step (to t = 0, no noise) is the x0
    prediction, m, to 1e-12 in float64 for a float32, float64 or integer grid of the same
    times (the step coefficients are float64 whatever the grid's dtype; in the grid's float32
    they are off by up to 6e-8 relative, which moves the result by about 1e-7)."""
    s = make_schedule("linear")
    m = torch.tensor([0.7, -1.3], dtype=torch.float64)
    grid = torch.tensor([1000, 640, 250, 30, 0]).to(grid_dtype)
    x_T = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gamma = torch.ones(4) if variance == "analytic" else None
    out = sample_ddpm(
        _point_mass_eps(s, m),
        x_T,
        s,
        grid,
        variance=variance,
        gamma=gamma,
        generator=torch.Generator().manual_seed(1),
    )
    assert float((out - m).abs().max()) < 1e-12


def test_ddpm_refuses_a_bad_variance_with_its_message():
    s = make_schedule("linear", T=100)
    x, grid = torch.zeros(3, 2), make_timesteps(s, 5)
    eps_fn = lambda x, t: torch.zeros_like(x)  # noqa: E731
    msg = "variance='analytic' needs gamma of shape (5,) or data= to estimate it"
    for gamma in (None, torch.ones(4), torch.ones(6), torch.ones(5, 1)):
        with pytest.raises(ScorelabError, match=f"^{re.escape(msg)}$"):
            sample_ddpm(eps_fn, x, s, grid, variance="analytic", gamma=gamma)
    msg = "unknown variance 'fixed'; choose one of: beta, beta_tilde, analytic"
    with pytest.raises(ScorelabError, match=f"^{re.escape(msg)}$"):
        sample_ddpm(eps_fn, x, s, grid, variance="fixed")


def _constant_v(v):
    return lambda x, t: torch.full_like(x, v)


@pytest.mark.parametrize("v, fixed", [(1.0, "beta"), (0.0, "beta_tilde")])
def test_learned_variance_at_its_ends_is_the_fixed_one(mixture_2d, v, fixed):
    """A learned variance head that returns v = 1 (Sigma = beta) or v = 0 (beta_tilde): the
    same samples as the fixed variance, from the same generator, on a respaced grid that
    ends at t = 1 (noise on every step but the last, to t = 0)."""
    s = make_schedule("linear")
    grid = make_timesteps(s, 12, "leading")
    x_T = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    eps_fn = mixture_2d.eps_fn(s)
    runs = [
        sample_ddpm(
            eps_fn, x_T.clone(), s, grid, variance=var, generator=torch.Generator().manual_seed(5)
        )
        for var in (_constant_v(v), fixed)
    ]
    torch.testing.assert_close(runs[0], runs[1], rtol=1e-10, atol=1e-10)


def test_learned_variance_sample_has_the_chains_exact_law():
    """Data N(mean, var) in 1-D, exact eps, a learned head v = 0.3: each step t -> s is
    x_s = (x_t - beta / sigma_t eps) / sqrt(alpha) + sqrt(Sigma) z with Sigma =
    beta^0.3 beta_tilde^0.7 (improved DDPM's interpolation of the log-variances), none on the
    step to t = 0, affine in x_t and z: the final law is Gaussian with the mean and variance
    computed here. 40000 draws from x_T ~ N(0, 1) on 8 respaced steps match both within 4
    standard errors; the variance with v = 0.3 lies strictly between those with v = 0 and 1."""
    s, mean, var, n = make_schedule("linear"), 0.5, 0.2, 40000
    gm = GaussianMixture(
        torch.ones(1), torch.full((1, 1), mean, dtype=torch.float64), torch.full((1,), var)
    )
    grid = make_timesteps(s, 8, "quadratic")
    ab = s.alpha_bar(grid).tolist()

    def law(v):
        mu, V = 0.0, 1.0
        for ab_t, ab_s in zip(ab, ab[1:], strict=False):
            vt = ab_t * var + 1 - ab_t
            alpha, beta = ab_t / ab_s, 1 - ab_t / ab_s
            slope = (1 - beta / vt) / math.sqrt(alpha)
            tilde = (1 - ab_s) / (1 - ab_t) * beta
            noise = beta**v * tilde ** (1 - v) if ab_s < 1 else 0.0
            mu = slope * mu + beta * math.sqrt(ab_t) * mean / vt / math.sqrt(alpha)
            V = slope**2 * V + noise
        return mu, V

    x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = sample_ddpm(
        gm.eps_fn(s),
        x_T,
        s,
        grid,
        variance=_constant_v(0.3),
        generator=torch.Generator().manual_seed(3),
    )
    mu, V = law(0.3)
    assert abs(float(x.mean()) - mu) < 4 * math.sqrt(V / n), (float(x.mean()), mu)
    assert abs(float(x.var()) - V) < 4 * V * math.sqrt(2 / (n - 1)), (float(x.var()), V)
    assert law(0.0)[1] + 10 * V * math.sqrt(2 / n) < V < law(1.0)[1] - 10 * V * math.sqrt(2 / n)
