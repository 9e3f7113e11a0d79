"""Convergence orders of the samplers, measured by step halving against reference solutions.

A solver of order p run with K, 2K and 4K steps has errors e_K ~ C K^-p, so the observed order
log2(e_K / e_2K) tends to p. The data are Gaussian mixtures with the exact eps (oracle.py), on
the continuous VP-SDE (beta(t) linear in t on [0, 1]), whose probability-flow ODE has a smooth
right-hand side. (A DiscreteSchedule's beta(t) is constant between integer times, so the PF-ODE
in t jumps at every integer and Heun's second order is hidden under those kinks; solvers that
work in alpha_bar, log-SNR or sigma do not see them.)

Every grid ends at the same last positive time T_MIN, where each solver returns the x0
prediction E[x0 | x_{T_MIN}]: its error is the ODE's error from T down to T_MIN. The reference
is an adaptive Dormand-Prince solve at rtol = atol = 1e-10, checked against the closed-form
flow of Gaussian data and against 2000 steps of third-order DPM-Solver++ on the mixture.

The stochastic samplers are tested in law: Euler-Maruyama's weak order and the variance that
heun-edm's churn must keep, with the exact eps of one Gaussian, whose final law is known.
"""

import math

import pytest
import torch

from scorelab import sample
from scorelab.oracle import GaussianMixture
from scorelab.processes.sde import make_sde
from scorelab.samplers import SAMPLERS, make_timesteps
from scorelab.samplers.timesteps import grid_coefficients

SDE = make_sde("vp")  # beta(t) = 0.1 + 19.9 t: the PF-ODE's right-hand side is smooth in t
T_MIN = 0.01  # the last positive time of every grid
STEPS = (80, 160, 320)  # the asymptotic regime of every solver below (checked from K = 40)
ORDER_TOLERANCE = 0.35

# deterministic solvers: (name, options, order); ode-rk45 is adaptive and tested by tolerance
FIXED_STEP = [
    ("ode-euler", {}, 1),
    ("ode-heun", {}, 2),
    ("ddim", {"eta": 0.0}, 1),
    ("heun-edm", {"churn": 0.0}, 2),
    ("dpm-solver++", {"order": 1}, 1),
    ("dpm-solver++", {"order": 2}, 2),
    ("dpm-solver++", {"order": 3}, 3),
    # UniPC: the corrector raises the predictor's order by one (Zhao et al. 2023, Theorem 3.1)
    ("unipc", {"order": 1}, 2),
    ("unipc", {"order": 2}, 3),
    ("unipc", {"order": 2, "variant": "bh1"}, 3),
    ("unipc", {"order": 2, "corrector": False}, 2),
    # the flow-native solvers in the process's own coordinates (here VP's x_t)
    ("flow-euler", {}, 1),
    ("flow-midpoint", {}, 2),
    ("flow-heun", {}, 2),
]
ADAPTIVE = frozenset({"ode-rk45"})
# samplers that draw noise at every step; euler-maruyama and heun-edm's churn are tested here
STOCHASTIC = frozenset(
    {"ddpm", "ddpm-score", "euler-maruyama", "langevin", "annealed-langevin", "pc"}
)


def _solve(eps_fn, x_T, name, steps, **options):
    return sample(
        eps_fn,
        tuple(x_T.shape),
        SDE,
        name,
        steps,
        x_T=x_T.clone(),
        t_min=T_MIN,
        dtype=torch.float64,
        **options,
    ).x


def _reference(eps_fn, x_T):
    """The PF-ODE from T to T_MIN by adaptive Dormand-Prince at 1e-10, then E[x0 | x_T_MIN]."""
    return _solve(eps_fn, x_T, "ode-rk45", None, t_end=T_MIN, rtol=1e-10, atol=1e-10)


def _x_T(n=64, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _max_error(x, exact):
    return float((x - exact).abs().max())


def _observed_orders(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:], strict=False)]


def _alpha_bar(t: float) -> float:
    return float(SDE.alpha_bar(torch.tensor(t, dtype=torch.float64)))


def _gaussian_flow(x_T, mean, var):
    """E[x0 | x_{T_MIN}] at the end of the exact PF-ODE flow from x_T, for data N(mean, var):
    (x_t - a_t mean) / sqrt(a_t^2 var + sigma_t^2) is constant along the flow."""
    ab_T, ab = _alpha_bar(float(SDE.T)), _alpha_bar(T_MIN)
    v_T, v = ab_T * var + 1 - ab_T, ab * var + 1 - ab
    x = math.sqrt(ab) * mean + (v / v_T).sqrt() * (x_T - math.sqrt(ab_T) * mean)
    return mean + var * math.sqrt(ab) * (x - math.sqrt(ab) * mean) / v


def _gaussian(d, mean, var):
    return GaussianMixture(
        torch.ones(1),
        torch.full((1, d), mean, dtype=torch.float64),
        torch.full((1,), var, dtype=torch.float64),
    )


def _exact_prior(gm, n, generator):
    """x_T ~ p_T = N(a_T mean, a_T^2 var + sigma_T^2) exactly, not N(0, I): the final law is
    then the data's, with no trace of the prior's mismatch."""
    ab_T = _alpha_bar(float(SDE.T))
    z = torch.randn(n, gm.dim, generator=generator, dtype=torch.float64)
    return math.sqrt(ab_T) * gm.means[0] + (ab_T * gm.variances[0] + 1 - ab_T).sqrt() * z


def test_every_registered_sampler_is_classified():
    """A new sampler must join one list: a deterministic one then gets an order test here."""
    deterministic = {name for name, _, _ in FIXED_STEP} | ADAPTIVE
    assert not deterministic & STOCHASTIC
    assert deterministic | STOCHASTIC == set(SAMPLERS)


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_samplers_draw_noise(name, mixture_2d):
    """The same x_T with two generators gives two answers: these really are not ODE solvers."""
    x_T = _x_T(32)
    a, b = (
        sample(
            mixture_2d.eps_fn(SDE),
            (32, 2),
            SDE,
            name,
            10,
            x_T=x_T.clone(),
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(seed),
        ).x
        for seed in (1, 2)
    )
    assert float((a - b).abs().max()) > 1e-3


def test_reference_is_the_exact_flow_on_gaussian_data():
    """Gaussian data: the PF-ODE flow is affine and known in closed form; the adaptive
    reference reproduces it to 1e-8, a thousandth of the smallest error measured below."""
    mean = torch.tensor([[1.0, -0.5]], dtype=torch.float64)
    var = torch.tensor([[0.3, 0.6]], dtype=torch.float64)
    gm = GaussianMixture(torch.ones(1), mean, var)
    x_T = _x_T()
    assert _max_error(_reference(gm.eps_fn(SDE), x_T), _gaussian_flow(x_T, mean, var)) < 1e-8


def test_reference_agrees_with_an_independent_solver(mixture_2d):
    """On the mixture (a nonlinear flow) the adaptive reference and 2000 fixed steps of
    DPM-Solver++(3) in log-SNR, two unrelated integrators, agree to 1e-6 (6e-8 measured)."""
    eps_fn, x_T = mixture_2d.eps_fn(SDE), _x_T()
    dpm = _solve(eps_fn, x_T, "dpm-solver++", 2000, order=3)
    assert _max_error(_reference(eps_fn, x_T), dpm) < 1e-6


@pytest.mark.parametrize(
    "name, options, order",
    FIXED_STEP,
    ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items())}".rstrip("-") for n, o, _ in FIXED_STEP],
)
def test_fixed_step_solver_order(name, options, order, mixture_2d):
    """From one x_T batch, the max error over the batch at K = 80, 160, 320 steps halves
    (first order) or quarters (second) or more with each doubling: the observed orders are
    within 0.35 of the solver's order. Measured: ode-euler 1.04, 1.02; ode-heun 1.98, 1.98;
    ddim 1.00, 1.00; heun-edm 2.04, 2.02; dpm-solver++ 1.00, 1.00 / 1.91, 1.97 / 3.15, 3.14.

    Planted one-line bugs that made it fail (each reverted; observed orders in brackets):
    ode-heun's corrector with only the first slope, d + d (1.04, 1.02); its second eps at
    timesteps[i] instead of timesteps[i + 1] (1.02, 1.01); its Euler predictor over h / 2 (0.88,
    0.94); its second slope with the eps weight of timesteps[i] (0.99, 0.99); ode-euler's eps
    weight beta / (2 sigma^2) for beta / (2 sigma) (no convergence, error 1.19); heun-edm's
    corrector with only the first slope (1.04, 1.02); its second eps at timesteps[i] (1.03,
    1.01); ddim's eps weight sqrt(1 - alpha_bar_t) for sqrt(1 - alpha_bar_s) (no convergence);
    DPM-Solver++(2)'s correction over r0 instead of 2 r0 (0.89, 0.94); DPM-Solver++(3) without
    the factor 2 on its second-derivative weight (2.45, 2.25); the PF-ODE drift with the score
    weight beta of the reverse SDE instead of beta / 2 (every solver, no convergence).
    """
    eps_fn, x_T = mixture_2d.eps_fn(SDE), _x_T()
    exact = _reference(eps_fn, x_T)
    errors = [_max_error(_solve(eps_fn, x_T, name, K, **options), exact) for K in STEPS]
    observed = _observed_orders(errors)
    assert all(abs(q - order) <= ORDER_TOLERANCE for q in observed), (errors, observed)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_unipc_predictor_with_bh2_is_dpm_solver_pp(order, mixture_2d):
    """UniP with B(h) = e^{-h} - 1 and rho = 1/2 at order 2 is DPM-Solver++(2M); at order 3
    its solved weights give DPM-Solver++(3M)'s step: the same samples to rounding. The
    corrector changes them (a different, higher-order method)."""
    eps_fn, x_T = mixture_2d.eps_fn(SDE), _x_T()
    unip = _solve(eps_fn, x_T, "unipc", 20, order=order, corrector=False)
    dpm = _solve(eps_fn, x_T, "dpm-solver++", 20, order=order)
    torch.testing.assert_close(unip, dpm, rtol=1e-10, atol=1e-10)
    unipc = _solve(eps_fn, x_T, "unipc", 20, order=order)
    assert _max_error(unipc, dpm) > 1e-4
    if order > 1:  # B(h) = -h is another predictor
        bh1 = _solve(eps_fn, x_T, "unipc", 20, order=order, corrector=False, variant="bh1")
        assert _max_error(bh1, dpm) > 1e-6


def test_rk45_error_follows_its_tolerance(mixture_2d):
    """Adaptive Dormand-Prince 5(4): at rtol = atol = tol the error stays within 30 tol, and
    each tenfold tightening shrinks it tenfold, within a factor of 10^0.5. Measured against
    2000 steps of DPM-Solver++(3): error / tol = 7.4, 6.3, 9.6 at tol = 1e-6, 1e-7, 1e-8.

    Planted one-line bugs that made it fail (each reverted): the stages evaluated at t + dt
    instead of t + c_i dt (errors 8e-3, 3e-3, 9e-4: thousands of times tol); a typo in a
    fifth-order weight, 500/1131 for 500/1113 (the step control never accepts: it raises); the
    PF-ODE drift with the reverse SDE's score weight beta instead of beta / 2.
    """
    eps_fn, x_T = mixture_2d.eps_fn(SDE), _x_T()
    exact = _solve(eps_fn, x_T, "dpm-solver++", 2000, order=3)
    tolerances = (1e-6, 1e-7, 1e-8)
    errors = [
        _max_error(_solve(eps_fn, x_T, "ode-rk45", None, t_end=T_MIN, rtol=tol, atol=tol), exact)
        for tol in tolerances
    ]
    assert all(e < 30 * tol for e, tol in zip(errors, tolerances, strict=True)), errors
    shrink = [math.log10(a / b) for a, b in zip(errors, errors[1:], strict=False)]
    assert all(abs(s - 1) <= 0.5 for s in shrink), (errors, shrink)


def _euler_maruyama_law(K, mean, var, ab_T):
    """Mean and variance of Euler-Maruyama's final sample for data N(mean, var) with the exact
    eps = sigma (x - a mean) / v, v = alpha_bar var + sigma^2, started from p_T: each step
    x <- (1 + hb / 2) x - hb eps / sigma + sqrt(hb) z, hb = int beta = log(alpha_bar_s /
    alpha_bar_t), is affine in x and z; the last step returns E[x0 | x] = mean + var a (x - a
    mean) / v."""
    g = grid_coefficients(SDE, make_timesteps(SDE, K, "uniform", t_min=T_MIN))
    mu, V = math.sqrt(ab_T) * mean, ab_T * var + 1 - ab_T
    for i in range(K):
        ab = g.alpha_bar[i]
        a, v = math.sqrt(ab), ab * var + 1 - ab
        if i == K - 1:
            return mean + var * a * (mu - a * mean) / v, (var * a / v) ** 2 * V
        hb = g.log_alpha_bar[i + 1] - g.log_alpha_bar[i]
        slope = 1 + hb / 2 - hb / v
        mu, V = slope * mu + hb * a * mean / v, slope**2 * V + hb
    raise AssertionError("unreachable")


def test_euler_maruyama_weak_order_one():
    """Gaussian data N(1, 0.25 I_8), exact eps, x_T from p_T: Euler-Maruyama's final sample is
    Gaussian with the mean and variance of _euler_maruyama_law. 160000 draws (20000 x 8) at
    K = 20, 40, 80 steps match that law within 4 standard errors (mean: sqrt(V / n), variance:
    V sqrt(2 / n)). The limit law is N(1, 0.25^2 alpha_bar / v) at T_MIN (the last step returns
    E[x0 | x]); the draws' variance error, 0.068, 0.031, 0.015 (0.0009 standard error),
    halves with each doubling of K: the observed weak orders are within 0.35 of 1 (measured
    1.11, 1.06), and so are those of the closed-form law's errors (mean: -0.0147, -0.0069,
    -0.0033, orders 1.09, 1.04; variance: 1.13, 1.06).

    Planted one-line bugs that made it fail (each reverted): the score taken as -eps / sigma_s
    (the next time's sigma) instead of -eps / sigma_t; the drift (1 + hb) x instead of
    (1 + hb / 2) x; noise sqrt(2 hb) instead of sqrt(hb); hb = beta(t) h, the left-point rule,
    instead of the exact integral the sampler documents (the mean at 20 steps moves by 31
    standard errors).
    """
    d, n_rows, mean, var = 8, 20000, 1.0, 0.25
    gm = _gaussian(d, mean, var)
    ab_T, ab = _alpha_bar(float(SDE.T)), _alpha_bar(T_MIN)
    V_limit = var**2 * ab / (ab * var + 1 - ab)
    n = n_rows * d
    var_errors, law_mean_errors, law_var_errors = [], [], []
    for K in (20, 40, 80):
        g = torch.Generator().manual_seed(K)
        x_T = _exact_prior(gm, n_rows, g)
        x = sample(
            gm.eps_fn(SDE),
            (n_rows, d),
            SDE,
            "euler-maruyama",
            K,
            x_T=x_T,
            t_min=T_MIN,
            dtype=torch.float64,
            generator=g,
        ).x
        mu_K, V_K = _euler_maruyama_law(K, mean, var, ab_T)
        assert abs(float(x.mean()) - mu_K) < 4 * math.sqrt(V_K / n), (K, float(x.mean()), mu_K)
        assert abs(float(x.var()) - V_K) < 4 * V_K * math.sqrt(2 / n), (K, float(x.var()), V_K)
        var_errors.append(float(x.var()) - V_limit)
        law_mean_errors.append(mu_K - mean)
        law_var_errors.append(V_K - V_limit)
    se = V_limit * math.sqrt(2 / n)
    assert min(var_errors) > 10 * se, (var_errors, se)  # the bias dominates the noise
    for errors in (var_errors, law_mean_errors, law_var_errors):
        observed = _observed_orders(errors)
        assert all(abs(q - 1) <= ORDER_TOLERANCE for q in observed), (errors, observed)


def _heun_edm_law(K, mean, var, churn):
    """Variance of heun-edm's final sample (Karras et al. 2022, Algorithm 2) for data
    N(mean, var), x_T from p_T: in x-hat = x / a the exact eps is sigma (x-hat - mean) /
    (var + sigma^2) at noise sigma, so x-hat - mean, N(0, var + sigma_0^2) at the start, gains
    variance sigma_hat^2 - sigma^2 from the churn and is scaled by the Heun step's factor.
    The mean stays exactly `mean`."""
    t = make_timesteps(SDE, K, "karras", t_min=T_MIN)[:-1]
    sig = torch.exp(-SDE.log_snr(t) / 2).tolist() + [0.0]
    gamma = min(churn / K, math.sqrt(2) - 1)
    V = var + sig[0] ** 2
    for i in range(K):
        sigma_hat = sig[i] * (1 + gamma)
        V += sigma_hat**2 - sig[i] ** 2
        step, k1 = sig[i + 1] - sigma_hat, sigma_hat / (var + sigma_hat**2)
        factor = 1 + step * k1
        if sig[i + 1] > 0:
            k2 = sig[i + 1] / (var + sig[i + 1] ** 2)
            factor = 1 + step / 2 * (k1 + k2 * (1 + step * k1))
        V *= factor**2
    return V


def test_heun_edm_churn_keeps_the_variance():
    """Churn adds noise sqrt(sigma_hat^2 - sigma^2) z and integrates from sigma_hat, so with
    the exact eps the law stays the data's up to the Heun steps' error. Data N(1, 0.25 I_8),
    x_T from p_T, churn = 10 (gamma = min(10 / K, sqrt(2) - 1) at every level):
    - at K = 8, 16, 32 steps 40000 draws (5000 x 8) match the chain's law (_heun_edm_law):
      mean 1 within 4 standard errors sqrt(V / n), variance within 4 V sqrt(2 / n);
    - that law's variance error shrinks at second order (0.076, 0.020, 0.0048, 0.0012 at 16
      to 128 steps: observed orders 1.91, 2.08, 2.02; 0.0017 is the draws' standard error),
      and at 256 steps the draws' variance is the exact V = 0.25^2 / (0.25 + sigma_hat^2)
      within 4 standard errors (measured 0.67), sigma_hat the churned last level, where the
      final E[x0 | x] is taken.

    Planted one-line bugs that made it fail (each reverted): eps evaluated at the unchurned
    time t instead of sigma_hat's (chain law at 8 steps); churn noise (sigma_hat - sigma) z
    instead of sqrt(sigma_hat^2 - sigma^2) z; the Euler predictor's step from the unchurned
    sigma; the Heun corrector's step from the unchurned sigma; sigma_hat computed but not used.
    """
    d, n_rows, mean, var, churn = 8, 5000, 1.0, 0.25, 10.0
    gm = _gaussian(d, mean, var)
    n = n_rows * d

    def draws(K):
        g = torch.Generator().manual_seed(K)
        return sample(
            gm.eps_fn(SDE),
            (n_rows, d),
            SDE,
            "heun-edm",
            K,
            x_T=_exact_prior(gm, n_rows, g),
            t_min=T_MIN,
            churn=churn,
            dtype=torch.float64,
            generator=g,
        ).x

    for K in (8, 16, 32):
        x, V_K = draws(K), _heun_edm_law(K, mean, var, churn)
        assert abs(float(x.mean()) - mean) < 4 * math.sqrt(V_K / n), (K, float(x.mean()))
        assert abs(float(x.var()) - V_K) < 4 * V_K * math.sqrt(2 / n), (K, float(x.var()), V_K)
    sigma_last = math.exp(-float(SDE.log_snr(torch.tensor(T_MIN, dtype=torch.float64))) / 2)

    def exact_var(K):
        sigma_hat = sigma_last * (1 + min(churn / K, math.sqrt(2) - 1))
        return var**2 / (var + sigma_hat**2)

    errors = [_heun_edm_law(K, mean, var, churn) - exact_var(K) for K in (16, 32, 64, 128)]
    observed = _observed_orders(errors)
    assert all(abs(q - 2) <= ORDER_TOLERANCE for q in observed), (errors, observed)
    x, V = draws(256), exact_var(256)
    assert abs(float(x.mean()) - mean) < 4 * math.sqrt(V / n), float(x.mean())
    assert abs(float(x.var()) - V) < 4 * V * math.sqrt(2 / n), (float(x.var()), V)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
@pytest.mark.parametrize(
    "rks, order", [([-0.8, 1.0], 2), ([-0.8, -1.5, 1.0], 3), ([-0.8, -1.5], 3)]
)
def test_unipc_weights_integrate_polynomials_exactly(rks, order, variant):
    """A step with solved weights through n points besides 0 is exact when the x0 prediction
    is a polynomial of degree n in lambda: -phi1 m(0) - B(h) sum rho_k D_k equals
    e^{-h} int_0^h e^u m(u) du (per unit a_s), with D_k = (m(r_k h) - m(0)) / r_k; the
    integral in closed form."""
    from scorelab.samplers.unipc import unipc_weights

    h = 0.7
    coeffs = [0.3, -1.1, 0.8, 0.45][: len(rks) + 1]  # m(u) = sum c_j u^j, degree n

    def m(u):
        return sum(c * u**j for j, c in enumerate(coeffs))

    # int_0^h e^u u^j du by repeated integration by parts: I_j = h^j e^h - j I_{j-1}
    integrals = [math.expm1(h)]
    for j in range(1, len(coeffs)):
        integrals.append(h**j * math.exp(h) - j * integrals[-1])
    exact = math.exp(-h) * sum(c * i for c, i in zip(coeffs, integrals, strict=True))
    phi1, b_h, rho = unipc_weights(rks, h, order, variant)
    diffs = [(m(r * h) - m(0.0)) / r for r in rks]
    step = -phi1 * m(0.0) - b_h * sum(p * d for p, d in zip(rho, diffs, strict=True))
    assert step == pytest.approx(exact, rel=1e-12)
