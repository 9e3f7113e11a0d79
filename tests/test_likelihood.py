"""The PF-ODE log-likelihood against exact densities, Hutchinson's unbiasedness, dequantization,
the data normalization's log-determinant, and learned-variance hybrid training end to end."""

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from scorelab.config import MLPConfig, RunConfig, ScheduleConfig, TrainConfig
from scorelab.data import Normalizer
from scorelab.evaluation import evaluate_nll
from scorelab.likelihood import dequantize, ode_log_likelihood, vlb
from scorelab.objectives import LossSecondMomentSampler, hybrid_loss
from scorelab.oracle import GaussianMixture
from scorelab.processes import make_schedule
from scorelab.runs import Run, load_run, train


def _true_log_prob(mixture, schedule, x, t0):
    return mixture.log_prob(x, schedule.alpha_bar(torch.tensor(t0, dtype=torch.float64)))


def test_ode_likelihood_of_gaussian_data_is_exact():
    """Gaussian data with the exact eps and the exact p_T: log p_{t0}(x) to solver tolerance."""
    g = GaussianMixture(torch.ones(1), torch.tensor([[0.7, -0.4, 0.1]]), torch.tensor([0.2]))
    sched = make_schedule("linear", T=100)
    x, _ = g.sample(30, generator=torch.Generator().manual_seed(0))
    a_T = sched.alpha_bar(torch.tensor(100.0, dtype=torch.float64))
    res = ode_log_likelihood(
        g.eps_fn(sched),
        x,
        sched,
        t0=0.1,
        rtol=1e-8,
        atol=1e-8,
        prior_log_prob=lambda y: g.log_prob(y, a_T),
    )
    err = res.log_prob - _true_log_prob(g, sched, x, 0.1)
    assert float(err.abs().max()) < 1e-5, err
    assert res.nfe > 0 and res.t0 == 0.1
    assert torch.allclose(res.bits_per_dim(), -res.log_prob / (3 * math.log(2)))


def test_ode_nll_of_a_mixture_with_its_exact_score(mixture_2d):
    """The standard N(0, I) prior and default tolerance: mean NLL within 1e-3 nats."""
    sched = make_schedule("linear", T=1000)
    x, _ = mixture_2d.sample(200, generator=torch.Generator().manual_seed(1))
    res = ode_log_likelihood(mixture_2d.eps_fn(sched), x, sched)
    err = res.log_prob - _true_log_prob(mixture_2d, sched, x, res.t0)
    assert abs(float(err.mean())) < 1e-3 and float(err.abs().max()) < 2e-2
    assert res.nfe < 400


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_ode_likelihood_is_unbiased(mixture_2d, distribution):
    """Replicas of 4 points, each with its own probes held along its trajectory: the mean
    estimate per point lies within 4 standard errors of the exact-trace value."""
    sched = make_schedule("linear", T=100)
    x, _ = mixture_2d.sample(4, generator=torch.Generator().manual_seed(2))
    reps = 100
    xr = x.repeat(reps, 1)
    exact = ode_log_likelihood(mixture_2d.eps_fn(sched), x, sched).log_prob
    est = ode_log_likelihood(
        mixture_2d.eps_fn(sched),
        xr,
        sched,
        divergence="hutchinson",
        probes=1,
        distribution=distribution,
        generator=torch.Generator().manual_seed(3),
    ).log_prob.reshape(reps, 4)
    mean, se = est.mean(0), est.std(0) / math.sqrt(reps)
    assert (se > 0).all()  # the probes do vary the estimate
    assert ((mean - exact).abs() < 4 * se + 1e-4).all(), (mean - exact, se)


def test_dequantization_bounds_the_discrete_nll():
    """For a Gaussian density, E_u[-log p(x + u w)] - log w >= -log P(bin of x), and y stays
    inside the bin of x."""
    x = (torch.arange(256, dtype=torch.float64) / 127.5 - 1).repeat(200)[:, None]
    y, log_volume = dequantize(x, generator=torch.Generator().manual_seed(0))
    width = 2 / 255
    assert ((y - x).abs() <= width / 2 + 1e-12).all()
    assert torch.allclose(log_volume, torch.full((x.shape[0],), math.log(width), dtype=x.dtype))
    m, s = 0.1, 0.3
    normal = torch.distributions.Normal(torch.tensor(m, dtype=torch.float64), s)
    est = (-normal.log_prob(y[:, 0]) - log_volume).reshape(200, 256)
    grid = x[:256, 0]
    # E_u[-log p(x + u w)] in closed form: (x - m)^2 + w^2 / 12 in place of (x - m)^2
    bound = 0.5 * math.log(2 * math.pi * s**2) + ((grid - m) ** 2 + width**2 / 12) / (2 * s**2)
    bound = bound - math.log(width)
    assert ((est.mean(0) - bound).abs() < 4 * est.std(0) / math.sqrt(200) + 1e-9).all()
    p_bin = normal.cdf(grid + width / 2) - normal.cdf(grid - width / 2)
    assert (bound >= -torch.log(p_bin) - 1e-9).all()


class _OracleNet(nn.Module):
    """A 'network' whose eps is a mixture's exact eps: tests runs without training."""

    def __init__(self, mixture, schedule):
        super().__init__()
        self.eps_fn = mixture.eps_fn(schedule)

    def forward(self, x, t):
        return self.eps_fn(x, t)


def test_eval_accounts_for_the_normalization(mixture_2d):
    """Data in its own units, a model in normalized units: evaluate_nll (ODE) gives the
    data's exact NLL, d log(scale) included; the VLB bounds it."""
    shift, scale = (1.0, -2.0), 3.0
    norm = Normalizer(shift, scale)
    sh = torch.tensor(shift, dtype=torch.float64)
    in_model_units = GaussianMixture(
        mixture_2d.weights, (mixture_2d.means - sh) / scale, mixture_2d.variances / scale**2
    )
    sched = make_schedule("linear", T=200)
    cfg = RunConfig(schedule=ScheduleConfig("linear", 200), normalizer=norm.to_dict())
    run = Run(Path("."), cfg, _OracleNet(in_model_units, sched), sched, norm, 0)
    x, _ = mixture_2d.sample(300, generator=torch.Generator().manual_seed(4))
    report = evaluate_nll(run, x.float(), method="ode")
    t0 = report.settings["t0"]
    a0 = sched.alpha_bar(torch.tensor(t0, dtype=torch.float64))
    true = -(in_model_units.log_prob(norm.encode(x), a0) - 2 * math.log(scale))
    assert report.nll_nats == pytest.approx(float(true.mean()), abs=5e-3)
    assert report.n == 300 and report.nfe > 0
    bound = evaluate_nll(run, x.float(), method="vlb")
    assert bound.nll_nats > report.nll_nats - 3 * bound.stderr_nats
    assert len(bound.per_t_nats) == 201


def test_second_moment_sampler_is_uniform_then_importance_weighted():
    """Improved DDPM's eq. 18 on losses that vary at each t, so E[L_t] and sqrt(E[L_t^2]) differ:
    histories (oldest first, the first dropped) t=1: 9 | 1, 2, 3; t=2: 9 | 0, 0, 6;
    t=3: 9 | 3, 3, 3; t=4: 9 | 8, 0, 4. Uniform until every t has 3 losses; then
    p_t = sqrt(E[L_t^2]) / sum, with E[L^2] = 14/3, 12, 9, 80/3 worked out by hand (means 2, 2,
    3, 4 would give other weights), mixed with uniform_prob / T. 40,000 draws: each t's
    frequency is p_t within 4 standard errors sqrt(p (1 - p) / n), and the weighted loss
    w L (w = 1 / (T p_t), L drawn from t's history) has the uniform mean (2 + 2 + 3 + 4) / 4
    within 4 standard errors of its sample mean, where the unweighted mean is 2.92. Catches
    p_t proportional to E[L_t] or E[L_t^2], a weight without its 1 / T, times off by one, and
    a history that keeps its oldest loss."""
    history = {1: [1.0, 2.0, 3.0], 2: [0.0, 0.0, 6.0], 3: [3.0, 3.0, 3.0], 4: [8.0, 0.0, 4.0]}
    rms = [math.sqrt(14 / 3), math.sqrt(36 / 3), math.sqrt(27 / 3), math.sqrt(80 / 3)]
    for uniform_prob in (0.0, 0.2):
        s = LossSecondMomentSampler(4, history=3, uniform_prob=uniform_prob)
        times = torch.tensor([1.0, 2.0, 3.0, 4.0])
        s.update(times, torch.full((4,), 9.0))  # the oldest, pushed out below
        for i in range(3):
            if i < 2:  # 1 or 2 losses at every t: not yet 3
                uniform = torch.full((4,), 0.25, dtype=torch.float64)
                assert torch.equal(s.probabilities(), uniform)
            s.update(times, torch.tensor([history[t][i] for t in (1, 2, 3, 4)]))
        p = [(1 - uniform_prob) * r / sum(rms) + uniform_prob / 4 for r in rms]
        torch.testing.assert_close(s.probabilities(), torch.tensor(p, dtype=torch.float64))

    n = 40_000
    g = torch.Generator().manual_seed(0)
    t, w = s.sample(n, generator=g)
    counts = torch.bincount(t.long(), minlength=5)[1:].double()
    for k in range(4):
        assert abs(float(counts[k]) / n - p[k]) < 4 * math.sqrt(p[k] * (1 - p[k]) / n), k
    torch.testing.assert_close(
        w.double(), 1 / (4 * torch.tensor(p, dtype=torch.float64)[t.long() - 1])
    )
    table = torch.tensor([history[k] for k in (1, 2, 3, 4)])
    losses = table[t.long() - 1, torch.randint(3, (n,), generator=g)]
    weighted = (w * losses).double()
    mean, se = float(weighted.mean()), float(weighted.std()) / math.sqrt(n)
    assert abs(mean - 2.75) < 4 * se, (mean, se)
    assert abs(float(losses.double().mean()) - 2.75) > 10 * se  # the weights matter here


def test_hybrid_loss_equals_its_parts_written_out_and_stops_the_mean_gradient():
    """L_hybrid = mean (eps_theta - eps)^2 + lambda T KL(q(x_4 | x_5, x_0) || N(mu(eps_theta
    detached), Sigma_v)) / (d log 2), written out here from the betas (running product),
    v = (r + 1) / 2 and log Sigma_v = v log beta_5 + (1 - v) log beta_tilde_5 (improved DDPM,
    eqs. 15-16): the loss and the gradients of a linear eps-and-r head equal the written-out
    ones; the eps rows get exactly L_simple's gradient (the stop-gradient on the mean in
    L_vlb) and the r rows get a non-zero gradient from L_vlb alone. Catches a lost detach, a
    detached variance (the r head would never train), v = r, and a lost factor T or log 2."""
    T, d, lam = 10, 2, 0.3
    sched = make_schedule("linear", T=T)
    betas = sched.betas.tolist()
    ab = [1.0]
    for b in betas:
        ab.append(ab[-1] * (1 - b))
    beta, ab_prev, ab_t = betas[4], ab[4], ab[5]
    tilde = (1 - ab_prev) / (1 - ab_t) * beta
    x0 = torch.randn(8, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net = nn.Linear(d, 2 * d).double()
    t = torch.full((8,), 5.0, dtype=torch.float64)

    def grads(loss):
        net.zero_grad()
        loss.mean().backward()
        return net.weight.grad.clone(), float(loss.detach().mean())

    def ours(weight):
        g = torch.Generator().manual_seed(1)
        return hybrid_loss(
            lambda x, tt: net(x), x0, schedule=sched, vlb_weight=weight, t=t, generator=g
        )

    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_t = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * eps
    out = net(x_t)
    eps_pred, r = out[:, :d], out[:, d:]
    log_var = (r + 1) / 2 * math.log(beta) + (1 - (r + 1) / 2) * math.log(tilde)
    mean_q = (math.sqrt(ab_prev) * beta * x0 + math.sqrt(1 - beta) * (1 - ab_prev) * x_t) / (
        1 - ab_t
    )
    mean_p = (x_t - beta / math.sqrt(1 - ab_t) * eps_pred.detach()) / math.sqrt(1 - beta)
    kl = 0.5 * (log_var - math.log(tilde) + (tilde + (mean_q - mean_p) ** 2) / log_var.exp() - 1)
    simple = ((eps_pred - eps) ** 2).mean(1)
    by_hand = simple + lam * T * kl.sum(1) / (d * math.log(2))
    g_hand, l_hand = grads(by_hand)
    g_ours, l_ours = grads(ours(lam))
    assert l_ours == pytest.approx(l_hand, rel=1e-10)
    torch.testing.assert_close(g_ours, g_hand, rtol=1e-8, atol=1e-12)
    g_simple, _ = grads(ours(0.0))
    assert torch.equal(g_ours[:d], g_simple[:d])  # the mean sees only L_simple
    assert g_simple[d:].abs().sum() == 0  # L_simple does not touch the variance
    assert (g_ours[d:].abs().sum(1) > 1e-6).all()  # and L_vlb does


@pytest.mark.parametrize("t_sampling", ["uniform", "second-moment"])
def test_learned_variance_hybrid_training_end_to_end(tmp_path, t_sampling):
    """150 steps of hybrid training on the ring: finite losses that fall, a learned variance
    that the VLB and ancestral sampling use, and on the trained MLP the split of improved DDPM
    checked by gradients: with the run's vlb_weight the eps rows of the last layer get exactly
    L_simple's gradient and every r row a non-zero one. Catches a lost stop-gradient on the
    mean and a variance head cut off from L_vlb (a detached v), which a falling loss hides."""
    cfg = RunConfig(
        data="ring",
        n_data=2000,
        objective="hybrid",
        model=MLPConfig(width=32, depth=1, variance="learned"),
        schedule=ScheduleConfig("linear", 50),
        train=TrainConfig(
            steps=150,
            batch_size=128,
            lr=3e-3,
            warmup=10,
            log_every=1,
            ckpt_every=150,
            t_sampling=t_sampling,
        ),
    )
    result = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert all(math.isfinite(v) for v in losses) and result.bad_steps == 0
    assert sum(losses[-30:]) / 30 < sum(losses[:30]) / 30
    run = load_run(tmp_path / "run")
    assert callable(run.variance)
    x = run.normalizer.encode(torch.randn(64, 2) + 1)
    res = vlb(run.eps_fn, x, run.schedule, variance=run.variance)
    assert torch.isfinite(res.total).all()
    samples, info = run.sample(32, steps=10)  # ancestral sampling with the learned variance
    assert torch.isfinite(samples).all() and info.nfe == 10

    # the trained MLP's last layer: L_vlb's gradient (the run's vlb_weight) reaches the rows
    # of r only, exactly; L_simple's reaches the rows of eps only
    def last_layer_grad(weight):
        run.model.zero_grad()
        hybrid_loss(
            run.model,
            x,
            schedule=run.schedule,
            vlb_weight=weight,
            generator=torch.Generator().manual_seed(7),
        ).mean().backward()
        return run.model.out[-1].weight.grad.clone()

    full, simple = last_layer_grad(cfg.train.vlb_weight), last_layer_grad(0.0)
    assert simple[2:].abs().sum() == 0 and simple[:2].abs().sum() > 0
    assert torch.equal(full[:2], simple[:2])
    assert (full[2:].abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["vp", "subvp", "ve"])
def test_ode_likelihood_on_every_sde_with_the_exact_score(name):
    """Integrated in the VP view x~ = input_scale(t) x with the change of variables at t0: the
    PF-ODE log p_t0 equals the noisy mixture's exact log-density on VP, sub-VP and VE."""
    from scorelab.oracle import GaussianMixture, ring_mixture
    from scorelab.processes import make_sde

    mix, sde = ring_mixture(std=0.3), make_sde(name)
    x, _ = mix.sample(100, generator=torch.Generator().manual_seed(0))
    t0 = 10 * sde.t_min
    a = float(sde.mean_coeff(torch.tensor(t0, dtype=torch.float64)))
    s = float(sde.std(torch.tensor(t0, dtype=torch.float64)))
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_t0 = a * x + s * noise
    got = ode_log_likelihood(mix.eps_fn(sde), x_t0, sde, t0=t0).log_prob
    noisy = GaussianMixture(mix.weights, a * mix.means, a * a * mix.variances + s * s)
    exact = noisy.log_prob(x_t0)
    err = got - exact
    assert abs(float(err.mean())) < 2e-3 and float(err.abs().max()) < 1e-2, err


def _hybrid_model(c: int):
    w = torch.linspace(-1.0, 1.0, 2 * c * c, dtype=torch.float64).reshape(2 * c, c)
    return lambda x, t: torch.einsum("oc,bc...->bo...", w, x) * 0.5


def test_hybrid_loss_of_images_is_the_loss_of_the_flattened_pixels():
    """Per-pixel terms: (B, 3, 5) images with a 6-channel head give the loss of the same pixels
    as (B, 15) vectors whose head is [eps pixels, r pixels]; also for a batch of one, with the
    paper's default lambda = 0.001."""
    sched = make_schedule("linear", T=20)
    model = _hybrid_model(3)

    def flat(x, t):
        out = model(x.reshape(-1, 3, 5), t)
        return torch.cat([out[:, :3].flatten(1), out[:, 3:].flatten(1)], 1)

    for b in (1, 4):
        x0 = torch.randn(b, 3, 5, generator=torch.Generator().manual_seed(b), dtype=torch.float64)
        t = torch.arange(1, b + 1, dtype=torch.float64) * 3
        got = hybrid_loss(
            model, x0, schedule=sched, t=t, generator=torch.Generator().manual_seed(0)
        )
        ref = hybrid_loss(
            flat, x0.flatten(1), schedule=sched, t=t, vlb_weight=1e-3,
            generator=torch.Generator().manual_seed(0),
        )  # fmt: skip
        assert got.shape == (b,) and torch.allclose(got, ref, rtol=1e-12, atol=0)


def test_hybrid_loss_refuses_a_head_of_the_wrong_shape_with_its_message():
    sched = make_schedule("linear", T=20)
    x0 = torch.zeros(2, 2, 3)
    t = torch.tensor([2.0, 3.0])
    for out_shape in ((2, 4, 5), (2, 3, 3)):
        with pytest.raises(ValueError) as e:
            hybrid_loss(lambda x, tt, s=out_shape: torch.zeros(s), x0, schedule=sched, t=t)
        assert str(e.value) == (
            f"a learned-variance model must output 4 channels, got shape {out_shape}"
        )


def test_hybrid_loss_at_t_1_uses_the_discretized_decoder_when_asked():
    """At t = 1 L_0 = -log of the bin [x - 1/255, x + 1/255] of N(mu, sigma^2) (8-bit data in
    [-1, 1]), with mu = (x_1 - beta_1 / sqrt(1 - ab_1) eps_pred) / sqrt(1 - beta_1) and v = 1
    (r = 1): sigma^2 = beta_1; written out with erf."""
    sched = make_schedule("linear", T=10)
    beta = float(sched.betas[0])
    x0 = torch.tensor([[0.0, 52 / 127.5 - 1]], dtype=torch.float64)
    t = torch.ones(1, dtype=torch.float64)
    model = lambda x, tt: torch.cat([torch.zeros_like(x), torch.ones_like(x)], 1)  # noqa: E731
    lam = 0.5
    got = hybrid_loss(
        model, x0, schedule=sched, t=t, vlb_weight=lam, decoder="discretized",
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    eps = torch.randn(1, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x1 = math.sqrt(1 - beta) * x0 + math.sqrt(beta) * eps
    mu = x1 / math.sqrt(1 - beta)  # eps_pred = 0
    sd = math.sqrt(beta)

    def cdf(z):
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    nll = -sum(
        math.log(cdf((x + 1 / 255 - m) / sd) - cdf((x - 1 / 255 - m) / sd))
        for x, m in zip(x0[0].tolist(), mu[0].tolist(), strict=True)
    )
    expected = float((eps**2).mean()) + lam * 10 * nll / (2 * math.log(2))
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_second_moment_sampler_defaults_keep_10_losses_and_mix_in_a_thousandth_uniform():
    s = LossSecondMomentSampler(2)
    times = torch.tensor([1.0, 2.0])
    for _ in range(9):
        s.update(times, torch.tensor([3.0, 4.0]))
    p = s.probabilities()
    assert p.dtype == torch.float64 and torch.equal(p, torch.full((2,), 0.5, dtype=torch.float64))
    s.update(times, torch.tensor([3.0, 4.0]))  # the 10th: warmed up, rms 3 and 4
    expected = torch.tensor([0.999 * 3 / 7 + 0.0005, 0.999 * 4 / 7 + 0.0005], dtype=torch.float64)
    torch.testing.assert_close(s.probabilities(), expected, rtol=1e-12, atol=0)


def test_second_moment_sampler_draws_from_its_generator_as_float32_on_the_device():
    s = LossSecondMomentSampler(50)
    torch.manual_seed(0)
    a, wa = s.sample(20, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    b, _ = s.sample(20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float32 and wa.dtype == torch.float32
    assert torch.equal(wa, torch.ones(20))  # uniform: 1 / (T / T)
    t, w = s.sample(4, generator=torch.Generator().manual_seed(3), device="meta")
    assert t.device.type == "meta" and w.device.type == "meta"
    assert t.dtype == torch.float32 and w.dtype == torch.float32


def test_second_moment_sampler_refuses_times_and_losses_of_different_lengths():
    s = LossSecondMomentSampler(4)
    with pytest.raises(ValueError):
        s.update(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0]))


def test_dequantize_adds_the_generators_uniform_times_the_bin_width():
    """y = x + (u - 1/2) 2 / (bins - 1) with u ~ U[0, 1) from the generator (else the global
    RNG) in x's dtype; log_volume = d log(2 / (bins - 1)) per example; also for one example."""
    from scorelab.likelihood import dequantize, standard_normal_log_prob

    for shape, bins in (((3, 2, 2), 256), ((1, 5), 16)):
        x = torch.zeros(shape, dtype=torch.float64)
        u = torch.rand(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        torch.manual_seed(0)
        y, log_volume = dequantize(x, bins=bins, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(y, (u - 0.5) * 2 / (bins - 1), rtol=1e-15, atol=0)
        d = math.prod(shape[1:])
        torch.testing.assert_close(
            log_volume, torch.full((shape[0],), d * math.log(2 / (bins - 1)), dtype=torch.float64)
        )
        torch.manual_seed(4)
        u = torch.rand(shape, dtype=torch.float64)
        torch.manual_seed(4)
        y, _ = dequantize(x, bins=bins)
        torch.testing.assert_close(y, (u - 0.5) * 2 / (bins - 1), rtol=1e-15, atol=0)
        z = torch.full(shape, 0.5, dtype=torch.float64)
        expected = -0.125 * d - 0.5 * d * math.log(2 * math.pi)
        torch.testing.assert_close(
            standard_normal_log_prob(z), torch.full((shape[0],), expected, dtype=torch.float64)
        )
    y, log_volume = dequantize(
        torch.zeros(2, 3, device="meta"), generator=torch.Generator().manual_seed(0)
    )
    assert y.device.type == "meta" and log_volume.device.type == "meta"


def test_ode_likelihood_bits_per_dim_of_one_example():
    from scorelab.likelihood import ODELikelihood

    r = ODELikelihood(torch.tensor([-6 * math.log(2)]), 10, torch.zeros(1, 2, 3), 1e-3)
    torch.testing.assert_close(r.bits_per_dim(), torch.tensor([1.0]))


def test_time_of_rho_inverts_rho_in_float64_and_needs_both_methods():
    """t(rho) for rho = -log alpha_bar(t) returns t to 1e-9 (the log-SNR goes to the schedule's
    inverse in float64); a schedule lacking time_at_log_snr or log_alpha_bar gets None."""
    from types import SimpleNamespace

    from scorelab.likelihood import _time_of_rho

    s = make_schedule("linear", T=100)
    time_of = _time_of_rho(s)
    for t0 in (3.25, 37.3, 91.7):
        rho = -float(s.log_alpha_bar(torch.tensor(t0, dtype=torch.float64)))
        assert abs(time_of(rho) - t0) < 1e-9, t0
    assert _time_of_rho(SimpleNamespace(log_alpha_bar=s.log_alpha_bar)) is None
    assert _time_of_rho(SimpleNamespace(time_at_log_snr=s.time_at_log_snr)) is None
