"""The denoising loss: one function, parameterization as data; exact optima and identities."""

import math

import pytest
import torch

from scorelab.objectives import diffusion_loss, sample_timesteps
from scorelab.processes import denoiser_from_eps, make_schedule


def _gaussian_eps_fn(schedule, s2):
    """The exact eps for data N(0, s2 I): E[eps | x_t] = sigma x_t / (a^2 s2 + sigma^2)."""

    def eps_fn(x, t):
        ab = schedule.alpha_bar(t).to(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        return (1 - ab).sqrt() * x / (ab * s2 + 1 - ab)

    return eps_fn


@pytest.mark.parametrize("shape", [(4096, 2), (512, 1, 8, 8)])
def test_loss_shape_and_exact_minimum_for_gaussian_data(shape, generator):
    """E||eps - eps*(x_t)||^2 / d = a^2 s^2 / (a^2 s^2 + sigma^2) at the exact eps*."""
    s, s2, t_value = make_schedule("linear"), 0.25, 300.0
    x0 = torch.randn(shape, generator=generator, dtype=torch.float64) * math.sqrt(s2)
    t = torch.full((shape[0],), t_value, dtype=torch.float64)
    loss = diffusion_loss(_gaussian_eps_fn(s, s2), x0, schedule=s, generator=generator, t=t)
    assert loss.shape == (shape[0],)
    ab = float(s.alpha_bar(torch.tensor(t_value, dtype=torch.float64)))
    expected = ab * s2 / (ab * s2 + 1 - ab)
    # per-element residuals are N(0, expected): the mean of n*d squares has sd expected*sqrt(2/nd)
    n = x0.numel()
    assert abs(float(loss.mean()) - expected) < 5 * expected * math.sqrt(2 / n)


def test_a_wrong_model_has_a_higher_loss(generator):
    s, s2 = make_schedule("linear"), 0.25
    x0 = torch.randn(8192, 2, generator=generator, dtype=torch.float64) * 0.5
    exact = _gaussian_eps_fn(s, s2)
    g1, g2 = (torch.Generator().manual_seed(7) for _ in range(2))
    good = diffusion_loss(exact, x0, schedule=s, generator=g1).mean()
    bad = diffusion_loss(lambda x, t: 0.8 * exact(x, t), x0, schedule=s, generator=g2).mean()
    assert bad > good


@pytest.mark.parametrize("shape", [(64, 2), (16, 1, 8, 8)])
def test_x0_loss_is_the_eps_loss_weighted_by_inverse_snr(shape, generator):
    """||x0 - D(x_t)||^2 = (sigma^2 / alpha_bar) ||eps - eps_theta(x_t)||^2, sample by sample."""
    s = make_schedule("cosine")
    x0 = torch.randn(shape, generator=generator, dtype=torch.float64)
    eps_fn = lambda x, t: torch.sin(x) * (t.reshape((-1,) + (1,) * (x.ndim - 1)) / 1000)  # noqa: E731
    t = sample_timesteps(s, shape[0], generator=generator).double()
    l_eps = diffusion_loss(
        eps_fn, x0, schedule=s, prediction="eps", generator=torch.Generator().manual_seed(3), t=t
    )
    l_x0 = diffusion_loss(
        denoiser_from_eps(eps_fn, s),
        x0,
        schedule=s,
        prediction="x0",
        generator=torch.Generator().manual_seed(3),
        t=t,
    )
    ab = s.alpha_bar(t)
    assert torch.allclose(l_x0, (1 - ab) / ab * l_eps, rtol=1e-8, atol=1e-12)


def test_timesteps_are_uniform_on_1_to_T(generator):
    s = make_schedule("linear", T=10)
    t = sample_timesteps(s, 100_000, generator=generator)
    assert t.min() == 1 and t.max() == 10 and (t == t.round()).all()
    counts = torch.bincount(t.long(), minlength=11)[1:].double()
    expected = 10_000
    assert ((counts - expected).abs() < 5 * math.sqrt(expected * 0.9)).all()


def test_shape_mismatch_is_an_error():
    s = make_schedule("linear")
    with pytest.raises(ValueError, match="model output shape"):
        diffusion_loss(lambda x, t: x[:, :1], torch.zeros(4, 2), schedule=s)


@pytest.mark.parametrize(
    "kind, weight", [("v", lambda ab: 1 / ab), ("score", lambda ab: 1 / (1 - ab))]
)
def test_v_and_score_losses_are_reweighted_eps_losses(kind, weight, generator):
    """||v - v_theta||^2 = ||eps - eps_theta||^2 / alpha_bar; ||s - s_theta||^2 = ... / sigma^2."""
    from scorelab.processes import from_eps

    s = make_schedule("linear")
    x0 = torch.randn(32, 3, generator=generator, dtype=torch.float64)
    eps_fn = lambda x, t: torch.tanh(x) * 0.3  # noqa: E731
    t = sample_timesteps(s, 32, generator=generator).double()
    model = lambda x, t: from_eps(eps_fn(x, t), kind, x, s.alpha_bar(t))  # noqa: E731
    l_eps = diffusion_loss(eps_fn, x0, schedule=s, generator=torch.Generator().manual_seed(4), t=t)
    l_k = diffusion_loss(
        model, x0, schedule=s, prediction=kind, generator=torch.Generator().manual_seed(4), t=t
    )
    assert torch.allclose(l_k, weight(s.alpha_bar(t)) * l_eps, rtol=1e-8)


def test_oracle_eps_is_the_conditional_expectation(mixture_2d, generator):
    """Tweedie (docs/theory.md §6): eps*(x_t) = E[eps | x_t], so the residual eps - eps*(x_t) is
    orthogonal to any function of x_t, and eps* has a lower L_simple than a perturbation."""
    s = make_schedule("linear")
    n = 40_000
    x0, _ = mixture_2d.sample(n, generator=generator)
    t = torch.full((n,), 200.0, dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    ab = s.alpha_bar(t)[:, None]
    x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    resid = eps - mixture_2d.eps_fn(s)(x_t, t)
    for f in (x_t, torch.tanh(x_t), x_t**2):
        prod = resid * f
        assert (prod.mean(0).abs() < 5 * prod.std(0) / math.sqrt(n)).all()


def test_timesteps_are_float32_on_the_asked_device():
    s = make_schedule("linear", T=10)
    t = sample_timesteps(s, 5, generator=torch.Generator().manual_seed(0), device="meta")
    assert t.dtype == torch.float32 and t.device.type == "meta"
    assert sample_timesteps(s, 5, generator=torch.Generator().manual_seed(0)).dtype == torch.float32


def test_loss_draws_t_then_eps_from_the_generator_only():
    # t ~ randint(1, T + 1) then eps ~ randn from the caller's generator; the global RNG is unused
    s = make_schedule("linear", T=50)
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = torch.Generator().manual_seed(7)
    t = torch.randint(1, 51, (6,), generator=ref).double()
    eps = torch.randn(6, 3, generator=ref, dtype=torch.float64)
    ab = torch.tensor([s.alpha_bar(torch.tensor([float(ti)])).item() for ti in t]).double()
    x_t = ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * eps
    expected = ((x_t - eps) ** 2).mean(1)  # model returns x_t: loss = mean (x_t - eps)^2
    torch.manual_seed(123)
    got = diffusion_loss(
        lambda x, tt: x, x0, schedule=s, generator=torch.Generator().manual_seed(7)
    )
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
