"""Every sampler against the exact oracle; solver identities; NFE counts; time grids."""

import math
import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab import make_schedule, sample
from scorelab.numerics.odeint import odeint_rk45
from scorelab.oracle import GaussianMixture
from scorelab.samplers import SAMPLERS, SPACINGS, make_timesteps
from scorelab.samplers.continuous import pf_ode_drift
from scorelab.samplers.ddim import sample_ddim
from tests.test_samplers import _check_mixture, _point_mass_eps

SCHEDULE = make_schedule("linear")

# name -> (steps, options, allowance on the pooled variance ratio); generous settings
GENEROUS = {
    "ddpm": (1000, {"variance": "beta_tilde"}, 0.0),
    "ddpm-score": (1000, {"variance": "beta_tilde"}, 0.0),
    "ddim": (200, {}, 0.0),
    "dpm-solver++": (50, {"order": 2}, 0.0),
    "unipc": (50, {"order": 2}, 0.0),
    "heun-edm": (40, {}, 0.0),
    "ode-euler": (500, {}, 0.0),
    "ode-heun": (100, {}, 0.0),
    "flow-euler": (500, {}, 0.0),
    "flow-midpoint": (100, {}, 0.0),
    "flow-heun": (100, {}, 0.0),
    "ode-rk45": (None, {"rtol": 1e-5, "atol": 1e-5}, 0.0),
    "euler-maruyama": (1000, {}, 0.0),
    "pc": (500, {"n_corrector": 1, "snr": 0.1}, 0.0),
    "annealed-langevin": (100, {"n_inner": 5}, 0.15),
}
# Langevin at one time rarely crosses between well-separated modes, so the mixture's mode
# weights are out of its reach: its exact oracle is one Gaussian (same tuple as GENEROUS)
ONE_GAUSSIAN = {"langevin": (1000, {"step_size": 0.01, "t": 1.0}, 0.02)}
# the samplers with an exact-oracle accuracy test here; tests/test_sampler_registry.py checks
# that these are all the registered samplers
ORACLE_TESTED = frozenset(GENEROUS) | frozenset(ONE_GAUSSIAN)


@pytest.mark.parametrize("name", sorted(GENEROUS))
def test_every_sampler_reproduces_the_mixture(name, mixture_2d):
    steps, options, bias = GENEROUS[name]
    out = sample(
        mixture_2d.eps_fn(SCHEDULE),
        (4000, 2),
        SCHEDULE,
        name,
        steps,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
        **options,
    )
    assert torch.isfinite(out.x).all()
    _check_mixture(out.x, mixture_2d, bias=bias)


@pytest.mark.parametrize("name", sorted(ONE_GAUSSIAN))
def test_langevin_samples_a_gaussian(name):
    """Roberts & Tweedie 1996: unadjusted Langevin with a small step converges to the target p_t."""
    steps, options, bias = ONE_GAUSSIAN[name]
    gm = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -0.5]]), torch.tensor([[0.3, 0.6]]))
    out = sample(
        gm.eps_fn(SCHEDULE),
        (4000, 2),
        SCHEDULE,
        name,
        steps,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
        **options,
    )
    _check_mixture(out.x, gm, bias=bias)  # O(step) bias of the unadjusted chain


# 64-D Gaussian data shaped (1, 8, 8): every pixel has its own mean and variance, so a
# transposed, permuted or mis-broadcast pixel shows in its moments
IMAGE_DATA = GaussianMixture(
    torch.ones(1),
    torch.linspace(-1, 1, 64, dtype=torch.float64)[None],
    torch.linspace(0.05, 0.5, 64, dtype=torch.float64)[None],
)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_image_shaped_batches(name):
    """(B, 1, 8, 8): a sampler is rank-agnostic. The image-shaped run equals the flattened
    (B, 64) run from the same noise bit for bit (float32, 10 steps): no step reshapes or
    broadcasts by rank. At the sampler's accuracy settings 400 image-shaped draws (float64)
    have each pixel's mean within 5 standard errors, the pooled standardized variance 1
    within 5 standard errors plus the sampler's allowance (_check_mixture), and each pixel's
    variance within 5 standard errors (sqrt(2 / n) relative) plus that allowance.

    Planted bugs that made it fail (each reverted): Langevin's snr step from norms over dim 1
    instead of each example's whole tensor (annealed-langevin and pc); one noise draw per
    (example, channel) broadcast over the pixels (the six noisy samplers); ddim's eps weight
    sqrt(1 - alpha_bar_t) for sqrt(1 - alpha_bar_s); Euler-Maruyama's noise sqrt(1.2 hb)."""
    steps, options, bias = {**GENEROUS, **ONE_GAUSSIAN}[name]
    eps_fn = IMAGE_DATA.eps_fn(SCHEDULE)

    def run(shape, steps, dtype):
        return sample(
            eps_fn,
            shape,
            SCHEDULE,
            name,
            steps,
            generator=torch.Generator().manual_seed(0),
            dtype=dtype,
            **options,
        ).x

    image = run((16, 1, 8, 8), 10, torch.float32)
    assert image.shape == (16, 1, 8, 8)
    assert torch.equal(image.reshape(16, 64), run((16, 64), 10, torch.float32))
    n = 400
    x = run((n, 1, 8, 8), steps, torch.float64)
    _check_mixture(x, IMAGE_DATA, bias=bias)
    ratio = x.reshape(n, 64).var(0) / IMAGE_DATA.variances[0]
    assert ((ratio - 1).abs() < 5 * math.sqrt(2 / n) + bias).all(), ratio


@pytest.mark.parametrize(
    "name, K, expected",
    [
        ("ddpm", 10, 10),
        ("ddpm-score", 10, 10),
        ("ddim", 10, 10),
        ("dpm-solver++", 10, 10),
        ("heun-edm", 10, 19),
        ("ode-euler", 10, 10),
        ("ode-heun", 10, 19),
        ("euler-maruyama", 10, 10),
        ("langevin", 10, 10),
    ],
)
def test_nfe_counts(name, K, expected, mixture_2d):
    out = sample(
        mixture_2d.eps_fn(SCHEDULE),
        (4, 2),
        SCHEDULE,
        name,
        K,
        generator=torch.Generator().manual_seed(0),
    )
    assert out.nfe == expected


def test_nfe_of_corrector_and_annealed_langevin(mixture_2d):
    eps_fn = mixture_2d.eps_fn(SCHEDULE)
    pc = sample(eps_fn, (4, 2), SCHEDULE, "pc", 10, n_corrector=2)
    assert pc.nfe == 10 + 2 * 9  # no corrector after the last step to t = 0
    al = sample(eps_fn, (4, 2), SCHEDULE, "annealed-langevin", 10, n_inner=3)
    assert al.nfe == 10 * 3 + 1
    loose = sample(eps_fn, (4, 2), SCHEDULE, "ode-rk45", rtol=1e-2, atol=1e-2)
    tight = sample(eps_fn, (4, 2), SCHEDULE, "ode-rk45", rtol=1e-6, atol=1e-6)
    assert 0 < loose.nfe < tight.nfe


def test_ddim_eta_one_equals_respaced_ddpm(mixture_2d):
    eps_fn = mixture_2d.eps_fn(SCHEDULE)
    for steps in (1000, 50, 7):
        a = sample(
            eps_fn,
            (300, 2),
            SCHEDULE,
            "ddim",
            steps,
            eta=1.0,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(3),
        )
        b = sample(
            eps_fn,
            (300, 2),
            SCHEDULE,
            "ddpm",
            steps,
            variance="beta_tilde",
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(3),
        )
        assert torch.allclose(a.x, b.x, rtol=1e-8, atol=1e-8)


def test_dpm_solver_order_one_equals_ddim(mixture_2d):
    eps_fn = mixture_2d.eps_fn(SCHEDULE)
    for spacing in SPACINGS:
        a = sample(
            eps_fn,
            (200, 2),
            SCHEDULE,
            "dpm-solver++",
            12,
            order=1,
            spacing=spacing,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(1),
        )
        b = sample(
            eps_fn,
            (200, 2),
            SCHEDULE,
            "ddim",
            12,
            spacing=spacing,
            dtype=torch.float64,
            generator=torch.Generator().manual_seed(1),
        )
        assert torch.allclose(a.x, b.x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name", ["ddim", "dpm-solver++", "heun-edm", "ode-euler", "ode-heun", "ode-rk45"]
)
def test_probability_flow_samplers_are_deterministic_maps(name, mixture_2d):
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = [
        sample(
            mixture_2d.eps_fn(SCHEDULE),
            (100, 2),
            SCHEDULE,
            name,
            20,
            x_T=x_T.clone(),
            generator=torch.Generator().manual_seed(seed),
        ).x
        for seed in (1, 2)
    ]
    assert torch.equal(outs[0], outs[1])


def test_ddim_inversion_error_shrinks_with_steps(mixture_2d):
    """Run the DDIM ODE from t = 1 up to T and back: the start returns, better with more steps."""
    eps_fn = mixture_2d.eps_fn(SCHEDULE)
    x0, _ = mixture_2d.sample(500, generator=torch.Generator().manual_seed(0))
    errors = []
    for K in (10, 40, 160):
        up = torch.linspace(1, 1000, K + 1, dtype=torch.float64)
        x_T = sample_ddim(eps_fn, x0, SCHEDULE, up)
        back = sample_ddim(eps_fn, x_T, SCHEDULE, up.flip(0))
        errors.append(float((back - x0).norm(dim=1).mean()))
    assert errors[0] > 2 * errors[1] > 4 * errors[2]
    assert errors[2] < 0.05


def test_pf_ode_forward_then_backward_returns_the_start(mixture_2d):
    """The adaptive solver integrates the PF-ODE from t = 5 to T and back to t = 5."""
    eps_fn = mixture_2d.eps_fn(SCHEDULE)
    x, _ = mixture_2d.sample(200, generator=torch.Generator().manual_seed(0))

    def f(y, t):
        return pf_ode_drift(eps_fn, SCHEDULE, y, torch.full((y.shape[0],), t, dtype=y.dtype))[0]

    x_T, n1 = odeint_rk45(f, x, 5.0, 1000.0, rtol=1e-7, atol=1e-7)
    back, n2 = odeint_rk45(f, x_T, 1000.0, 5.0, rtol=1e-7, atol=1e-7)
    # beta(t) of a discrete schedule is piecewise constant, so the ODE's right-hand side jumps
    # at every integer t; the adaptive solver still returns the start to about 1e-3
    assert float((back - x).abs().max()) < 5e-3
    assert float((back - x).abs().mean()) < 1e-3
    # it really went to the prior: the flow carries data to p_T = a_T p_data + N(0, sigma_T^2),
    # whose per-coordinate mean and variance the 200 points match within 4 standard errors
    ab_T = float(SCHEDULE.alpha_bar(torch.tensor(1000.0, dtype=torch.float64)))
    w, m, v = mixture_2d.weights[:, None], mixture_2d.means, mixture_2d.variances
    data_mean = (w * m).sum(0)
    data_var = (w * (v + m**2)).sum(0) - data_mean**2
    mean_T, var_T = math.sqrt(ab_T) * data_mean, ab_T * data_var + 1 - ab_T
    n = x_T.shape[0]
    assert ((x_T.mean(0) - mean_T).abs() < 4 * (var_T / n).sqrt()).all(), x_T.mean(0)
    assert ((x_T.var(0) / var_T - 1).abs() < 4 * math.sqrt(2 / (n - 1))).all(), x_T.var(0)


@given(st.sampled_from(SPACINGS), st.integers(1, 200), st.sampled_from(["linear", "cosine"]))
def test_time_grids_are_decreasing_from_T_to_0(spacing, K, name):
    s = make_schedule(name)
    g = make_timesteps(s, K, spacing)
    first = {"leading": (K - 1) * (s.T // K) + 1, "leading-dpm": K * (s.T // (K + 1)) + 1}
    first = first.get(spacing, s.T)
    assert len(g) == K + 1 and float(g[0]) == pytest.approx(first) and g[-1] == 0
    assert (g[1:] < g[:-1]).all()


@pytest.mark.parametrize("K", [1, 4, 10, 25, 50, 1000])
def test_leading_grid_is_diffusers_leading_shifted_to_our_time(K):
    """diffusers' alphas_cumprod[k] is our alpha_bar(k + 1): its leading grid (k * T // K)
    reversed, steps_offset 0) is ours minus one."""
    g = make_timesteps(SCHEDULE, K, "leading")
    diffusers_leading = torch.arange(K, dtype=torch.float64).flip(0) * (SCHEDULE.T // K)
    assert torch.equal(g[:-1], diffusers_leading + 1)
    assert float(g[-2]) == 1.0 and float(g[0]) == SCHEDULE.T - SCHEDULE.T / K + 1


@pytest.mark.parametrize("K", [1, 5, 10, 20, 50])
def test_leading_dpm_grid_is_dpmsolver_leading_shifted_to_our_time(K):
    """DPMSolverMultistep's leading: (arange(K + 1) * (T // (K + 1)))[::-1][:-1], plus one."""
    g = make_timesteps(SCHEDULE, K, "leading-dpm")
    r = SCHEDULE.T // (K + 1)
    assert torch.equal(g[:-1], torch.arange(K, 0, -1, dtype=torch.float64) * r + 1)


def test_logsnr_and_karras_grids_are_uniform_in_their_variables():
    g = make_timesteps(SCHEDULE, 12, "logsnr")[:-1]
    lam = SCHEDULE.log_snr(g)
    assert torch.allclose(lam[1:] - lam[:-1], (lam[1] - lam[0]).expand(11), rtol=1e-6)
    g = make_timesteps(SCHEDULE, 12, "karras")[1:-1]  # t_0 = T exactly
    sigma = torch.exp(-SCHEDULE.log_snr(g) / 2) ** (1 / 7)
    assert torch.allclose(sigma[1:] - sigma[:-1], (sigma[1] - sigma[0]).expand(10), rtol=1e-6)


@given(st.sampled_from(["linear", "cosine", "quadratic"]), st.floats(0.01, 999.99))
def test_time_at_log_snr_inverts_log_snr(name, t):
    s = make_schedule(name)
    tt = torch.tensor([t], dtype=torch.float64)
    assert float(s.time_at_log_snr(s.log_snr(tt))) == pytest.approx(t, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("order, rate", [(1, 1.8), (2, 3.5), (3, 7.0)])
def test_dpm_solver_convergence_order(order, rate):
    """Gaussian data: the PF-ODE flow is linear, x_t = x_T std_t / std_T, so the exact output
    E[x0 | x_{t_min}] is known; halving the step divides the error by about 2^order."""
    s2, t_min = 0.25, 5.0
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 2), torch.full((1, 2), s2))
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ab = lambda t: float(SCHEDULE.alpha_bar(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
    var = lambda t: ab(t) * s2 + 1 - ab(t)  # noqa: E731
    x_min = x_T * math.sqrt(var(t_min) / var(1000.0))
    exact = math.sqrt(ab(t_min)) * s2 / var(t_min) * x_min
    errors = []
    for K in (20, 40, 80):
        out = sample(
            gm.eps_fn(SCHEDULE),
            (64, 2),
            SCHEDULE,
            "dpm-solver++",
            K,
            order=order,
            x_T=x_T.clone(),
            t_min=t_min,
            dtype=torch.float64,
        )
        errors.append(float((out.x - exact).abs().max()))
    assert errors[0] / errors[1] > rate and errors[1] / errors[2] > rate, errors


# (name, options): the samplers that step along the grid and report (i, t_{i+1}, x, x0)
GRID_CALLBACKS = [
    ("ddpm", {}),
    ("ddpm", {"variance": lambda x, t: torch.full_like(x, 0.3)}),  # a learned variance
    ("ddpm-score", {}),
    ("ddim", {"eta": 0.5}),
    ("dpm-solver++", {"order": 3}),
    ("heun-edm", {}),
    ("ode-euler", {}),
    ("ode-heun", {}),
    ("euler-maruyama", {}),
    ("pc", {"n_corrector": 2}),
]


@pytest.mark.parametrize(
    "name, options", GRID_CALLBACKS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(GRID_CALLBACKS)]
)
def test_callback_reports_each_step_of_the_grid(name, options):
    """The exact eps of a point mass m (every x0 prediction is m): step i calls back with
    (i, t_{i+1} for the batch, the new x, the x0 prediction m); that x is the one the next
    step's first eps call sees at that time, the last one is the returned sample, and the
    sample is m (the step to t = 0 returns the x0 prediction, with no noise)."""
    m = torch.tensor([0.7, -1.3], dtype=torch.float64)
    grid = make_timesteps(SCHEDULE, 6, "quadratic")
    eps = _point_mass_eps(SCHEDULE, m)
    calls, seen = [], []

    def eps_fn(x, t):
        calls.append((x.clone(), t.clone()))
        return eps(x, t)

    def callback(i, t, x, x0):
        seen.append((i, t.clone(), x.clone(), x0.clone(), len(calls)))

    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = SAMPLERS[name](
        eps_fn,
        x_T,
        SCHEDULE,
        grid,
        callback=callback,
        generator=torch.Generator().manual_seed(1),
        **options,
    )
    assert [i for i, *_ in seen] == list(range(6))
    for i, t, x, x0, n_calls in seen:
        assert torch.equal(t, grid[i + 1].expand(5)), (i, t)
        assert float((x0 - m).abs().max()) < 1e-9, (i, x0)
        if i < 5:
            next_x, next_t = calls[n_calls]
            assert torch.equal(next_t, t) and torch.allclose(next_x, x, rtol=1e-14, atol=0)
    assert torch.equal(seen[-1][2], out)
    assert float((out - m).abs().max()) < 1e-12


@pytest.mark.parametrize("spacing", ["uniform", "quadratic"])
@pytest.mark.parametrize(
    "name, order", [("ddim", None), ("dpm-solver++", 1), ("dpm-solver++", 2), ("dpm-solver++", 3)]
)
def test_data_prediction_solvers_are_exact_on_a_point_mass(name, order, spacing):
    """A point mass m: the x0 prediction is m everywhere, and the PF-ODE's exact flow is
    x_t = a_t m + (sigma_t / sigma_T)(x_T - a_T m). DDIM and DPM-Solver++ (any order: its
    extrapolation of a constant is that constant when its weights are consistent) follow it to
    1e-12 at every step, on grids whose log-SNR steps are unequal (the ratio of consecutive
    steps runs from 0.66 to 1.5), where the multistep weights depend on those ratios."""
    m = torch.tensor([0.7, -1.3], dtype=torch.float64)
    grid = make_timesteps(SCHEDULE, 8, spacing)
    ab = SCHEDULE.alpha_bar(grid).tolist()
    x_T = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    seen = []
    options = {} if order is None else {"order": order}
    out = SAMPLERS[name](
        _point_mass_eps(SCHEDULE, m), x_T.clone(), SCHEDULE, grid,
        callback=lambda i, t, x, x0: seen.append(x.clone()), **options,
    )  # fmt: skip
    a_T, s_T = math.sqrt(ab[0]), math.sqrt(1 - ab[0])
    for i, x in enumerate(seen[:-1]):
        a, s = math.sqrt(ab[i + 1]), math.sqrt(1 - ab[i + 1])
        exact = a * m + s / s_T * (x_T - a_T * m)
        assert torch.allclose(x, exact, rtol=1e-12, atol=1e-12), (i, x, exact)
    assert float((out - m).abs().max()) < 1e-12


def test_langevin_step_size_from_snr_uses_batch_mean_norms():
    """One Langevin step at t = 5 with snr = r: delta = 2 (r sigma_t mean_i ||z_i|| /
    mean_i ||eps_i||)^2 from the means over the batch of each example's norm (Song et al.
    2021, Algorithm 5, with the norms averaged), then x - delta / sigma_t eps + sqrt(2 delta) z,
    z the generator's first draw. With step_size the same step has delta = step_size."""
    from scorelab.samplers.continuous import sample_langevin

    x = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]], dtype=torch.float64)
    eps = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 6.0]], dtype=torch.float64)  # norms 3, 6
    grid = torch.tensor([5.0, 0.0], dtype=torch.float64)
    sigma = math.sqrt(1 - float(SCHEDULE.alpha_bar(grid[:1])))
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    r = 0.2
    delta = 2 * (r * sigma * float(z.norm(dim=1).mean()) / 4.5) ** 2
    for options, d in (({"snr": r}, delta), ({"step_size": 0.01}, 0.01)):
        out = sample_langevin(
            lambda x, t: eps,
            x,
            SCHEDULE,
            grid,
            generator=torch.Generator().manual_seed(4),
            **options,
        )
        exact = x - d / sigma * eps + math.sqrt(2 * d) * z
        torch.testing.assert_close(out, exact, rtol=1e-12, atol=1e-12)


def test_langevin_options_refused_with_their_messages():
    """Exactly one of snr and step_size, and it must be > 0 (called directly: sample()'s
    option checks would refuse these first)."""
    from scorelab.errors import ScorelabError
    from scorelab.samplers.continuous import sample_annealed_langevin, sample_langevin

    x, grid = torch.zeros(3, 2), make_timesteps(SCHEDULE, 4)
    eps_fn = lambda x, t: torch.zeros_like(x)  # noqa: E731
    one = "^give exactly one of snr and step_size$"
    positive = "^snr and step_size must be > 0$"
    cases = [
        ({"snr": None, "step_size": None}, one),
        ({"snr": 0.1, "step_size": 0.1}, one),
        ({"snr": 0.0, "step_size": None}, positive),
        ({"snr": -1.0, "step_size": None}, positive),
        ({"snr": None, "step_size": 0.0}, positive),
        ({"snr": None, "step_size": -1.0}, positive),
    ]
    for options, message in cases:
        with pytest.raises(ScorelabError, match=message):
            sample_annealed_langevin(eps_fn, x, SCHEDULE, grid, **options)
    with pytest.raises(ScorelabError, match=positive):
        sample_langevin(eps_fn, x, SCHEDULE, grid, snr=0.0)


def test_pf_ode_drift_is_in_x_dtype():
    """dx/dt = -beta(t) / 2 (x - eps / sigma_t) at float64 times (where the schedule's beta is
    float64) and float32 x: the drift is float32, its value the closed form's to 1e-6."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.3]])
    t = torch.tensor([10.0, 700.0], dtype=torch.float64)
    eps = lambda x, t: 0.5 * x + 0.1  # noqa: E731
    drift, e = pf_ode_drift(eps, SCHEDULE, x, t)
    assert drift.dtype == torch.float32 and e.dtype == torch.float32
    beta = SCHEDULE.beta_rate(t)[:, None]
    sigma = (1 - SCHEDULE.alpha_bar(t))[:, None].sqrt()
    exact = -beta / 2 * (x.double() - (0.5 * x.double() + 0.1) / sigma)
    torch.testing.assert_close(drift.double(), exact, rtol=1e-6, atol=1e-7)


def test_time_grids_written_out():
    """The grids' times in float64, written out: uniform and quadratic (DDIM's T u^2) and
    their rescaling to a last positive time t_min (K = 1 keeps T alone); leading's strides
    are whole steps exactly when T is an integer of at least K + 1 (T = 11, K = 10: stride 1;
    T = 9: 0.9; the VP-SDE's T = 1: 0.25); log-SNR's ends are T and t_min to 1e-12, and
    one or two steps are one or two positive times."""
    from scorelab.processes.sde import make_sde

    def grid(schedule, K, spacing, **kw):
        g = make_timesteps(schedule, K, spacing, **kw)
        assert g.dtype == torch.float64, (spacing, g.dtype)
        return g.tolist()

    def close(a, b):
        return len(a) == len(b) and all(
            abs(x - y) <= 1e-12 * max(1, abs(y)) for x, y in zip(a, b, strict=True)
        )

    assert close(grid(SCHEDULE, 3, "quadratic"), [1000, 4000 / 9, 1000 / 9, 0])
    assert close(grid(SCHEDULE, 3, "uniform", t_min=0.3), [1000, 1000.3 / 2, 0.3, 0])
    assert close(grid(SCHEDULE, 2, "uniform", t_min=5.0), [1000, 5, 0])
    assert close(grid(SCHEDULE, 1, "uniform", t_min=5.0), [1000, 0])
    assert close(grid(make_schedule("linear", T=11), 10, "leading"), [*range(10, 0, -1), 0])
    nine = grid(make_schedule("linear", T=9), 10, "leading", t_min=0.5)
    assert close(nine, [0.9 * k + 0.5 for k in range(9, -1, -1)] + [0])
    assert close(grid(make_schedule("linear", T=9), 4, "leading-dpm"), [5, 4, 3, 2, 0])
    vp = make_sde("vp")
    assert close(grid(vp, 4, "leading", t_min=0.1), [0.85, 0.6, 0.35, 0.1, 0])
    for spacing in ("logsnr", "karras"):  # both in float64: the last positive time is t_min
        g = grid(vp, 6, spacing, t_min=0.3)
        assert g[0] == 1.0 and abs(g[-2] - 0.3) < 1e-12 and g[-1] == 0, (spacing, g)
        assert make_timesteps(vp, 1, spacing, t_min=0.3).dtype == torch.float64
    for spacing in ("logsnr", "karras"):
        assert len(grid(vp, 2, spacing, t_min=0.3)) == 3
        assert grid(vp, 1, spacing, t_min=0.3) == [1.0, 0.0]


def test_time_grids_refuse_bad_input_with_their_messages():
    from scorelab.errors import ScorelabError

    spacings = "uniform, quadratic, leading, leading-dpm, logsnr, karras"
    cases = [
        ({"steps": 4, "spacing": "even"}, f"unknown spacing 'even'; choose one of: {spacings}"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"steps": 10, "spacing": "leading", "t_min": 0.0},
         "leading t_min must be in (0, 100], got 0.0"),
        ({"steps": 9, "spacing": "leading-dpm", "t_min": 100.5},
         "leading-dpm t_min must be in (0, 100], got 100.5"),
        ({"steps": 10, "spacing": "logsnr", "t_min": 0.0}, "t_min must be in (0, 1000), got 0.0"),
        ({"steps": 5, "spacing": "karras", "t_min": 1e3}, "t_min must be in (0, 1000), got 1000.0"),
    ]  # fmt: skip
    for kw, message in cases:
        with pytest.raises(ScorelabError, match=f"^{re.escape(message)}$"):
            make_timesteps(SCHEDULE, **kw)
    assert make_timesteps(SCHEDULE, 10, "leading", t_min=100.0)[-2] == 100.0  # t_min = stride


def test_the_uniform_grid_of_a_discrete_schedule_is_on_integer_times():
    """The network was trained at integer t: K = 3 of T = 1000 gives 1000, 667, 333, 0 (not
    the thirds), unless a t_min asks for the grid through it."""
    s = make_schedule("linear")
    assert make_timesteps(s, 3, "uniform").tolist() == [1000.0, 667.0, 333.0, 0.0]
    assert make_timesteps(s, 3, "uniform", t_min=1.0).tolist()[2] == 1.0
