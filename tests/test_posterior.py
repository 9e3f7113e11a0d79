"""Posterior sampling for y = A x + sigma_y n against exact posteriors (docs/theory.md §29, §31).

The prior's eps is the oracle's exact eps, so only the method is judged. Tolerances: k standard
errors of the sample mean and covariance (computed from the samples) plus, where a method is
not exact, a stated bias allowance measured once and recorded beside the test.
"""

from __future__ import annotations

import math

import pytest
import torch

from scorelab import GaussianMixture, make_schedule
from scorelab import posterior as post
from scorelab.errors import ScorelabError
from scorelab.operators import (
    AvgPool,
    GaussianBlur,
    Identity,
    LinearOperator,
    Mask,
    RandomProjection,
)
from scorelab.processes.sde import make_sde
from scorelab.samplers import sample as sample_prior

F64 = torch.float64
DDPM = make_schedule("linear", T=1000)
MASK8 = Mask(torch.tensor([1, 0, 1, 0, 1, 1, 0, 1]))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def moments_close(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, k: float, slack: float):
    """Sample mean and covariance of x (n, d) within k standard errors (+ slack) of the truth."""
    n = x.shape[0]
    xc = x - x.mean(0)
    prod = xc[:, :, None] * xc[:, None, :]
    se_mean = x.std(0) / math.sqrt(n)
    se_cov = prod.std(0) / math.sqrt(n)
    mean_err = (x.mean(0) - mean).abs()
    cov_err = (prod.mean(0) - cov).abs()
    assert (mean_err <= k * se_mean + slack).all(), (mean_err, se_mean)
    assert (cov_err <= k * se_cov + slack).all(), (cov_err.max(), se_cov.max())


def run(gm, schedule, operator, y, sigma_y, method, steps=100, n=2000, **options):
    return post.sample(
        gm.eps_fn(schedule), schedule, operator, y, sigma_y, method, steps, n=n,
        generator=gen(), dtype=F64, **options,
    )  # fmt: skip


def single_gaussian(d: int = 8, var: float = 1.0) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), torch.full((1, d), 0.5, dtype=F64), torch.full((1,), var))


def test_the_oracle_posterior_eps_reproduces_the_posterior():
    """The reference: the exact posterior mixture's eps through plain scorelab.sample."""
    cov = torch.tensor([[[1.0, 0.6], [0.6, 0.8]], [[0.3, -0.1], [-0.1, 0.5]]], dtype=F64)
    gm = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[1.5, 0.0], [-1.0, 1.0]]), cov)
    A = RandomProjection(1, 2, generator=gen(1))
    exact = gm.posterior(A, torch.tensor([0.3]), 0.3)
    x = sample_prior(exact.eps_fn(DDPM), (4000, 2), DDPM, "ddim", 100, eta=1.0,
                     generator=gen(), dtype=F64).x  # fmt: skip
    truth, _ = exact.sample(200_000, generator=gen(2))
    moments_close(x, truth.mean(0), torch.cov(truth.T, correction=0), k=5, slack=0.0)


PROCESSES = {
    "ddpm": DDPM,
    **{name: make_sde(name) for name in ("vp", "subvp", "ve", "edm", "flow")},
}


@pytest.mark.parametrize("process", list(PROCESSES))
def test_pigdm_is_exact_for_isotropic_gaussian_data_on_every_process(process):
    """PiGDM's r_t^2 is the exact variance of p(x_0 | x_t) for N(mu, v I) data: mean and
    covariance within 5 standard errors + 0.02 (measured: at most 0.03 and 0.11 off at 100
    steps, n = 2000, on every process)."""
    schedule = PROCESSES[process]
    for var, A in ((1.0, RandomProjection(4, 8, generator=gen(1))), (0.5, MASK8)):
        gm = single_gaussian(8, var)
        y = torch.randn(A.out_shape, generator=gen(3), dtype=F64)
        exact = gm.posterior(A, y, 0.3)
        r = run(gm, schedule, A, y, 0.3, "pigdm", data_var=var)
        assert r.nfe == 100
        moments_close(r.x, exact.means[0], exact.covariances[0], k=5, slack=0.02)


@pytest.mark.parametrize("method", ["ddnm", "repaint", "pigdm", "diffpir"])
def test_noiseless_mask_on_independent_coordinates_is_exact(method):
    """Diagonal Gaussian data, a Mask, sigma_y = 0: the posterior is y on the observed entries
    and the prior on the rest, which ddnm, repaint, pigdm and diffpir reproduce (5 SE + 0.02)."""
    var = torch.linspace(0.3, 1.5, 8, dtype=F64)
    gm = GaussianMixture(torch.ones(1), torch.linspace(-1, 1, 8, dtype=F64)[None], var[None])
    y = torch.tensor([2.0, -1.0, 0.5, 1.0, 0.0], dtype=F64)
    exact = gm.posterior(MASK8, y, 0.0)
    r = run(gm, DDPM, MASK8, y, 0.0, method)
    moments_close(r.x, exact.means[0], exact.covariances[0], k=5, slack=0.02)


def two_modes() -> GaussianMixture:
    means = torch.tensor([[1.0] * 8, [-1.0] * 8], dtype=F64)
    return GaussianMixture(torch.tensor([0.5, 0.5]), means, torch.full((2,), 0.3))


@pytest.mark.parametrize(
    ("method", "options", "bias"),
    [("pigdm", {}, 0.0), ("ddnm", {}, 0.0), ("repaint", {}, 0.0), ("diffpir", {}, 0.0),
     ("dps", {"zeta": 0.1}, 0.05), ("sdedit", {"t0": 1e-3}, 0.0)],
)  # fmt: skip
def test_samples_are_consistent_with_the_measurement(method, options, bias):
    """||A x - y|| <= 3 sigma_y sqrt(m) on average with sigma_y = 0.01 (dps: plus zeta / 2,
    the length of its last normalized step; measured 0.049 against 0.067 + 0.05)."""
    gm, sigma_y = two_modes(), 0.01
    x0, _ = gm.sample(1, generator=gen(0))
    y = MASK8.forward(x0) + sigma_y * torch.randn(1, 5, generator=gen(1), dtype=F64)
    r = run(gm, DDPM, MASK8, y, sigma_y, method, steps=200, n=200, **options)
    assert r.residual.mean() <= 3 * sigma_y * math.sqrt(5) + bias, r.residual.mean()


def test_repaint_keeps_the_observed_pixels_at_sigma_zero():
    gm = two_modes()
    y = torch.tensor([[0.5, 1.0, -2.0, 0.0, 1.5]], dtype=F64)
    r = run(gm, DDPM, MASK8, y, 0.0, "repaint", steps=20, n=50, jump_length=3, resample=3)
    assert torch.equal(MASK8.forward(r.x), y.expand(50, 5))
    assert r.std[~MASK8.mask].min() > 0.1  # the unobserved entries still vary


def test_sdedit_with_t0_near_zero_returns_the_pseudo_inverse():
    gm = single_gaussian(16)
    A = AvgPool(2, (1, 4, 4))
    y = torch.randn(1, 2, 2, generator=gen(2), dtype=F64)
    image_prior = imageshaped(gm, (1, 4, 4))
    r = post.sample(image_prior, DDPM, A, y, 0.0, "sdedit", 10, n=20, generator=gen(), dtype=F64,
                    t0=1e-3)  # fmt: skip
    assert r.x.shape == (20, 1, 4, 4)
    assert (r.x - A.pinv(y[None])).abs().max() < 0.05


def imageshaped(gm: GaussianMixture, shape: tuple[int, ...]):
    eps_fn = gm.eps_fn(DDPM)
    return lambda x, t: eps_fn(x.reshape(x.shape[0], -1), t).reshape(x.shape)


@pytest.mark.parametrize("method", ["dps", "pigdm", "ddnm", "diffpir", "sdedit"])
def test_image_shaped_signals_and_the_nfe(method):
    """(n, 1, 4, 4) signals through a blur; NFE = steps (one eps call per step)."""
    gm = single_gaussian(16)
    A = GaussianBlur(1.0, 3, (1, 4, 4))
    y = torch.randn(1, 4, 4, generator=gen(2), dtype=F64)
    r = post.sample(imageshaped(gm, (1, 4, 4)), DDPM, A, y[None], 0.1, method, 7, n=3,
                    generator=gen())  # fmt: skip
    assert r.x.shape == (3, 1, 4, 4) and r.x.dtype == torch.float32 and r.nfe == 7
    assert r.mean.shape == r.std.shape == (1, 4, 4) and r.residual.shape == (3,)
    assert torch.isfinite(r.x).all()


def test_repaint_nfe_and_path():
    """NFE = K + (resample - 1) jump_length floor((K - 1) / jump_length)."""
    for k, jump, resample in ((20, 5, 3), (7, 2, 2), (10, 1, 1), (5, 5, 4)):
        path = post.repaint_path(k, jump, resample)
        down = sum(b > a for a, b in zip(path, path[1:], strict=False))
        assert (
            path[0] == 0
            and path[-1] == k
            and all(abs(b - a) == 1 for a, b in zip(path, path[1:], strict=False))
        )
        assert down == k + (resample - 1) * jump * ((k - 1) // jump)
    gm = two_modes()
    r = run(
        gm, DDPM, MASK8, torch.zeros(5), 0.0, "repaint", steps=20, n=2, jump_length=5, resample=3
    )
    assert r.nfe == 20 + 2 * 5 * 3


@pytest.mark.parametrize("method", ["dps", "pigdm"])
def test_guidance_pulls_toward_the_observation(method):
    """N(0, I) in 2-D, coordinate 0 observed as 3 with sigma_y = 0.5: the exact posterior mean
    is 2.4 there (pigdm: within 0.2; dps, which ignores sigma_y, lands on y = 3: measured
    3.0006); a flipped guidance sign would push the samples below 0."""
    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=F64), torch.ones(1))
    mask = Mask(torch.tensor([1, 0]))
    r = run(gm, DDPM, mask, torch.tensor([3.0]), 0.5, method, steps=100, n=500)
    low, high = (2.2, 2.6) if method == "pigdm" else (2.2, 3.2)
    assert low < float(r.mean[0]) < high and abs(float(r.mean[1])) < 0.2, r.mean


class NoSVD(LinearOperator):
    shape, out_shape = (2,), (1,)

    def forward(self, x):
        return x[:, :1]

    def transpose(self, y):
        return torch.cat([y, torch.zeros_like(y)], 1)


def test_bad_inputs_are_one_line_errors():
    gm = two_modes()
    eps = gm.eps_fn(DDPM)
    y = torch.zeros(5)
    cases = [
        (dict(y=torch.zeros(4)), "operator's shape (5,)"),
        (dict(y=torch.zeros(2, 5)), "operator's shape"),
        (dict(y=torch.full((5,), math.nan)), "finite"),
        (dict(sigma_y=-0.1), "sigma_y must be finite and >= 0"),
        (dict(sigma_y=math.inf), "sigma_y"),
        (dict(method="oracle"), "unknown posterior method 'oracle'; choose one of: dps"),
        (dict(zeta=-1.0, method="dps"), "zeta must be > 0, got -1.0 (method dps)"),
        (dict(zeta=1.0, method="pigdm"), "unknown option 'zeta': method pigdm takes: scale"),
        (dict(method="repaint", operator=RandomProjection(5, 8)), "Mask (inpainting) only"),
        (dict(method="ddnm", operator=NoSVD(), y=torch.zeros(1)), "ddnm needs an operator"),
        (dict(method="pigdm", operator=NoSVD(), y=torch.zeros(1)), "pigdm needs an operator"),
        (dict(n=0), "n must be a positive integer"),
        (dict(spacing="cubic"), "unknown spacing 'cubic'"),
        (dict(method="diffpir", operator=NoSVD(), y=torch.zeros(1)), "diffpir needs an operator"),
        (dict(method="diffpir", zeta=1.5), "zeta must be in [0, 1], got 1.5 (method diffpir)"),
    ]  # fmt: skip
    for change, words in cases:
        args = dict(operator=MASK8, y=y, sigma_y=0.1, method="dps") | change
        op, y_, s, m = args.pop("operator"), args.pop("y"), args.pop("sigma_y"), args.pop("method")
        with pytest.raises(ScorelabError, match=None) as info:
            post.sample(eps, DDPM, op, y_, s, m, 2, **args)
        assert words in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_registry_lists_methods_with_papers_and_options():
    assert list(post.METHODS) == ["dps", "pigdm", "ddnm", "diffpir", "repaint", "sdedit"]
    assert {k: s.spacing for k, s in post.METHODS.items()}["diffpir"] == "quadratic"
    assert {s.spacing for k, s in post.METHODS.items() if k != "diffpir"} == {"uniform"}
    for spec in post.METHODS.values():
        assert spec.paper and spec.summary and spec.nfe
    assert post.parse_options("dps", ["zeta=0.5", "eta=0"]) == {"zeta": 0.5, "eta": 0.0}
    with pytest.raises(ScorelabError, match=r"jump_length must be >= 1, got 0 \(method repaint\)"):
        post.parse_options("repaint", ["jump_length=0"])
    with pytest.raises(ScorelabError, match="--opt zeta is given twice"):
        post.parse_options("dps", ["zeta=0.5", "zeta=0.4"])
    with pytest.raises(ScorelabError, match="zeta must be a number, got 'x' \\(method dps\\)"):
        post.parse_options("dps", ["zeta=x"])
    with pytest.raises(ScorelabError, match="KEY=VALUE"):
        post.parse_options("repaint", ["jump_length"])
    with pytest.raises(TypeError, match="keyword-only"):
        post.register_method("x", summary="", paper="", nfe="", options={"a": None})(
            lambda eps_fn, x, schedule, timesteps, operator, y, sigma_y: x
        )
    assert isinstance(post.METHODS["ddnm"].check_operator(Identity((3,))), type(None))


@pytest.mark.parametrize(
    "operator",
    [RandomProjection(3, 6, gen(3)), AvgPool(2, (1, 2, 4)), Mask(torch.tensor([1, 0, 1]))],
)
@pytest.mark.parametrize("sigma_y", [0.0, 0.3])
def test_diffpir_step_is_the_proximal_point(operator, sigma_y):
    """One DiffPIR step to t = 0 returns argmin ||y - A z||^2 + rho ||z - x0_hat||^2 with
    rho = lam sigma_y^2 abar / (1 - abar): the dense normal equations (A^T A + rho I) z =
    A^T y + rho x0_hat, to 1e-10 (sigma_y = 0: A z = y, the rest of x0_hat kept)."""
    d, m = math.prod(operator.shape), math.prod(operator.out_shape)
    x = torch.randn(4, *operator.shape, generator=gen(1), dtype=F64)
    eps = torch.randn(4, *operator.shape, generator=gen(2), dtype=F64)
    y = torch.randn(1, *operator.out_shape, generator=gen(3), dtype=F64)
    t = torch.tensor([400.0, 0.0], dtype=F64)
    ab = float(DDPM.alpha_bar(t[:1]))
    z = post.sample_diffpir(lambda *_: eps, x, DDPM, t, operator, y, sigma_y, lam=2.0)
    x0 = ((x - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).reshape(4, d)
    A = operator.forward(torch.eye(d, dtype=F64).reshape(d, *operator.shape)).reshape(d, m).T
    rho = 2.0 * sigma_y**2 * ab / (1 - ab)
    if sigma_y > 0:
        rhs = (A.T @ y.reshape(m, 1)).T + rho * x0
        want = torch.linalg.solve(A.T @ A + rho * torch.eye(d, dtype=F64), rhs.T).T
    else:  # the minimal change to x0_hat that meets A z = y
        want = x0 + (torch.linalg.pinv(A) @ (y.reshape(m, 1) - A @ x0.T)).T
    assert torch.allclose(z.reshape(4, d), want, atol=1e-10), (z.reshape(4, d) - want).abs().max()


def test_the_method_grid_is_its_registered_spacing_unless_given():
    """diffpir runs on the quadratic grid by default and on the given one when asked; the
    eps calls see exactly make_timesteps' times."""
    from scorelab.samplers.timesteps import make_timesteps

    gm = two_modes()
    eps = gm.eps_fn(DDPM)
    for method, spacing, want in (("diffpir", None, "quadratic"), ("diffpir", "uniform", "uniform"),
                                  ("ddnm", None, "uniform"), ("ddnm", "logsnr", "logsnr")):
        seen = []

        def spy(x, t, seen=seen):
            seen.append(float(t[0]))
            return eps(x, t)

        post.sample(spy, DDPM, MASK8, torch.zeros(5), 0.1, method, 6, spacing=spacing, n=2,
                    generator=gen())  # fmt: skip
        grid = make_timesteps(DDPM, 6, want, t_min=DDPM.sampling_t_min)
        assert seen == pytest.approx(grid[:-1].tolist()), (method, spacing, seen)
