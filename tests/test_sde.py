"""VP, sub-VP and VE SDEs against their closed forms, and the samplers on each of them."""

from __future__ import annotations

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab._tensor import append_dims
from scorelab.errors import ScorelabError
from scorelab.processes import make_schedule, score_from_eps
from scorelab.processes.sde import SDES, VESDE, VPSDE, SubVPSDE, make_sde
from scorelab.samplers import sample

ALL = [VPSDE(), SubVPSDE(), VESDE()]
IDS = ["vp", "subvp", "ve"]
times = st.floats(1e-3, 1.0)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_marginal_matches_simulated_forward_sde(sde, generator):
    """Euler-Maruyama on dx = f x dt + g dW from x_0 = 1.5 (10k paths, 1000 steps) vs the
    closed-form mean alpha_t x_0 and variance sigma_t^2 at t = 0.1, 0.5, 1, within 5 SE."""
    n, steps = 10_000, 1000
    x = torch.full((n, 1), 1.5, dtype=torch.float64)
    h = 1.0 / steps
    checks = {100: 0.1, 500: 0.5, 1000: 1.0}
    for i in range(steps):
        t = torch.full((n,), (i + 0.5) * h, dtype=torch.float64)  # midpoint: O(h^2) bias
        g = append_dims(sde.diffusion(t), 2)
        x = (
            x
            + h * sde.drift(x, t)
            + math.sqrt(h) * g * torch.randn(x.shape, generator=generator, dtype=torch.float64)
        )
        if i + 1 in checks:
            tt = torch.tensor([checks[i + 1]], dtype=torch.float64)
            q = sde.marginal(torch.tensor([[1.5]], dtype=torch.float64), tt)
            mean, var = float(q.mean), float(q.var)
            se_mean, se_var = math.sqrt(var / n), var * math.sqrt(2 / n)
            assert abs(float(x.mean()) - mean) < 5 * se_mean + 1e-3 * abs(mean)
            assert abs(float(x.var()) - var) < 5 * se_var + 2e-3 * var


@pytest.mark.parametrize("N", [100, 1000, 10_000])
def test_vp_marginal_is_the_limit_of_ddpm(N):
    """beta_i = beta(t_i)/N gives alpha_bar_N(t) -> exp(-B(t)) with an O(1/N) gap in log:
    sum log(1 - beta_i) = -sum beta_i - sum beta_i^2/2 - ..., where the right-endpoint Riemann
    sum is off by (beta_max - beta_min)/(2N) and sum beta_i^2/2 ~ int beta^2/(2N) = 67/N."""
    sde = VPSDE()
    i = torch.arange(1, N + 1, dtype=torch.float64)
    betas = (sde.beta_min + (i / N) * (sde.beta_max - sde.beta_min)) / N
    log_ab = torch.cumsum(torch.log1p(-betas), 0)
    t = i / N
    exact = 2 * torch.log(sde.mean_coeff(t))
    gap = float((log_ab - exact).abs().max())
    bound = (
        (sde.beta_max**3 - sde.beta_min**3) / (6 * (sde.beta_max - sde.beta_min))
        + (sde.beta_max - sde.beta_min) / 2
    ) / N
    assert 0.5 * bound < gap < 1.2 * bound


def test_vp_marginal_matches_linear_ddpm_schedule():
    """DDPM's linear schedule (1e-4..0.02, T=1000) is VP with beta_min=0.1, beta_max=20."""
    sde, schedule = VPSDE(), make_schedule("linear", T=1000)
    t = torch.tensor([100.0, 500.0, 1000.0], dtype=torch.float64)
    log_ab_ddpm = schedule.log_alpha_bar(t)
    log_ab_sde = 2 * torch.log(sde.mean_coeff(t / 1000))
    assert torch.allclose(log_ab_ddpm, log_ab_sde, rtol=1e-2)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@given(t=times)
def test_vp_equivalent_view_identities(sde, t):
    """alpha_bar_eq = a^2/(a^2+s^2); log-SNR = log a^2/s^2 = logit(alpha_bar_eq);
    input_scale^2 = 1/(a^2+s^2); beta_rate = -d log alpha_bar_eq/dt (central differences)."""
    tt = torch.tensor([t], dtype=torch.float64)
    a, s = sde.mean_coeff(tt), sde.std(tt)
    ab = sde.alpha_bar(tt)
    assert torch.allclose(ab, a**2 / (a**2 + s**2), rtol=1e-10)
    assert torch.allclose(sde.log_snr(tt), torch.log(a**2 / s**2), rtol=1e-9, atol=1e-9)
    assert torch.allclose(sde.log_snr(tt), torch.logit(ab), rtol=1e-6, atol=1e-6)
    assert torch.allclose(sde.input_scale(tt) ** 2, 1 / (a**2 + s**2), rtol=1e-10)
    h = 1e-6
    fd = -(sde.log_alpha_bar(tt + h) - sde.log_alpha_bar(tt - h)) / (2 * h)
    assert torch.allclose(sde.beta_rate(tt), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@given(t=times)
def test_time_at_log_snr_inverts_log_snr(sde, t):
    tt = torch.tensor([t], dtype=torch.float64)
    back = sde.time_at_log_snr(sde.log_snr(tt))
    assert abs(float(back) - t) < 1e-9


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@given(t=times)
def test_drift_and_diffusion_give_the_marginal_ode(sde, t):
    """d log alpha/dt = f and d sigma^2/dt = 2 f sigma^2 + g^2, by central differences."""
    tt = torch.tensor([t], dtype=torch.float64)
    h = 1e-6
    f = float(sde.drift(torch.ones(1, 1, dtype=torch.float64), tt))
    dlog_a = (torch.log(sde.mean_coeff(tt + h)) - torch.log(sde.mean_coeff(tt - h))) / (2 * h)
    dvar = (sde.std(tt + h) ** 2 - sde.std(tt - h) ** 2) / (2 * h)
    g2 = sde.diffusion(tt) ** 2
    assert abs(float(dlog_a) - f) < 1e-5 * (1 + abs(f))
    assert torch.allclose(dvar, 2 * f * sde.std(tt) ** 2 + g2, rtol=1e-5, atol=1e-7)


def _paper_coefficients(sde):
    """f(t) and g(t)^2 as Song et al. 2021 (appendix B) write them, in Python floats:
    VP f = -beta/2, g^2 = beta; sub-VP g^2 = beta (1 - e^{-2 B}); VE f = 0,
    g = sigma_min r^t sqrt(2 log r), r = sigma_max / sigma_min."""
    if sde.name == "ve":
        r = sde.sigma_max / sde.sigma_min
        return (lambda t: 0.0), (lambda t: sde.sigma_min**2 * r ** (2 * t) * 2 * math.log(r))
    b0, b1 = sde.beta_min, sde.beta_max

    def f(t):
        return -0.5 * (b0 + t * (b1 - b0))

    def g2(t):
        beta = b0 + t * (b1 - b0)
        return (
            beta if sde.name == "vp" else beta * -math.expm1(-2 * (b0 * t + (b1 - b0) * t**2 / 2))
        )

    return f, g2


def _integrated_marginal(sde, t: float, m0: float, v0: float, steps: int = 1000):
    """Mean and variance of x_t for x_0 ~ N(m0, v0) by integrating dm/dt = f m and
    dv/dt = 2 f v + g^2 with RK4 (the SDE's moment equations), not its closed forms."""
    f, g2 = _paper_coefficients(sde)

    def rhs(s, m, v):
        return f(s) * m, 2 * f(s) * v + g2(s)

    h, m, v = t / steps, m0, v0
    for i in range(steps):
        s = i * h
        k1 = rhs(s, m, v)
        k2 = rhs(s + h / 2, m + h / 2 * k1[0], v + h / 2 * k1[1])
        k3 = rhs(s + h / 2, m + h / 2 * k2[0], v + h / 2 * k2[1])
        k4 = rhs(s + h, m + h * k3[0], v + h * k3[1])
        m += h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        v += h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return m, v


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_marginal_solves_the_moment_equations_of_the_sde(sde):
    """q(x_t | x_0 = 1.5) against the RK4 solution of dm/dt = f m, dv/dt = 2 f v + g^2 with the
    coefficients of the paper written out here (rtol 1e-7). Catches a closed form that does
    not belong to the SDE: sub-VP's sigma_t^2 = (1 - e^{-B})^2 left unsquared, VE's
    sigma_t taken as score_sde's sigma_min r^t (not 0 at t = 0), VP's log alpha_t = -B for -B/2."""
    for t in (0.05, 0.3, 1.0):
        m, v = _integrated_marginal(sde, t, 1.5, 0.0)
        q = sde.marginal(
            torch.tensor([[1.5]], dtype=torch.float64), torch.tensor([t], dtype=torch.float64)
        )
        assert float(q.mean) == pytest.approx(m, rel=1e-7), t
        assert float(q.var) == pytest.approx(v, rel=1e-7), t


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_reverse_drift_is_f_x_minus_g2_times_the_exact_score(sde):
    """Gaussian data N(0.5, 0.3 I) in 3-D: its marginal N(m_t, v_t) comes from the RK4 moment
    equations, its exact score -(x - m_t) / v_t must be what the oracle gives, and the reverse
    drift must be f x - g^2 score (reverse SDE) and f x - g^2 score / 2 (PF-ODE) with f and
    g^2 from the paper, not from the SDE object. Catches a wrong _g2 (sub-VP's
    1 - e^{-2B} as 1 - e^{-B}), which the old restatement with sde.diffusion passed, and the
    factor 1/2 on the wrong branch."""
    from scorelab.oracle import GaussianMixture

    f, g2 = _paper_coefficients(sde)
    data = GaussianMixture(torch.ones(1), torch.full((1, 3), 0.5), torch.tensor([0.3]))
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    for t in (0.05, 0.3, 0.9):
        m, v = _integrated_marginal(sde, t, 0.5, 0.3)
        score = -(x - m) / v
        tt = torch.full((6,), t, dtype=torch.float64)
        torch.testing.assert_close(data.score_fn(sde)(x, tt), score, rtol=1e-7, atol=1e-9)
        rev = sde.reverse_drift(x, tt, score)
        ode = sde.reverse_drift(x, tt, score, probability_flow=True)
        torch.testing.assert_close(rev, f(t) * x - g2(t) * score, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ode, f(t) * x - 0.5 * g2(t) * score, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_prior_is_the_marginal_at_T_of_unit_variance_data(sde, generator):
    """The prior N(0, v_T I), v_T the variance at T of x_0 ~ N(0, 1) from the RK4 moment
    equations (1 for VP, e^{-B} + (1 - e^{-B})^2 for sub-VP, 1 + sigma_T^2 for VE); its
    log-density against torch.distributions; its samples and 10,000 Euler-Maruyama paths of
    the forward SDE from N(0, 1) data both have variance v_T (within 5 standard errors,
    v sqrt(2 / n), plus 0.2% for the 1000-step discretisation). Catches a prior variance
    that drops the square of alpha_T or forgets the data's variance."""
    _, v_T = _integrated_marginal(sde, sde.T, 0.0, 1.0)
    assert sde.prior_var() == pytest.approx(v_T, rel=1e-7)
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64) * math.sqrt(v_T)
    ref = torch.distributions.Normal(0.0, math.sqrt(v_T)).log_prob(x).sum(1)
    torch.testing.assert_close(sde.prior_log_prob(x), ref, rtol=1e-6, atol=0)
    n = 10_000
    z = sde.prior_sample((n, 1), generator=generator, dtype=torch.float64)
    assert abs(float(z.var()) - v_T) < 5 * v_T * math.sqrt(2 / n)
    x = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    steps = 1000
    h = sde.T / steps
    for i in range(steps):
        t = torch.full((n,), (i + 0.5) * h, dtype=torch.float64)  # midpoint: O(h^2) bias
        g = append_dims(sde.diffusion(t), 2)
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        x = x + h * sde.drift(x, t) + math.sqrt(h) * g * noise
    assert abs(float(x.var()) - v_T) < 5 * v_T * math.sqrt(2 / n) + 2e-3 * v_T


def test_make_sde_and_round_trip():
    for name in SDES:
        sde = make_sde(name)
        d = sde.to_dict()
        assert make_sde(**d) == sde and d["name"] == name
    with pytest.raises(ScorelabError, match="choose one of: vp, subvp, ve"):
        make_sde("nope")
    with pytest.raises(ScorelabError, match="sigma_max"):
        make_sde("ve", sigma_max=0.001)
    with pytest.raises(ScorelabError, match="bad parameters"):
        make_sde("vp", sigma_max=3.0)


@pytest.mark.parametrize("sde", [SubVPSDE(), VESDE()], ids=["subvp", "ve"])
@pytest.mark.parametrize(
    "sampler,steps", [("ddim", 50), ("euler-maruyama", 400), ("heun-edm", 25), ("dpm-solver++", 25)]
)
def test_samplers_recover_mixture_moments_on_every_sde(sde, sampler, steps, mixture_2d):
    """With the exact eps of the mixture under the SDE, samples have the mixture's mean and
    variance per coordinate (4000 samples; mean within 5 SE, variance within 5 SE plus the
    discretisation error of a few-step sampler, 6%)."""
    n = 4000
    eps_fn = mixture_2d.eps_fn(sde)
    out = sample(
        eps_fn,
        (n, 2),
        sde,
        sampler,
        steps,
        generator=torch.Generator().manual_seed(3),
        dtype=torch.float64,
    ).x
    x0, _ = mixture_2d.sample(200_000, generator=torch.Generator().manual_seed(4))
    mean, var = x0.mean(0), x0.var(0)
    assert ((out.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all()
    assert ((out.var(0) / var - 1).abs() < 5 * math.sqrt(2 / n) + 0.06).all()


def test_oracle_score_under_an_sde_is_the_score_of_the_marginal(mixture_2d):
    """For VE, p_t = p_0 * N(0, sigma_t^2): the oracle's score (through the VP view) equals the
    autograd gradient of the log-density of the mixture with variances + sigma_t^2."""
    from scorelab.oracle import GaussianMixture

    sde = VESDE()
    t = torch.full((7,), 0.4, dtype=torch.float64)
    s2 = float(sde.std(t[:1]) ** 2)
    noisy = GaussianMixture(mixture_2d.weights, mixture_2d.means, mixture_2d.variances + s2)
    x = torch.randn(7, 2, dtype=torch.float64) * 3
    assert torch.allclose(mixture_2d.score_fn(sde)(x, t), noisy.score(x), rtol=1e-9)
    # and score_from_eps(eps_fn) = -eps / sigma_t in the SDE's coordinates
    s = score_from_eps(mixture_2d.eps_fn(sde), sde)(x, t)
    assert torch.allclose(s, noisy.score(x), rtol=1e-9)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
@pytest.mark.parametrize("prediction", ["x0", "score", "v"])
def test_parameterization_round_trips_on_every_sde(sde, prediction, mixture_2d):
    """The exact eps, turned into a prediction of each kind in the SDE's own coordinates
    (x0 = E[x_0 | x_t], score = -eps / sigma_t, v in the VP view) and back, is unchanged."""
    from scorelab.processes import as_eps_fn, denoiser_from_eps, from_eps

    eps_fn = mixture_2d.eps_fn(sde)
    t = torch.full((9,), 0.37, dtype=torch.float64)
    x = torch.randn(9, 2, dtype=torch.float64) * 2
    c = append_dims(sde.input_scale(t), 2)
    if prediction == "x0":
        model = denoiser_from_eps(eps_fn, sde)
    elif prediction == "score":
        model = score_from_eps(eps_fn, sde)
    else:
        model = lambda x, t: from_eps(eps_fn(x, t), "v", c * x, sde.alpha_bar(t))  # noqa: E731
    back = as_eps_fn(model, sde, prediction)(x, t)
    assert torch.allclose(back, eps_fn(x, t), rtol=1e-9, atol=1e-12)
    if prediction == "x0":  # x0 = (x_t - sigma_t eps) / alpha_t in the SDE's own coordinates
        a, s = append_dims(sde.mean_coeff(t), 2), append_dims(sde.std(t), 2)
        assert torch.allclose(model(x, t), (x - s * eps_fn(x, t)) / a, rtol=1e-9)


def test_sde_is_an_abstract_base_whose_five_closed_forms_give_the_rest():
    """SDE needs log alpha_t, sigma_t², f, g² and d sigma²/dt; a subclass that gives only those
    (here VP with a constant beta = 2, written out by hand) gets the marginals, the VP view and
    time_at_log_snr (by bisection), equal to VPSDE(2, 2)'s closed forms."""
    import dataclasses

    from scorelab.processes.sde import SDE

    with pytest.raises(TypeError, match="abstract"):
        SDE()

    @dataclasses.dataclass(frozen=True)
    class ConstantVP(SDE):
        name = "constant-vp"

        def _log_mean(self, t):
            return -t

        def _var(self, t):
            return -torch.expm1(-2 * t)

        def _f(self, t):
            return -torch.ones_like(t)

        def _g2(self, t):
            return 2 * torch.ones_like(t)

        def _dvar(self, t):
            return 2 * torch.exp(-2 * t)

    mine, ref = ConstantVP(), VPSDE(beta_min=2.0, beta_max=2.0)
    t = torch.linspace(0.01, 1.0, 50, dtype=torch.float64)
    for name in ("alpha_bar", "log_snr", "std", "mean_coeff", "beta_rate"):
        torch.testing.assert_close(getattr(mine, name)(t), getattr(ref, name)(t))
    lam = ref.log_snr(t)
    torch.testing.assert_close(mine.time_at_log_snr(lam), t, rtol=0, atol=1e-9)


def _closed_forms(sde, t: float) -> dict[str, float]:
    """alpha_t, sigma_t, g(t), f(t), the log-SNR, the input scale and beta_rate at one time,
    in Python floats from the formulas of the module docstring (VP: B = beta_min t +
    (beta_max - beta_min) t^2 / 2; VE: sigma^2 = sigma_min^2 ((sigma_max / sigma_min)^{2t} - 1))."""
    if isinstance(sde, VESDE):
        L = math.log(sde.sigma_max / sde.sigma_min)
        var = sde.sigma_min**2 * math.expm1(2 * t * L)
        dvar = sde.sigma_min**2 * 2 * L * math.exp(2 * t * L)
        a2, f, g2 = 1.0, 0.0, dvar
    else:
        beta = sde.beta_min + t * (sde.beta_max - sde.beta_min)
        B = sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2
        a2, f = math.exp(-B), -beta / 2
        if isinstance(sde, SubVPSDE):
            var, g2 = math.expm1(-B) ** 2, beta * -math.expm1(-2 * B)
            dvar = 2 * beta * math.exp(-B) * -math.expm1(-B)
        else:
            var, g2, dvar = -math.expm1(-B), beta, beta * math.exp(-B)
    return {
        "mean_coeff": math.sqrt(a2),
        "std": math.sqrt(var),
        "diffusion": math.sqrt(g2),
        "f": f,
        "g2": g2,
        "log_snr": math.log(a2 / var),
        "input_scale": 1 / math.sqrt(a2 + var),
        "beta_rate": -2 * f + (2 * a2 * f + dvar) / (a2 + var),
    }


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_outputs_take_the_dtype_of_t_and_x(sde):
    """float32 (and integer) times give float32 coefficients, float64 times float64; drift,
    reverse drift and marginal follow x's dtype under float64 times; log_alpha_bar stays
    float64 for float32 times. Values against the closed forms in Python floats."""
    for t, dtype in (
        (torch.tensor([0.25, 1.0], dtype=torch.float64), torch.float64),
        (torch.tensor([0.25, 1.0]), torch.float32),
        (torch.tensor([1, 1]), torch.float32),
    ):
        times = t.double().tolist()
        for name in ("mean_coeff", "std", "diffusion", "log_snr", "input_scale", "beta_rate"):
            got = getattr(sde, name)(t)
            assert got.dtype == dtype, name
            expected = [_closed_forms(sde, u)[name] for u in times]
            assert got.tolist() == pytest.approx(expected, rel=1e-6), name
    t = torch.tensor([0.25, 0.5], dtype=torch.float64)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    score = torch.tensor([[0.3, 0.1], [-0.2, 0.4]])
    c = [_closed_forms(sde, u) for u in t.tolist()]
    f = torch.tensor([[k["f"]] for k in c], dtype=torch.float64)
    g2 = torch.tensor([[k["g2"]] for k in c], dtype=torch.float64)
    drift = sde.drift(x, t)
    assert drift.dtype == torch.float32
    torch.testing.assert_close(drift, (f * x.double()).float())
    for flow, weight in ((False, 1.0), (True, 0.5)):
        rev = sde.reverse_drift(x, t, score, probability_flow=flow)
        assert rev.dtype == torch.float32
        ref = f * x.double() - weight * g2 * score.double()
        torch.testing.assert_close(rev, ref.float())
    q = sde.marginal(x, t)
    assert q.mean.dtype == torch.float32 and q.var.dtype == torch.float32
    a = torch.tensor([[k["mean_coeff"]] for k in c], dtype=torch.float64)
    var = torch.tensor([[k["std"] ** 2] for k in c], dtype=torch.float64)
    torch.testing.assert_close(q.mean, (a * x.double()).float())
    torch.testing.assert_close(q.var, var.expand(2, 2).float())
    t32 = torch.tensor([sde.t_min])
    log_ab = sde.log_alpha_bar(t32)
    assert log_ab.dtype == torch.float64
    k = _closed_forms(sde, float(t32))
    a2, v = k["mean_coeff"] ** 2, k["std"] ** 2
    assert float(log_ab) == pytest.approx(math.log(a2) - math.log(a2 + v), rel=1e-9)


def test_ve_log_alpha_bar_keeps_the_float64_precision_near_t_min():
    """alpha_bar_eq = 1 / (1 + sigma_t^2) is 1 - 1.7e-8 at t = 1e-5: float64 keeps it from a
    float32 time, where a float32 computation would round it to 1 (sigma = 0)."""
    sde = VESDE()
    t = torch.tensor([1e-5])
    var = 0.01**2 * math.expm1(2 * float(t) * math.log(5000))
    got = sde.log_alpha_bar(t)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(-math.log1p(var), rel=1e-9)
    assert float(sde.sigma(t)) == pytest.approx(math.sqrt(var / (1 + var)), rel=1e-6)


def test_prior_sample_uses_the_generator_dtype_and_device():
    """x_T = sqrt(v_T) z with z the generator's draws, v_T = 1 + sigma_min^2 ((sigma_max /
    sigma_min)^2 - 1) for VE; in the dtype and on the device asked for."""
    sde = VESDE(sigma_min=0.1, sigma_max=3.0)
    v_T = 1 + 0.1**2 * ((3.0 / 0.1) ** 2 - 1)
    got = sde.prior_sample((4, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, z * math.sqrt(v_T))
    on_meta = sde.prior_sample((3, 2), device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == (3, 2)


def test_prior_log_prob_of_a_batch_of_one():
    sde = VESDE(sigma_min=0.1, sigma_max=3.0)
    v_T = 1 + 0.1**2 * ((3.0 / 0.1) ** 2 - 1)
    x = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    expected = sum(-0.5 * u**2 / v_T - 0.5 * math.log(2 * math.pi * v_T) for u in x[0].tolist())
    assert sde.prior_log_prob(x).tolist() == pytest.approx([expected], rel=1e-12)


@pytest.mark.parametrize("sde", ALL, ids=IDS)
def test_time_at_log_snr_is_float64_exact_at_tiny_times_and_clamped_to_T(sde):
    """The closed-form inverse: float64 from float32 or Python-float log-SNRs, a relative error
    of 1e-12 at times down to 1e-9 (bisection on [0, 1] has an absolute error near 1e-18, a
    relative one of 1e-10 there), and a log-SNR below that of T gives T."""
    t = torch.tensor([1e-9, 3.7e-8, 2.2e-6, 0.3], dtype=torch.float64)
    back = sde.time_at_log_snr(sde.log_snr(t))
    torch.testing.assert_close(back, t, rtol=1e-12, atol=0)
    lam_T = _closed_forms(sde, sde.T)["log_snr"]
    low = sde.time_at_log_snr(torch.tensor([lam_T - 5.0], dtype=torch.float64))
    assert low.tolist() == [sde.T]
    lam = _closed_forms(sde, 0.5)["log_snr"]
    for given_lam in (torch.tensor([lam], dtype=torch.float32), lam):
        got = sde.time_at_log_snr(given_lam)
        assert got.dtype == torch.float64
    assert float(sde.time_at_log_snr(lam)) == pytest.approx(0.5, rel=1e-12)


def test_sde_parameters_are_validated_with_messages():
    def message(key, value):
        return rf"^{key} must be a finite number > 0, got {re.escape(repr(value))}$"

    for key in ("beta_min", "beta_max"):
        for value in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ScorelabError, match=message(key, value)):
                VPSDE(**{key: value})
    for key in ("sigma_min", "sigma_max"):
        for value in (0.0, -1.0, float("inf"), float("nan")):
            with pytest.raises(ScorelabError, match=message(key, value)):
                VESDE(**{key: value})
    with pytest.raises(ScorelabError, match=r"^beta_max must be >= beta_min$"):
        VPSDE(beta_min=2.0, beta_max=1.0)
    assert VPSDE(beta_min=2.0, beta_max=2.0).beta_max == 2.0
    for sigma_max in (1.0, 0.5):
        with pytest.raises(ScorelabError, match=r"^sigma_max must be > sigma_min$"):
            VESDE(sigma_min=1.0, sigma_max=sigma_max)
    assert make_sde() == VPSDE()
