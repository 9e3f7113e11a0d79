"""Few-step sampler race on exact oracles: every scorelab sampler against diffusers' schedulers.

What it measures
----------------
Two Gaussian mixtures whose noisy eps is known in closed form (scorelab.oracle) stand in for a
perfectly trained network, so all the error left is the sampler's:

* ring-2d: ``scorelab.oracle.ring_mixture()``, 8 equal modes of std 0.15 on a radius-2 circle;
* mix-64d: 5 diagonal Gaussians in 64-D with unequal weights (0.4, 0.25, 0.15, 0.12, 0.08),
  means of norm 3-4 and per-dimension variances in [0.05, 0.5] (fixed seed).

Both use the DDPM linear schedule (beta 1e-4..0.02, T = 1000). At NFE 5, 10, 20 and 50
(eps_fn calls, counted) every scorelab sampler starts from the same x_T as the diffusers
schedulers (DDPM, DDIM, DPMSolverMultistep, UniPC, Euler, Heun, with and without Karras sigmas),
which run in the same process on the same oracle. Per row, averaged over seeds:

* SW: sliced Wasserstein-2 to a true sample set (``scorelab.evaluation.sliced_wasserstein``);
* spread: samples go to their most responsible component; the mean over components and
  dimensions of the mean squared deviation from the true component mean over the true variance
  (1 is exact, < 1 under-dispersed, > 1 over-dispersed);
* dlogp: mean log p(samples) - mean log p(true samples) (> 0: samples crowd the modes);
* mode TV: total variation between the assignment frequencies and the mixture weights;
* z: the worst metric's distance from its floor in standard errors of a seed-averaged row
  (z <= 2 on every metric = "at the floor, within sampling noise");
* wall time, and the per-step overhead (wall time - time inside eps_fn) / NFE in microseconds.

Each metric's floor is its value between independent true sample sets of the same size (several
replicate pairs per seed, which also give its sampling noise). "tuned" rows use the grid
(spacing, t_min; for diffusers timestep_spacing or Karras sigmas) that had the lowest z in a
sweep on a separate tuning seed ("what each grid gave"), so the choice is not fitted to the seeds
it is scored on. Per NFE the summary rows give each side's best row by mean SW with the SW
ratio, and by z. The overhead table times matching pairs (ddim / DDIM, ...) in interleaved
repeats at two batch sizes. The Goals section checks the benchmark's goals against these numbers.

Run
---
    .venv/bin/python benchmarks/samplers.py          # writes benchmarks/results/samplers.md
    .venv/bin/python benchmarks/samplers.py --quick  # one seed, half the samples: a smoke test

Options: --out PATH, --threads N (torch threads, default 1: steadier timings on a shared
machine), --replicates N (floor pairs per seed), --peer-time sigma|timestep (where diffusers'
eps is evaluated: at the sigma its step uses, default, or at the rounded timestep a pipeline
passes; the two differ by < 1% in every metric). The default run takes about 4-7 minutes on
2 CPU cores. The oracle is evaluated by FastEps, a matmul form of GaussianMixture.eps_fn that
is checked against it (to 1e-9) before each problem; the metrics use the same closed form.

diffusers is optional (``pip install -e '.[bench]'``); without it only scorelab runs.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from torch import Tensor

import scorelab
from scorelab.evaluation import sliced_wasserstein
from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.samplers import make_timesteps
from scorelab.samplers.ancestral import analytic_gamma

try:
    import diffusers
except ImportError:  # the optional peer
    diffusers = None

NFES: tuple[int, ...] = (5, 10, 20, 50)
METRICS: tuple[str, ...] = ("sw", "spread", "dlogp", "tv")
ONE_SIDED = ("sw", "tv")  # distances: only an excess over the floor is an error
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "samplers.md"
EpsFn = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class Problem:
    """A mixture oracle, the sample size per run and the number of SW projections."""

    name: str
    mixture: GaussianMixture
    n: int
    n_projections: int


def mixture_64d(seed: int = 20240) -> GaussianMixture:
    """5 diagonal Gaussians in 64-D, unequal weights, means of norm 3-4, variances 0.05-0.5."""
    g = torch.Generator().manual_seed(seed)
    weights = torch.tensor([0.4, 0.25, 0.15, 0.12, 0.08], dtype=torch.float64)
    directions = torch.randn(5, 64, generator=g, dtype=torch.float64)
    norms = 3 + torch.rand(5, 1, generator=g, dtype=torch.float64)
    means = directions / directions.norm(dim=1, keepdim=True) * norms
    variances = 0.05 + 0.45 * torch.rand(5, 64, generator=g, dtype=torch.float64)
    return GaussianMixture(weights, means, variances)


def make_problems(quick: bool) -> list[Problem]:
    scale = 2 if quick else 1
    return [
        Problem("ring-2d", ring_mixture(), 4000 // scale, 64),
        Problem("mix-64d", mixture_64d(), 2000 // scale, 128),
    ]


# --------------------------------------------------------------------------- the oracle


class FastEps:
    """The oracle's eps(x, t) for a batch that shares one time, with the sums over dimensions
    as matmuls: the closed form of GaussianMixture.eps_fn (diagonal components), 15x faster in
    64-D. Mixed-time batches fall back to the mixture's eps_fn; check_oracle compares the two.
    """

    def __init__(self, mixture: GaussianMixture, schedule: Any) -> None:
        self.schedule = schedule
        self.exact = mixture.eps_fn(schedule)
        self.log_w = mixture.weights.log()
        self.means, self.variances = mixture.means, mixture.variances

    def _terms(self, xf: Tensor, ab: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k + log N(x; a mu_k, a^2 s_k^2 + sigma^2) (B, K), 1 / var and a mu / var."""
        a = ab.sqrt()
        inv = 1 / (ab * self.variances + (1 - ab))  # (K, d)
        m = a * self.means * inv
        quad = (xf * xf) @ inv.T - 2 * xf @ m.T + (a * self.means * m).sum(1)
        log_n = 0.5 * (inv.log().sum(1) - quad - xf.shape[1] * math.log(2 * math.pi))
        return self.log_w + log_n, inv, m

    def component_log_probs(self, x: Tensor) -> Tensor:
        """log w_k + log N_k(x) of the data (alpha_bar = 1), (B, K)."""
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        return self._terms(xf, torch.ones((), dtype=torch.float64))[0]

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        if t.numel() > 1 and not bool((t == t[0]).all()):
            return self.exact(x, t)
        ab = self.schedule.alpha_bar(t[:1]).to(torch.float64)
        xf = x.reshape(x.shape[0], -1).to(torch.float64)
        log_n, inv, m = self._terms(xf, ab)
        r = torch.softmax(log_n, dim=1)
        score = r @ m - xf * (r @ inv)
        return (-(1 - ab).sqrt() * score).reshape(x.shape).to(x.dtype)


def check_oracle(problem: Problem, schedule: Any) -> float:
    """Largest difference of FastEps from GaussianMixture's eps_fn, log_prob, responsibilities."""
    mix, fast = problem.mixture, FastEps(problem.mixture, schedule)
    exact = mix.eps_fn(schedule)
    g = torch.Generator().manual_seed(7)
    worst = 0.0
    for t_val in (1.0, 2.5, 10.0, 100.0, 400.0, 999.0, 1000.0):
        t = torch.full((256,), t_val, dtype=torch.float64)
        ab = schedule.alpha_bar(t[:1])
        x0, _ = mix.sample(256, generator=g)
        x = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        worst = max(worst, float((fast(x, t) - exact(x, t)).abs().max()))
    lp = fast.component_log_probs(x0)
    worst = max(worst, float((torch.logsumexp(lp, 1) - mix.log_prob(x0)).abs().max()))
    resp = torch.softmax(lp, 1) - mix.responsibilities(x0)
    return max(worst, float(resp.abs().max()))


class TimedEps:
    """An eps_fn wrapper that counts calls and the seconds spent inside them."""

    def __init__(self, fn: EpsFn) -> None:
        self.fn, self.calls, self.seconds = fn, 0, 0.0

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        start = time.perf_counter()
        out = self.fn(x, t)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


# --------------------------------------------------------------------------- metrics


@dataclass
class Reference:
    """One seed's true samples, their mean log-density and its SW projection seed."""

    x: Tensor
    mean_logp: float
    proj_seed: int


def evaluate(problem: Problem, oracle: FastEps, x: Tensor, ref: Reference) -> dict[str, float]:
    """SW to ref, within-mode spread, mean log-density gap and mode-weight TV of samples x."""
    mix = problem.mixture
    x = x.reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        return dict.fromkeys(METRICS, math.nan)
    gen = torch.Generator().manual_seed(ref.proj_seed)
    sw = sliced_wasserstein(x, ref.x, n_projections=problem.n_projections, generator=gen)
    lp = oracle.component_log_probs(x)
    labels = lp.argmax(dim=1)
    ratios = []
    for k in range(mix.n_components):
        xk = x[labels == k]
        if xk.shape[0] >= 2:
            ratios.append(((xk - mix.means[k]) ** 2).mean(0) / mix.variances[k])
    spread = float(torch.stack(ratios).mean())
    freq = torch.bincount(labels, minlength=mix.n_components).to(torch.float64) / x.shape[0]
    tv = 0.5 * float((freq - mix.weights).abs().sum())
    dlogp = float(torch.logsumexp(lp, 1).mean()) - ref.mean_logp
    return {"sw": sw, "spread": spread, "dlogp": dlogp, "tv": tv}


@dataclass
class Floor:
    """Each metric between independent true sample sets: its mean and its sampling noise."""

    values: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})

    def mean(self, m: str) -> float:
        return statistics.fmean(self.values[m])

    def sd(self, m: str) -> float:
        """The spread of one evaluation (one seed) of the metric, from all replicate pairs."""
        return statistics.stdev(self.values[m])


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Spec:
    """One row of the race: a scorelab sampler setting or a diffusers scheduler setting."""

    side: str  # "scorelab" or "diffusers"
    label: str
    sampler: str  # scorelab sampler name or diffusers class name
    options: tuple[tuple[str, Any], ...] = ()
    spacing: str | None = None
    t_min: float | None = None
    two_per_step: bool = False  # 2K - 1 eps calls for K steps (Heun-type)
    in_race: bool = True  # False: reported, never a side's best
    nfes: tuple[int, ...] = NFES

    def steps(self, nfe: int) -> int:
        """Grid intervals K for nfe eps calls (nfe - 1 where only odd counts exist)."""
        opts = dict(self.options)
        if self.two_per_step:
            return (nfe + 1) // 2
        if self.sampler == "pc":  # K predictor calls and K - 1 corrector rounds
            n_c = int(opts.get("n_corrector", 1))
            return (nfe + n_c) // (1 + n_c)
        if self.sampler == "annealed-langevin":  # n_inner per level, + 1 to denoise
            return (nfe - 1) // int(opts.get("n_inner", 5))
        return nfe

    def with_grid(self, spacing: str, t_min: float | None) -> Spec:
        """This sampler on another grid, the grid named in the label."""
        grid = spacing if t_min is None else f"{spacing}, t_min {t_min:g}"
        label = f"{self.label} [{grid}]"
        return replace(self, label=label, spacing=spacing, t_min=t_min)

    def tuned(self) -> Spec:
        """The same setting, labelled as the winner of the sweep."""
        return replace(self, label=self.label.replace(" [", " tuned [", 1))


@dataclass
class RunResult:
    x: Tensor
    nfe: int
    wall: float  # seconds for the whole sampling call
    eps: float  # seconds inside eps_fn


@dataclass
class Row:
    """The per-seed measurements of one spec at one NFE target."""

    spec: Spec
    nfe: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    wall: list[float] = field(default_factory=list)
    eps: list[float] = field(default_factory=list)

    def mean(self, m: str) -> float:
        return statistics.fmean(self.metrics[m])

    def sd(self, m: str) -> float:
        v = self.metrics[m]
        return statistics.stdev(v) if len(v) > 1 else 0.0

    def z(self, m: str, floor: Floor) -> float:
        """Distance of the seed-averaged metric from its floor in standard errors."""
        diff = self.mean(m) - floor.mean(m)
        diff = max(diff, 0.0) if m in ONE_SIDED else abs(diff)
        return diff / (floor.sd(m) / math.sqrt(len(self.metrics[m])))

    def worst_z(self, floor: Floor) -> tuple[float, str]:
        zs = [(self.z(m, floor), m) for m in METRICS]
        return (math.inf, "nan") if any(math.isnan(z) for z, _ in zs) else max(zs)

    def overhead_us(self) -> float:
        """(wall - eps time) / NFE of the fastest seed: the least disturbed by other load."""
        per_run = zip(self.wall, self.eps, self.nfe, strict=True)
        return 1e6 * min((w - e) / max(n, 1) for w, e, n in per_run)


# --------------------------------------------------------------------------- samplers


def analytic_gamma_for(spec: Spec, bench: Bench, nfe: int, seed: int) -> dict[str, Tensor]:
    """Analytic-DPM's Gamma_t on the spec's grid from 2000 fresh true samples: a one-time
    calibration per grid (as in Bao et al. 2022), so it is not counted in NFE or wall time."""
    if dict(spec.options).get("variance") != "analytic":
        return {}
    grid = make_timesteps(
        bench.schedule, spec.steps(nfe), spec.spacing or "uniform", t_min=spec.t_min
    )
    data, _ = bench.problem.mixture.sample(
        2000, generator=torch.Generator().manual_seed(40_000 + seed)
    )
    gen = torch.Generator().manual_seed(45_000 + seed)
    return {"gamma": analytic_gamma(bench.oracle, bench.schedule, grid, data, generator=gen)}


def run_scorelab(spec: Spec, bench: Bench, x_T: Tensor, nfe: int, seed: int) -> RunResult:
    extra = analytic_gamma_for(spec, bench, nfe, seed)
    eps = TimedEps(bench.oracle)
    gen = torch.Generator().manual_seed(50_000 + seed)
    start = time.perf_counter()
    out = scorelab.sample(
        eps,
        tuple(x_T.shape),
        bench.schedule,
        sampler=spec.sampler,
        steps=spec.steps(nfe),
        spacing=spec.spacing,
        t_min=spec.t_min,
        generator=gen,
        x_T=x_T.clone(),
        dtype=x_T.dtype,
        **dict(spec.options),
        **extra,
    )
    wall = time.perf_counter() - start
    if out.nfe != eps.calls:
        raise RuntimeError(f"{spec.label}: reported NFE {out.nfe}, counted {eps.calls}")
    return RunResult(out.x, out.nfe, wall, eps.seconds)


DIFFUSERS_COMMON: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
}


def peer_time(bench: Bench, sched: Any, k: Tensor) -> Tensor:
    """The scorelab time at which the oracle gives eps at a diffusers scheduler's step.

    "sigma": the noise level the scheduler steps with (sched.sigmas at its step index; DDPM and
    DDIM have none and use alphas_cumprod[k], time k + 1). "timestep": time k + 1 for the
    timestep k a pipeline hands its network; Karras grids round or interpolate k, so this is a
    slightly different noise level from the scheduler's own.
    """
    sigmas = getattr(sched, "sigmas", None)
    if bench.peer_time == "timestep" or sigmas is None:
        return torch.tensor(float(k) + 1, dtype=torch.float64)
    sigma = float(sigmas[sched.step_index if sched.step_index is not None else 0])
    return bench.schedule.time_at_log_snr(torch.tensor(-2 * math.log(sigma), dtype=torch.float64))


def run_diffusers(spec: Spec, bench: Bench, x_T: Tensor, nfe: int, seed: int) -> RunResult:
    sched = getattr(diffusers, spec.sampler)(**DIFFUSERS_COMMON, **dict(spec.options))
    eps = TimedEps(bench.oracle)
    extra = {}
    if spec.sampler == "DDPMScheduler":
        extra["generator"] = torch.Generator().manual_seed(50_000 + seed)
    start = time.perf_counter()
    sched.set_timesteps(spec.steps(nfe))
    x = x_T * sched.init_noise_sigma
    for k in sched.timesteps:
        inp = sched.scale_model_input(x, k)  # the VP-space point, x / sqrt(1 + sigma^2)
        e = eps(inp, peer_time(bench, sched, k).expand(x.shape[0]))
        x = sched.step(e, k, x, **extra).prev_sample
    wall = time.perf_counter() - start
    return RunResult(x, eps.calls, wall, eps.seconds)


# --------------------------------------------------------------------------- the rows

SWEEP_GRIDS: tuple[tuple[str, float | None], ...] = (
    ("uniform", None),  # the integer grid T, T - T/K, ..., T/K, 0: a long last step
    ("uniform", 1.0),
    ("uniform", 2.0),
    ("uniform", 5.0),
    ("leading", None),  # diffusers' leading: T - T/K + 1, ..., 1 (never T)
    ("leading", 2.0),
    ("leading-dpm", None),  # DPMSolver/UniPC's leading: K T/(K+1) + 1, ..., T/(K+1) + 1
    ("quadratic", None),  # last positive time T / K^2
    ("quadratic", 1.0),
    ("quadratic", 2.0),
    ("quadratic", 5.0),
    ("logsnr", 1.0),
    ("logsnr", 2.0),
    ("logsnr", 5.0),
    ("karras", 1.0),
    ("karras", 2.0),
    ("karras", 5.0),
)


def scorelab_defaults() -> list[Spec]:
    """Every scorelab sampler on its default grid; the Langevin ones only at NFE 50."""
    s = "scorelab"
    return [
        Spec(s, "ddpm (beta_tilde)", "ddpm", (("variance", "beta_tilde"),)),
        Spec(s, "ddpm (beta)", "ddpm", (("variance", "beta"),)),
        Spec(s, "ddpm (analytic)", "ddpm", (("variance", "analytic"),)),
        Spec(s, "ddpm-score (beta_tilde)", "ddpm-score", (("variance", "beta_tilde"),)),
        Spec(s, "ddim (eta 0)", "ddim"),
        Spec(s, "ddim (eta 1)", "ddim", (("eta", 1.0),)),
        Spec(s, "dpm-solver++ o1", "dpm-solver++", (("order", 1),)),
        Spec(s, "dpm-solver++ o2", "dpm-solver++", (("order", 2),)),
        Spec(s, "dpm-solver++ o3", "dpm-solver++", (("order", 3),)),
        Spec(s, "heun-edm", "heun-edm", two_per_step=True),
        Spec(s, "ode-euler", "ode-euler"),
        Spec(s, "ode-heun", "ode-heun", two_per_step=True),
        Spec(s, "euler-maruyama", "euler-maruyama"),
        Spec(s, "pc (1 corrector)", "pc", (("n_corrector", 1),)),
        Spec(s, "annealed-langevin (7x7)", "annealed-langevin", (("n_inner", 7),), in_race=False),
        Spec(s, "langevin (step 1e-3)", "langevin", in_race=False),
    ]


def sweep_bases() -> list[Spec]:
    """The samplers whose grid (spacing, t_min) the sweep varies."""
    s = "scorelab"
    return [
        Spec(s, "ddpm (beta_tilde)", "ddpm", (("variance", "beta_tilde"),)),
        Spec(s, "ddpm (beta)", "ddpm", (("variance", "beta"),)),
        Spec(s, "ddpm (analytic)", "ddpm", (("variance", "analytic"),)),
        Spec(s, "ddim (eta 0)", "ddim"),
        Spec(s, "dpm-solver++ o2", "dpm-solver++", (("order", 2),)),
        Spec(s, "dpm-solver++ o3", "dpm-solver++", (("order", 3),)),
        Spec(s, "heun-edm", "heun-edm", two_per_step=True),
    ]


PEER_GRIDS: tuple[str, ...] = ("linspace", "leading", "trailing", "karras")


def peer_families() -> list[tuple[Spec, str, bool]]:
    """(scheduler without a grid, the spacing its standard row uses, takes Karras sigmas)."""
    d = "diffusers"
    no_clip = (("clip_sample", False),)
    large = (("variance_type", "fixed_large"),)
    families = [
        (Spec(d, "DDPM (fixed_small)", "DDPMScheduler", no_clip), "trailing", False),
        (Spec(d, "DDPM (fixed_large)", "DDPMScheduler", no_clip + large), "trailing", False),
        (
            Spec(d, "DDIM", "DDIMScheduler", no_clip + (("set_alpha_to_one", True),)),
            "trailing",
            False,
        ),
    ]
    for order in (2, 3):
        dpm = (("solver_order", order), ("algorithm_type", "dpmsolver++"))
        dpm += (("final_sigmas_type", "zero"), ("lower_order_final", True))
        families.append(
            (Spec(d, f"DPM++ {order}M", "DPMSolverMultistepScheduler", dpm), "linspace", True)
        )
        unipc = (("solver_order", order), ("final_sigmas_type", "zero"))
        families.append(
            (Spec(d, f"UniPC-{order}", "UniPCMultistepScheduler", unipc), "linspace", True)
        )
    families.append((Spec(d, "Euler", "EulerDiscreteScheduler"), "trailing", True))
    heun = Spec(d, "Heun", "HeunDiscreteScheduler", two_per_step=True)
    families.append((heun, "trailing", True))
    return families


def peer_grid(base: Spec, grid: str) -> Spec:
    """A diffusers scheduler on a timestep_spacing, or on Karras sigmas."""
    opt = ("use_karras_sigmas", True) if grid == "karras" else ("timestep_spacing", grid)
    return replace(base, label=f"{base.label} [{grid}]", options=base.options + (opt,))


def peer_standard() -> list[Spec]:
    """Each peer on its standard spacing and, where it takes them, on Karras sigmas."""
    out = []
    for base, spacing, karras in peer_families():
        out.append(peer_grid(base, spacing))
        if karras:
            out.append(peer_grid(base, "karras"))
    return out


# --------------------------------------------------------------------------- driver


class Bench:
    """One problem on a set of seeds: references, floors and the runs of any spec."""

    def __init__(
        self, problem: Problem, seeds: Sequence[int], peer_time: str, replicates: int
    ) -> None:
        self.problem = problem
        self.schedule = scorelab.make_schedule("linear")
        self.oracle = FastEps(problem.mixture, self.schedule)
        self.seeds = list(seeds)
        self.peer_time = peer_time
        self.refs: dict[int, Reference] = {}
        self.floor = Floor()
        mix = problem.mixture
        for s in self.seeds:
            x, _ = mix.sample(problem.n, generator=torch.Generator().manual_seed(10_000 + s))
            ref = Reference(x, float(mix.log_prob(x).mean()), proj_seed=30_000 + s)
            self.refs[s] = ref
            for r in range(replicates):
                g = torch.Generator().manual_seed(20_000 + 100 * s + r)
                other, _ = mix.sample(problem.n, generator=g)
                for m, v in evaluate(problem, self.oracle, other, ref).items():
                    self.floor.values[m].append(v)
        self._warm: set[Spec] = set()

    def x_T(self, seed: int) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        shape = (self.problem.n, self.problem.mixture.dim)
        return torch.randn(shape, generator=g, dtype=torch.float64)

    def _sample(self, spec: Spec, x_T: Tensor, nfe: int, seed: int) -> RunResult:
        run = run_scorelab if spec.side == "scorelab" else run_diffusers
        return run(spec, self, x_T, nfe, seed)

    def run(self, spec: Spec, nfe: int) -> Row:
        """spec at nfe on every seed, after one untimed warm-up on a few points."""
        if spec not in self._warm:  # first calls pay for imports and caches
            self._sample(spec, self.x_T(0)[:16], min(nfe, 5), 0)
            self._warm.add(spec)
        row = Row(spec)
        for seed in self.seeds:
            r = self._sample(spec, self.x_T(seed), nfe, seed)
            for m, v in evaluate(self.problem, self.oracle, r.x, self.refs[seed]).items():
                row.metrics[m].append(v)
            row.nfe.append(r.nfe)
            row.wall.append(r.wall)
            row.eps.append(r.eps)
        return row


Sweep = dict[str, dict[int, Row]]  # label -> nfe -> row


def sweep(tune: Bench, nfes: Sequence[int], peers: bool) -> Sweep:
    """Every sweep base on every grid (and each peer on each of its grids), on the tuning seed."""
    specs = [b.with_grid(sp, t_min) for b in sweep_bases() for sp, t_min in SWEEP_GRIDS]
    if peers:
        for base, _, karras in peer_families():
            specs += [peer_grid(base, g) for g in PEER_GRIDS if karras or g != "karras"]
    return {spec.label: {nfe: tune.run(spec, nfe) for nfe in nfes} for spec in specs}


def sweep_winners(results: Sweep, floor: Floor, nfe: int) -> dict[str, Spec]:
    """Per sweep base, the grid with the lowest worst-metric z at this NFE (then lowest SW)."""
    best: dict[str, tuple[tuple[float, float], Spec]] = {}
    for by_nfe in results.values():
        row = by_nfe[nfe]
        base = row.spec.label.split(" [")[0]
        key = (row.worst_z(floor)[0], row.mean("sw"))
        if base not in best or key < best[base][0]:
            best[base] = (key, row.spec)
    return {base: spec for base, (_, spec) in best.items()}


def rk45_rows(bench: Bench) -> list[Row]:
    """The adaptive ode-rk45 at two tolerances (integer grid: t_min = 1); NFE as measured."""
    rows = []
    for tol in (1e-3, 1e-5):
        opts = (("rtol", tol), ("atol", tol))
        spec = Spec("scorelab", f"ode-rk45 (rtol = atol = {tol:g})", "ode-rk45", opts)
        rows.append(bench.run(spec, nfe=1000))
    return rows


OVERHEAD_PAIRS: tuple[tuple[str, str], ...] = (
    ("ddpm (beta_tilde)", "DDPM (fixed_small) [trailing]"),
    ("ddim (eta 0)", "DDIM [trailing]"),
    ("dpm-solver++ o2", "DPM++ 2M [linspace]"),
    ("dpm-solver++ o3", "DPM++ 3M [linspace]"),
    ("ode-euler", "Euler [trailing]"),
    ("heun-edm", "Heun [karras]"),
)


@dataclass
class Overhead:
    """Per-step overhead of a scorelab sampler and its diffusers counterpart, microseconds."""

    problem: str
    batch: int
    pair: tuple[str, str]
    us: tuple[float, float]


def measure_overhead(bench: Bench, nfe: int = 20, reps: int = 5) -> list[Overhead]:
    """Interleaved repeats of each pair at two batch sizes; the fastest repeat of each counts."""
    specs = {s.label: s for s in scorelab_defaults() + peer_standard()}
    out = []
    for batch in (bench.problem.n, 16):
        x_T = bench.x_T(0)[:batch]
        for pair in OVERHEAD_PAIRS:
            best = [math.inf, math.inf]
            for _ in range(reps):
                for j, label in enumerate(pair):
                    r = bench._sample(specs[label], x_T, nfe, 0)
                    best[j] = min(best[j], 1e6 * (r.wall - r.eps) / r.nfe)
            out.append(Overhead(bench.problem.name, batch, pair, (best[0], best[1])))
    return out


def overhead_table(rows: list[Overhead]) -> str:
    lines = [
        "| problem | batch | scorelab sampler | µs/step | diffusers scheduler | µs/step | ratio |",
        "|---|---:|---|---:|---|---:|---:|",
    ]
    for o in rows:
        lines.append(
            f"| {o.problem} | {o.batch} | {o.pair[0]} | {o.us[0]:.0f} | {o.pair[1]} "
            f"| {o.us[1]:.0f} | {o.us[0] / o.us[1]:.2f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report


def fmt(v: float, digits: int = 4) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.{digits}f}" if abs(v) >= 10 ** -(digits - 1) or v == 0 else f"{v:.1e}"


def best_rows(rows: list[Row], floor: Floor) -> dict[str, dict[str, Row | None]]:
    """Per side: the in-race row with the lowest mean SW and the one with the lowest z."""
    out: dict[str, dict[str, Row | None]] = {}
    for side in ("scorelab", "diffusers"):
        cands = [r for r in rows if r.spec.side == side and r.spec.in_race]
        cands = [r for r in cands if not math.isnan(r.mean("sw"))]
        out[side] = {
            "sw": min(cands, key=lambda r: r.mean("sw"), default=None),
            "z": min(cands, key=lambda r: (r.worst_z(floor)[0], r.mean("sw")), default=None),
        }
    return out


def race_table(bench: Bench, rows_by_nfe: dict[int, list[Row]]) -> str:
    """The markdown table of one problem."""
    floor = bench.floor
    f_sw = floor.mean("sw")
    lines = [
        "| NFE | side | sampler [grid] | SW ±sd | SW / floor | spread | dlogp | mode TV "
        "| z (worst metric) | wall ms | overhead µs/step |",
        "|---:|---|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    floor_cells = " | ".join(f"{fmt(floor.mean(m))} ±{fmt(floor.sd(m), 2)}" for m in METRICS)
    floor_cells = floor_cells.replace(" | ", " | 1.00 | ", 1)
    for nfe, rows in rows_by_nfe.items():
        lines.append(
            f"| {nfe} | floor | true vs true samples (±: one seed's sd) | {floor_cells} ||||"
        )
        for r in rows:
            n = statistics.fmean(r.nfe)
            z, zm = r.worst_z(floor)
            name = r.spec.label + ("" if r.spec.in_race else " (out of race)")
            lines.append(
                f"| {n:.0f} | {r.spec.side} | {name} | {fmt(r.mean('sw'))} ±{fmt(r.sd('sw'), 2)} "
                f"| {r.mean('sw') / f_sw:.2f} | {fmt(r.mean('spread'))} "
                f"| {fmt(r.mean('dlogp'))} | {fmt(r.mean('tv'))} | {z:.1f} {zm} "
                f"| {1e3 * statistics.fmean(r.wall):.1f} | {r.overhead_us():.0f} |"
            )
        best = best_rows(rows, floor)
        sl, df = best["scorelab"]["sw"], best["diffusers"]["sw"]
        if sl is not None and df is not None:
            lines.append(
                f"| {nfe} | **best SW** | **scorelab / diffusers: {sl.spec.label} / "
                f"{df.spec.label}** | **ratio {sl.mean('sw') / df.mean('sw'):.3f}** "
                f"| {sl.mean('sw') / f_sw:.2f} / {df.mean('sw') / f_sw:.2f} |||||"
                f"| {sl.overhead_us():.0f} / {df.overhead_us():.0f} |"
            )
        sl, df = best["scorelab"]["z"], best["diffusers"]["z"]
        if sl is not None and df is not None:
            lines.append(
                f"| {nfe} | **best z** | **scorelab / diffusers: {sl.spec.label} / "
                f"{df.spec.label}** || {sl.mean('sw') / f_sw:.2f} / {df.mean('sw') / f_sw:.2f} "
                f"|||| {sl.worst_z(floor)[0]:.1f} / {df.worst_z(floor)[0]:.1f} || |"
            )
    return "\n".join(lines) + "\n"


def sweep_table(results: Sweep, floor: Floor, nfes: Sequence[int]) -> str:
    """SW / floor, spread and z of every grid; bold: the grid the tuned row uses."""
    winners = {nfe: sweep_winners(results, floor, nfe) for nfe in nfes}
    f_sw = floor.mean("sw")
    lines = [
        "| sampler [grid] | " + " | ".join(f"NFE {n}: SW/floor, spread, z" for n in nfes) + " |",
        "|---|" + "---|" * len(nfes),
    ]
    for label, by_nfe in results.items():
        cells = []
        for nfe in nfes:
            r = by_nfe[nfe]
            c = f"{r.mean('sw') / f_sw:.2f}, {fmt(r.mean('spread'), 3)}, {r.worst_z(floor)[0]:.1f}"
            chosen = r.spec in winners[nfe].values()
            cells.append(f"**{c}**" if chosen else c)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rk45_table(rows: list[Row], floor: Floor) -> str:
    lines = [
        "| adaptive setting | NFE (mean) | SW / floor | spread | dlogp | mode TV | z | wall ms |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        z, zm = r.worst_z(floor)
        lines.append(
            f"| {r.spec.label} | {statistics.fmean(r.nfe):.1f} "
            f"| {r.mean('sw') / floor.mean('sw'):.2f} | {fmt(r.mean('spread'))} "
            f"| {fmt(r.mean('dlogp'))} | {fmt(r.mean('tv'))} | {z:.1f} {zm} "
            f"| {1e3 * statistics.fmean(r.wall):.0f} |"
        )
    return "\n".join(lines) + "\n"


Results = dict[str, tuple[Bench, dict[int, list[Row]]]]


def goals(results: Results, overheads: list[Overhead]) -> str:
    """The benchmark's goals, each with the numbers that decide it."""
    out = ["## Goals", ""]
    lines, ok, z_lines, z_ok = [], True, [], True
    for name, (bench, rows_by_nfe) in results.items():
        floor = bench.floor
        for nfe, rows in rows_by_nfe.items():
            best = best_rows(rows, floor)
            sl, df = best["scorelab"]["sw"], best["diffusers"]["sw"]
            zl, zd = best["scorelab"]["z"], best["diffusers"]["z"]
            if None in (sl, df, zl, zd):
                continue
            win = sl.mean("sw") < df.mean("sw")
            ok &= win
            z_sl, z_df = zl.worst_z(floor)[0], zd.worst_z(floor)[0]
            verdict = "both at the floor" if max(z_sl, z_df) <= 2 else "lower"
            if z_sl >= z_df and max(z_sl, z_df) > 2:
                verdict = "NOT lower"
                z_ok = False
            z_lines.append(
                f"  - {name} NFE {nfe}: z {z_sl:.1f} ({zl.spec.label}) vs {z_df:.1f} "
                f"({zd.spec.label}): {verdict}"
            )
            se = floor.sd("sw") / math.sqrt(len(bench.seeds))
            tie = abs(sl.mean("sw") - df.mean("sw")) <= 2 * se
            lines.append(
                f"  - {name} NFE {nfe}: SW {fmt(sl.mean('sw'))} ({sl.spec.label}) vs "
                f"{fmt(df.mean('sw'))} ({df.spec.label}): {'lower' if win else 'NOT lower'}"
                f"{', within 2 standard errors (a tie)' if tie else ''}"
            )
    if lines:
        out.append(
            "1. At every NFE the best scorelab row has a lower mean SW than the best diffusers "
            f"row: **{'met' if ok else 'not met'}**"
        )
        out += lines
        out.append(
            "1b. The same race on all four metrics: scorelab's lowest worst-metric z below "
            f"diffusers' at every NFE, or both at the floor: **{'met' if z_ok else 'not met'}**"
        )
        out += z_lines
    if "ring-2d" in results and 10 in results["ring-2d"][1]:
        bench, rows_by_nfe = results["ring-2d"]
        best = best_rows(rows_by_nfe[10], bench.floor)["scorelab"]
        for key, what in (("z", "lowest z"), ("sw", "lowest SW")):
            row = best[key]
            if row is None:
                continue
            zs = {m: row.z(m, bench.floor) for m in METRICS}
            met = all(z <= 2 for z in zs.values())
            out.append(
                f"2{'ab'[key == 'sw']}. ring-2d, NFE 10, scorelab's {what} row ({row.spec.label}) "
                f"at the floor (z <= 2) on every metric: **{'met' if met else 'not met'}**: "
                + "; ".join(
                    f"{m} {fmt(row.mean(m))} vs {fmt(bench.floor.mean(m))} (z {zs[m]:.1f})"
                    for m in METRICS
                )
            )
    if "mix-64d" in results and 10 in results["mix-64d"][1]:
        bench, rows_by_nfe = results["mix-64d"]
        row = best_rows(rows_by_nfe[10], bench.floor)["scorelab"]["sw"]
        if row is not None:
            ratio = row.mean("sw") / bench.floor.mean("sw")
            out.append(
                f"3. mix-64d, NFE 10, scorelab's lowest-SW row ({row.spec.label}) within 1.5x "
                f"of the SW floor: **{'met' if ratio <= 1.5 else 'not met'}**: {ratio:.2f}x "
                f"({fmt(row.mean('sw'))} vs {fmt(bench.floor.mean('sw'))})"
            )
    if overheads:
        worse = [o for o in overheads if o.us[0] >= o.us[1]]
        out.append(
            "4. Per-step overhead ((wall - eps time) / NFE, fastest of 5 interleaved repeats at "
            "NFE 20) of each scorelab sampler below its diffusers counterpart: "
            f"**{'met' if not worse else 'not met'}** ({len(overheads) - len(worse)} of "
            f"{len(overheads)} pairs below; ratio scorelab / diffusers "
            f"{min(o.us[0] / o.us[1] for o in overheads):.2f} to "
            f"{max(o.us[0] / o.us[1] for o in overheads):.2f}, see the overhead table)"
        )
    return "\n".join(out) + "\n"


def header(args: argparse.Namespace, runtime: float, seeds: Sequence[int], tune: int) -> str:
    peer = (
        "clip_sample=False (DDPM, DDIM), set_alpha_to_one=True (DDIM); DPM++: algorithm_type="
        "'dpmsolver++'; DPM++ and UniPC (bh2, predict_x0): final_sigmas_type='zero', "
        "lower_order_final=True. [grid] is timestep_spacing, or [karras] = use_karras_sigmas="
        "True (sigmas between the training sigmas' min and max, t = 1..1000). Standard rows: "
        "'trailing' for DDPM/DDIM/Euler/Heun, 'linspace' for DPM++/UniPC, and [karras] where "
        "supported; 'tuned' rows: the grid of {linspace, leading, trailing, karras} with the "
        "lowest z on the tuning seed"
    )
    ours = (
        "every sampler on its default grid (steps K set so that the counted NFE hits the "
        "target); 'tuned' rows: ddpm, ddim, dpm-solver++ o2/o3 and heun-edm on the grid "
        "(spacing in uniform, quadratic, logsnr, karras; t_min default, 1, 2 or 5) with the "
        "lowest z on the tuning seed; Langevin-type samplers only at NFE 50, out of the race"
    )
    where = {
        "sigma": "at the noise level the scheduler steps with (its sigmas; DDPM/DDIM: time k + 1)",
        "timestep": "at time k + 1 for the timestep k it hands the network",
    }[args.peer_time]
    version = diffusers.__version__ if diffusers is not None else "not installed"
    return (
        "# Sampler race on exact oracles: scorelab vs diffusers\n\n"
        "Generated by `benchmarks/samplers.py`"
        f"{' --quick' if args.quick else ''}; see its docstring for the method.\n\n"
        f"- date {datetime.date.today().isoformat()}, runtime {runtime:.0f} s; torch "
        f"{torch.__version__}, diffusers {version}, scorelab {scorelab.__version__}, python "
        f"{platform.python_version()}; CPU: {cpu_model()}, {torch.get_num_threads()} torch "
        "thread(s)\n"
        f"- seeds {', '.join(map(str, seeds))} (x_T, references, stochastic noise); grids tuned "
        f"on seed {tune}; floors from {args.replicates} replicate true-sample pairs per seed\n"
        "- schedule: DDPM linear, beta 1e-4..0.02, T = 1000; diffusers timestep k = scorelab "
        "time k + 1 (alphas_cumprod checked to 1e-6)\n"
        f"- scorelab rows: {ours}\n"
        f"- diffusers options: {peer}\n"
        f"- diffusers' eps: the same oracle, {where}; scorelab runs in float64, diffusers' "
        "Euler/DPM steps cast the state to float32\n"
        "- NFE: eps_fn calls, counted. Heun-type rows make 2K - 1 calls for K steps, so at an "
        "even target they use one fewer; pc makes K + (K - 1)\n"
        "- SW: sliced Wasserstein-2 to true samples; spread: within-mode mean squared deviation "
        "/ true variance (1 exact); dlogp: mean log p(samples) - mean log p(true); mode TV: "
        "total variation of the mode frequencies; z: the worst metric's |row - floor| in "
        "standard errors of a seed-averaged row (SW and TV count only an excess); overhead: "
        "(wall - eps time) / NFE\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one seed, half the samples")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--replicates", type=int, default=None, help="floor pairs per seed")
    p.add_argument(
        "--peer-time",
        choices=("sigma", "timestep"),
        default="sigma",
        help="diffusers' eps at its own sigma (default) or at its timestep k + 1",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    seeds = (0,) if args.quick else (0, 1, 2)
    tune_seed = 1000
    args.replicates = args.replicates or (4 if args.quick else 8)
    schedule = scorelab.make_schedule("linear")
    if diffusers is None:
        print(
            "diffusers is not installed: running scorelab only. "
            "For the comparison: pip install -e '.[bench]'",
            file=sys.stderr,
        )
    else:
        ac = diffusers.DDPMScheduler(**DIFFUSERS_COMMON).alphas_cumprod.to(torch.float64)
        gap = float((ac - schedule.alpha_bar_table[1:]).abs().max())
        if gap > 1e-6:
            raise SystemExit(f"diffusers alphas_cumprod[k] != scorelab alpha_bar(k + 1): {gap}")

    sections: list[str] = []
    results: Results = {}
    overheads: list[Overhead] = []
    for problem in make_problems(args.quick):
        t0 = time.perf_counter()
        gap = check_oracle(problem, schedule)
        if gap > 1e-9:
            raise SystemExit(f"{problem.name}: the fast oracle differs from scorelab's by {gap}")
        bench = Bench(problem, seeds, args.peer_time, args.replicates)
        tune = Bench(problem, (tune_seed,), args.peer_time, args.replicates)
        swept = sweep(tune, NFES, peers=diffusers is not None)
        print(f"  {problem.name}: sweep done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        rows_by_nfe: dict[int, list[Row]] = {}
        for nfe in NFES:
            tuned = [w.tuned() for w in sweep_winners(swept, tune.floor, nfe).values()]
            specs = [s for s in scorelab_defaults() if s.in_race or nfe == 50]
            specs += [s for s in tuned if s.side == "scorelab"]
            if diffusers is not None:
                specs += peer_standard() + [s for s in tuned if s.side == "diffusers"]
            rows_by_nfe[nfe] = [bench.run(s, nfe) for s in specs]
            print(f"  {problem.name} NFE {nfe} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        results[problem.name] = (bench, rows_by_nfe)
        if diffusers is not None:
            overheads += measure_overhead(bench)
        mix = problem.mixture
        sections.append(
            f"## {problem.name}: d = {mix.dim}, {mix.n_components} components, weights "
            f"{', '.join(f'{w:.2f}' for w in mix.weights.tolist())}; n = {problem.n} per run, "
            f"{len(seeds)} seed(s), SW with {problem.n_projections} projections\n\n"
            + race_table(bench, rows_by_nfe)
            + "\nThe adaptive solver (not in the race: its NFE is what the tolerance needs):\n\n"
            + rk45_table(rk45_rows(bench), bench.floor)
            + f"\n### {problem.name}: what each grid gave (tuning seed {tune_seed}; cells: SW / "
            "floor, spread, z; bold: the grid the 'tuned' row uses)\n\n"
            + sweep_table(swept, tune.floor, NFES)
            + f"\n({problem.name}: {time.perf_counter() - t0:.0f} s)\n"
        )
        print(sections[-1], flush=True)

    if overheads:
        sections.append(
            "## Per-step overhead: (wall - eps time) / NFE at NFE 20, fastest of 5 interleaved "
            "repeats, at the problem's batch and at batch 16\n\n" + overhead_table(overheads)
        )
        print(sections[-1])
    goal_text = goals(results, overheads)
    print(goal_text)
    runtime = time.perf_counter() - started
    report = header(args, runtime, seeds, tune_seed) + "\n" + "\n".join(sections) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + goal_text)
    print(f"runtime {runtime:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
