"""Few-step sampler race on exact oracles: every scorelab sampler against diffusers'
schedulers, k-diffusion's samplers and flow_matching's ODE solver.

What it measures
----------------
Two Gaussian mixtures whose noisy eps is known in closed form (scorelab.oracle) stand in for a
perfectly trained network, so all the error left is the sampler's:

* ring-2d: ``scorelab.oracle.ring_mixture()``, 8 equal modes of std 0.15 on a radius-2 circle;
* mix-64d: 5 diagonal Gaussians in 64-D with unequal weights (0.4, 0.25, 0.15, 0.12, 0.08),
  means of norm 3-4 and per-dimension variances in [0.05, 0.5] (fixed seed).

The DDPM section uses the DDPM linear schedule (beta 1e-4..0.02, T = 1000). At NFE 5, 10, 20
and 50 (eps_fn calls, counted) every scorelab sampler starts from the same x_T as

* diffusers' schedulers (DDPM, DDIM, DPMSolverMultistep, UniPC, Euler, Heun, with and without
  Karras sigmas), fed eps at their own noise level;
* k-diffusion's sample_dpmpp_2m, sample_dpmpp_2m_sde, sample_dpmpp_3m_sde (eta 1, a seeded
  BrownianTreeNoiseSampler per seed), sample_heun and sample_lms, on get_sigmas_karras (rho 7)
  and get_sigmas_exponential between the schedule's sigma at t = 1 and t = T, and
  sample_dpm_adaptive (its NFE is what the tolerance needs: in the adaptive table). They take a
  denoiser D(x^, s) in k-diffusion's VE convention on the same schedule: s = sqrt((1 - ab) /
  ab), x^ = x_t / sqrt(ab), D = x^ - s eps(sqrt(ab) x^, t(s)) with t(s) the schedule's time of
  log-SNR -2 log s, and x^_T = x_T sqrt(1 + s_max^2). Only k-diffusion's sampler module is
  loaded (its package __init__ imports torchvision, whose wheels need another torch):
  k_diffusion/sampling.py from the installed package, as a module of a stub package whose
  utils holds k-diffusion's one-line append_dims, the only utils function it uses;

all in the same process on the same oracle. scorelab's rows: every sampler on its default grid,
the grids of a sweep ("tuned", below) and "[tune-steps]" rows: dpm-solver++ o2/o3 and unipc
o2/o3 on the grid scorelab.samplers.tuning.tune_timesteps fits at each NFE (256 noises of the
tuning seed), passed as sample(timesteps=).

The flow section runs the same problems on ``scorelab.processes.sde.Flow()`` (x_t = (1 - t)
x_0 + t eps, t in [1e-3, 1 - 1e-3]): scorelab's flow-euler, flow-midpoint, flow-heun, ddim,
dpm-solver++ o2/o3, unipc o2/o3 and heun-edm on their default and tune-steps grids against
flow_matching's ODESolver (euler, midpoint, heun3, rk4 from torchdiffeq: 1, 2, 3, 4 calls per
step) on a uniform grid, fed the exact velocity in its convention (t = 0 noise, t = 1 data):
v(x, s) = -u(x, 1 - s), u the velocity of GaussianMixture.velocity_fn(Flow()), from s = 1e-3
(scorelab's T) to 1, starting from the same x_T mapped to the native x_T / input_scale(T). Before
it, scorelab's flow-euler and flow_matching's euler on one grid are checked to agree to 1e-6.

Per row, averaged over seeds:

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
sweep on a separate tuning seed ("what each grid gave"), and the tune-steps grids are fitted on
that seed's noise, so no choice is fitted to the seeds it is scored on. Per NFE the summary rows
give each side's best row by mean SW with the SW ratio, and by z, against every peer. The
overhead table times matching pairs (ddim / DDIM, dpm-solver++ o2 / sample_dpmpp_2m,
flow-euler / euler, ...) in interleaved repeats at two batch sizes. The Goals section checks
the benchmark's goals against these numbers.

Run
---
    .venv/bin/python benchmarks/samplers.py          # writes benchmarks/results/samplers.md
    .venv/bin/python benchmarks/samplers.py --quick  # one seed, half the samples: a smoke test

Options: --out PATH, --threads N (torch threads, default 1: steadier timings on a shared
machine), --replicates N (floor pairs per seed), --peer-time sigma|timestep (where diffusers'
eps is evaluated: at the sigma its step uses, default, or at the rounded timestep a pipeline
passes; the two differ by < 1% in every metric). The default run took 11 minutes on 2 shared
CPU cores (its header records the CPU and the runtime; load from other jobs changes it). The
oracle is evaluated by FastEps, a matmul form of GaussianMixture.eps_fn that is checked against
it (to 1e-9; velocity_fn too on the flow process) before each problem; the metrics use the
same closed form.

The peers are optional (``pip install -e '.[bench]'``: diffusers, k-diffusion, flow-matching);
a missing one is skipped. On a machine whose torch must not change, install k-diffusion and
flow_matching without their dependencies (k-diffusion pins torchvision and more, of which the
sampler module needs none):
``pip install --no-deps k-diffusion flow-matching torchdiffeq torchsde trampoline``
(scipy and tqdm, which sampling.py also imports, come with scorelab's own dependencies here).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import math
import platform
import statistics
import sys
import time
import types
import warnings
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
from scorelab.processes.parameterization import process_from_eps
from scorelab.processes.sde import Flow
from scorelab.samplers import make_timesteps
from scorelab.samplers.ancestral import analytic_gamma
from scorelab.samplers.tuning import tune_timesteps

try:
    import diffusers
except ImportError:  # the optional peer
    diffusers = None

try:
    from flow_matching.solver import ODESolver
except ImportError:  # the optional peer
    ODESolver = None


def load_kdiffusion() -> types.ModuleType | None:
    """k-diffusion's sampler module alone, or None if it is not installed.

    The package's __init__ imports torchvision (and its models), whose wheels need another
    torch; sampling.py needs none of it. It is loaded from the installed package as the module
    of a stub package whose utils holds k-diffusion's append_dims, the one utils function it
    calls.
    """
    found = importlib.util.find_spec("k_diffusion")  # finds the package without running it
    if found is None or not found.submodule_search_locations:
        return None
    stub, utils = types.ModuleType("_kdiffusion"), types.ModuleType("_kdiffusion.utils")
    stub.__path__ = []
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]  # k-diffusion's
    stub.utils = utils
    spec = importlib.util.spec_from_file_location(
        "_kdiffusion.sampling", Path(found.submodule_search_locations[0]) / "sampling.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.update({stub.__name__: stub, utils.__name__: utils, spec.name: module})
    try:
        spec.loader.exec_module(module)
    except ImportError as e:  # torchsde, torchdiffeq, scipy or tqdm missing
        print(f"k-diffusion's sampling.py does not import ({e}): skipped", file=sys.stderr)
        return None
    # torchsde rounds the Brownian tree's end to 6 digits, so the first query at sigma_max
    # (157.40725708...) lands past it (157.407257) and is clamped to it, with a warning each time
    warnings.filterwarnings("ignore", message=r"Should have tb<=t1", category=UserWarning)
    return module


KD = load_kdiffusion()


def peer_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


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
    On a process with an input scale (Flow) x is the native x_t, as eps_fn takes it.
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
        scale = float(self.schedule.input_scale(t[:1]))
        if scale != 1:  # the VP view x~ = c x_t
            xf = scale * xf
        log_n, inv, m = self._terms(xf, ab)
        r = torch.softmax(log_n, dim=1)
        score = r @ m - xf * (r @ inv)
        return (-(1 - ab).sqrt() * score).reshape(x.shape).to(x.dtype)

    def velocity(self, x: Tensor, t: Tensor, eps_fn: EpsFn | None = None) -> Tensor:
        """u(x, t) = f x + (g^2 / (2 sigma_t)) eps, as GaussianMixture.velocity_fn builds it
        (eps from eps_fn, e.g. a counting wrapper of this oracle)."""
        eps = (eps_fn or self)(x, t)
        return process_from_eps(eps, "velocity", x, t, self.schedule)


def check_oracle(problem: Problem, schedule: Any) -> float:
    """Largest difference of FastEps from GaussianMixture's eps_fn, log_prob, responsibilities
    and, on the flow process, velocity_fn (at fractions of T from 1e-3 to 1, x in the VP view
    mapped to the native x_t)."""
    mix, fast = problem.mixture, FastEps(problem.mixture, schedule)
    exact = mix.eps_fn(schedule)
    exact_u = mix.velocity_fn(schedule) if isinstance(schedule, Flow) else None
    g = torch.Generator().manual_seed(7)
    worst = 0.0
    for frac in (1e-3, 2.5e-3, 0.01, 0.1, 0.4, 0.999, 1.0):
        t = torch.full((256,), frac * float(schedule.T), dtype=torch.float64)
        ab, scale = schedule.alpha_bar(t[:1]), schedule.input_scale(t[:1]).to(torch.float64)
        x0, _ = mix.sample(256, generator=g)
        noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        x = (ab.sqrt() * x0 + (1 - ab).sqrt() * noise) / scale
        worst = max(worst, float((fast(x, t) - exact(x, t)).abs().max()))
        if exact_u is not None:
            worst = max(worst, float((fast.velocity(x, t) - exact_u(x, t)).abs().max()))
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
    """One row of the race: a scorelab sampler setting or a peer's (a diffusers scheduler, a
    k-diffusion sampler function, a flow_matching ODE method)."""

    side: str  # "scorelab", "diffusers", "k-diffusion" or "flow_matching"
    label: str
    sampler: str  # scorelab sampler name, diffusers class, k-diffusion function, ODE method
    options: tuple[tuple[str, Any], ...] = ()
    spacing: str | None = None  # k-diffusion: "karras" or "exponential"
    t_min: float | None = None
    two_per_step: bool = False  # 2K - 1 eps calls for K steps (Heun-type)
    in_race: bool = True  # False: reported, never a side's best
    nfes: tuple[int, ...] = NFES
    timesteps: tuple[float, ...] | None = None  # an explicit (tuned) grid for one NFE
    calls_per_step: int = 1  # flow_matching's methods: c calls on every step

    def steps(self, nfe: int) -> int:
        """Grid intervals K for nfe eps calls (nfe - 1 where only odd counts exist)."""
        opts = dict(self.options)
        if self.timesteps is not None:
            return len(self.timesteps) - 1
        if self.calls_per_step > 1:
            return max(nfe // self.calls_per_step, 1)
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
    if spec.timesteps is not None:
        extra["timesteps"] = torch.tensor(spec.timesteps, dtype=torch.float64)
    else:
        extra.update(steps=spec.steps(nfe), spacing=spec.spacing, t_min=spec.t_min)
    eps = TimedEps(bench.oracle)
    gen = torch.Generator().manual_seed(50_000 + seed)
    start = time.perf_counter()
    out = scorelab.sample(
        eps,
        tuple(x_T.shape),
        bench.schedule,
        sampler=spec.sampler,
        generator=gen,
        x_T=x_T / bench.x_scale,  # native x_T (the same tensor on the DDPM schedule)
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


def kd_sigma(bench: Bench, t: float) -> float:
    """k-diffusion's sigma = sqrt((1 - alpha_bar) / alpha_bar) at a scorelab time."""
    ab = float(bench.schedule.alpha_bar(torch.tensor([t], dtype=torch.float64)))
    return math.sqrt((1 - ab) / ab)


def run_kdiffusion(spec: Spec, bench: Bench, x_T: Tensor, nfe: int, seed: int) -> RunResult:
    """A k-diffusion sampler on the oracle as a VE denoiser D(x^, s) = x^ - s eps(a x^, t(s)),
    a = 1 / sqrt(1 + s^2), from x^_T = x_T sqrt(1 + s_max^2); its output x^ at s = 0 is x_0
    (sample_dpm_adaptive stops at s_min, as k-diffusion's does)."""
    eps = TimedEps(bench.oracle)
    s_min, s_max = kd_sigma(bench, 1.0), kd_sigma(bench, float(bench.schedule.T))

    def denoiser(x_hat: Tensor, sigma: Tensor) -> Tensor:
        s = sigma[:1].to(torch.float64)
        t = bench.schedule.time_at_log_snr(-2 * torch.log(s)).expand(x_hat.shape[0])
        a = 1 / math.sqrt(1 + float(s) ** 2)
        return x_hat - float(s) * eps(a * x_hat, t)

    opts = dict(spec.options)
    start = time.perf_counter()
    x = x_T * math.sqrt(1 + s_max**2)
    fn = getattr(KD, spec.sampler)
    if spec.sampler == "sample_dpm_adaptive":
        x = fn(denoiser, x, s_min, s_max, disable=True, **opts)
    else:
        make = {"karras": KD.get_sigmas_karras, "exponential": KD.get_sigmas_exponential}
        sigmas = make[spec.spacing](spec.steps(nfe), s_min, s_max).to(torch.float64)
        if "eta" in opts:  # the SDE samplers: a Brownian tree seeded per seed
            low = sigmas[sigmas > 0].min()
            tree = KD.BrownianTreeNoiseSampler(x, low, sigmas.max(), seed=50_000 + seed)
            opts["noise_sampler"] = tree
        x = fn(denoiser, x, sigmas, disable=True, **opts)
    wall = time.perf_counter() - start
    return RunResult(x, eps.calls, wall, eps.seconds)


def fm_grid(steps: int) -> Tensor:
    """flow_matching's uniform grid s = 1 - T .. 1 (t = 0 noise, t = 1 data)."""
    return torch.linspace(1 - Flow.T, 1.0, steps + 1, dtype=torch.float64)


def run_flow_matching(
    spec: Spec, bench: Bench, x_T: Tensor, nfe: int, seed: int, grid: Tensor | None = None
) -> RunResult:
    """flow_matching's ODESolver on the exact velocity in its convention: v(x, s) =
    -u(x, 1 - s), from the native x_T at s = 1 - T to s = 1 on a uniform grid (or grid)."""
    eps = TimedEps(bench.oracle)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        tt = (1 - t).to(torch.float64).reshape(1).expand(x.shape[0])
        return -bench.oracle.velocity(x, tt, eps)

    grid = fm_grid(spec.steps(nfe)) if grid is None else grid
    start = time.perf_counter()
    x = ODESolver(velocity_model=velocity).sample(
        x_T / bench.x_scale, step_size=None, method=spec.sampler, time_grid=grid
    )
    wall = time.perf_counter() - start
    return RunResult(x, eps.calls, wall, eps.seconds)


def check_flow_peer(bench: Bench, steps: int = 10, n: int = 256) -> float:
    """Largest difference between scorelab's flow-euler and flow_matching's euler on the same
    grid (scorelab's t = 1 - s) from the same x_T, float64: the conventions agree."""
    grid = fm_grid(steps)
    x_T = bench.x_T(0)[:n]
    theirs = run_flow_matching(Spec("flow_matching", "euler", "euler"), bench, x_T, 0, 0, grid)
    ours = scorelab.sample(
        bench.oracle, tuple(x_T.shape), bench.schedule, "flow-euler",
        timesteps=1 - grid, x_T=x_T / bench.x_scale, dtype=x_T.dtype,
    )  # fmt: skip
    return float((ours.x - theirs.x).abs().max())


RUNNERS: dict[str, Callable[..., RunResult]] = {
    "scorelab": run_scorelab,
    "diffusers": run_diffusers,
    "k-diffusion": run_kdiffusion,
    "flow_matching": run_flow_matching,
}


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
        Spec(s, "unipc o2", "unipc", (("order", 2),)),
        Spec(s, "unipc o3", "unipc", (("order", 3),)),
        Spec(s, "heun-edm", "heun-edm", two_per_step=True),
        Spec(s, "ode-euler", "ode-euler"),
        Spec(s, "ode-heun", "ode-heun", two_per_step=True),
        Spec(s, "flow-euler", "flow-euler"),
        Spec(s, "flow-midpoint", "flow-midpoint", two_per_step=True),
        Spec(s, "flow-heun", "flow-heun", two_per_step=True),
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


def tune_bases() -> list[Spec]:
    """The deterministic samplers whose K times tune_timesteps fits at each NFE."""
    s = "scorelab"
    return [
        Spec(s, "dpm-solver++ o2", "dpm-solver++", (("order", 2),)),
        Spec(s, "dpm-solver++ o3", "dpm-solver++", (("order", 3),)),
        Spec(s, "unipc o2", "unipc", (("order", 2),)),
        Spec(s, "unipc o3", "unipc", (("order", 3),)),
    ]


def flow_defaults() -> list[Spec]:
    """The scorelab samplers of the flow section, on their default grids."""
    s = "scorelab"
    return [
        Spec(s, "flow-euler", "flow-euler"),
        Spec(s, "flow-midpoint", "flow-midpoint", two_per_step=True),
        Spec(s, "flow-heun", "flow-heun", two_per_step=True),
        Spec(s, "ddim (eta 0)", "ddim"),
        *tune_bases(),
        Spec(s, "heun-edm", "heun-edm", two_per_step=True),
    ]


def kd_specs() -> list[Spec]:
    """k-diffusion's samplers on Karras and exponential sigmas (none if it is not installed)."""
    if KD is None:
        return []
    k = "k-diffusion"
    bases = [
        Spec(k, "sample_dpmpp_2m", "sample_dpmpp_2m"),
        Spec(k, "sample_dpmpp_2m_sde", "sample_dpmpp_2m_sde", (("eta", 1.0),)),
        Spec(k, "sample_dpmpp_3m_sde", "sample_dpmpp_3m_sde", (("eta", 1.0),)),
        Spec(k, "sample_heun", "sample_heun", two_per_step=True),
        Spec(k, "sample_lms", "sample_lms"),
    ]
    return [
        replace(b, label=f"{b.label} [{grid}]", spacing=grid)
        for grid in ("karras", "exponential")
        for b in bases
    ]


def kd_adaptive_specs() -> list[Spec]:
    """sample_dpm_adaptive (order 3) at its default tolerances and at rtol = atol = 1e-3."""
    if KD is None:
        return []
    tight = (("rtol", 1e-3), ("atol", 1e-3))
    tols = (("default rtol 0.05, atol 0.0078", ()), ("rtol = atol = 1e-3", tight))
    return [
        Spec("k-diffusion", f"sample_dpm_adaptive ({name})", "sample_dpm_adaptive", opts)
        for name, opts in tols
    ]


def fm_specs() -> list[Spec]:
    """flow_matching's ODESolver methods on a uniform grid (none if it is not installed)."""
    if ODESolver is None:
        return []
    methods = (("euler", 1), ("midpoint", 2), ("heun3", 3), ("rk4", 4))
    return [Spec("flow_matching", f"{m} [uniform]", m, calls_per_step=c) for m, c in methods]


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
        self,
        problem: Problem,
        seeds: Sequence[int],
        peer_time: str,
        replicates: int,
        schedule: Any = None,
    ) -> None:
        self.problem = problem
        self.schedule = scorelab.make_schedule("linear") if schedule is None else schedule
        self.oracle = FastEps(problem.mixture, self.schedule)
        # x_T (N(0, I), the VP view at T) / x_scale is the native x_T: 1 on the DDPM schedule
        self.x_scale = float(self.schedule.input_scale(torch.tensor([float(self.schedule.T)])))
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
        return RUNNERS[spec.side](spec, self, x_T, nfe, seed)

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


@dataclass
class TuneInfo:
    """One tune_timesteps fit: the spec it made and what the fit reported."""

    spec: Spec
    nfe: int
    error: float
    baseline_error: float
    evaluations: int
    seconds: float


def tune_steps(tune: Bench, nfe: int, quick: bool) -> list[TuneInfo]:
    """Per tune base, the grid tune_timesteps fits at this NFE on the tuning seed's noise (its
    first 256 (quick: 128) x_T rows), with the exact oracle; labelled [tune-steps]."""
    out = []
    for base in tune_bases():
        start = time.perf_counter()
        fit = tune_timesteps(
            tune.oracle, (tune.problem.n, tune.problem.mixture.dim), tune.schedule,
            base.sampler, base.steps(nfe), n=128 if quick else 256,
            max_evals=100 if quick else 300, generator=torch.Generator().manual_seed(tune.seeds[0]),
            dtype=torch.float64, **dict(base.options),
        )  # fmt: skip
        grid = tuple(fit.timesteps.tolist())
        spec = replace(base, label=f"{base.label} [tune-steps]", timesteps=grid, nfes=(nfe,))
        seconds = time.perf_counter() - start
        out.append(TuneInfo(spec, nfe, fit.error, fit.baseline_error, fit.evaluations, seconds))
    return out


def adaptive_rows(bench: Bench) -> list[Row]:
    """The adaptive ode-rk45 at two tolerances (integer grid: t_min = 1) and k-diffusion's
    sample_dpm_adaptive; NFE as measured."""
    rows = []
    for tol in (1e-3, 1e-5):
        opts = (("rtol", tol), ("atol", tol))
        spec = Spec("scorelab", f"ode-rk45 (rtol = atol = {tol:g})", "ode-rk45", opts)
        rows.append(bench.run(spec, nfe=1000))
    rows += [bench.run(spec, nfe=1000) for spec in kd_adaptive_specs()]
    return rows


OVERHEAD_PAIRS: tuple[tuple[str, str], ...] = (  # DDPM schedule: (scorelab, peer) labels
    ("ddpm (beta_tilde)", "DDPM (fixed_small) [trailing]"),
    ("ddim (eta 0)", "DDIM [trailing]"),
    ("dpm-solver++ o2", "DPM++ 2M [linspace]"),
    ("dpm-solver++ o3", "DPM++ 3M [linspace]"),
    ("unipc o2", "UniPC-2 [linspace]"),
    ("unipc o3", "UniPC-3 [linspace]"),
    ("ode-euler", "Euler [trailing]"),
    ("heun-edm", "Heun [karras]"),
    ("dpm-solver++ o2", "sample_dpmpp_2m [karras]"),
    ("heun-edm", "sample_heun [karras]"),
)
FLOW_OVERHEAD_PAIRS: tuple[tuple[str, str], ...] = (  # the flow process
    ("flow-euler", "euler [uniform]"),
    ("flow-midpoint", "midpoint [uniform]"),
)


@dataclass
class Overhead:
    """Per-step overhead of a scorelab sampler and a peer's counterpart, microseconds."""

    problem: str
    batch: int
    pair: tuple[str, str]
    us: tuple[float, float]
    peer: str = "diffusers"


def measure_overhead(
    bench: Bench, specs: Sequence[Spec], pairs: Sequence[tuple[str, str]], nfe: int = 20,
    reps: int = 5,
) -> list[Overhead]:  # fmt: skip
    """Interleaved repeats of each pair at two batch sizes; the fastest repeat of each counts.
    Pairs with a peer that is not installed are left out."""
    by_label = {s.label: s for s in specs}
    pairs = [p for p in pairs if p[0] in by_label and p[1] in by_label]
    out = []
    for batch in (bench.problem.n, 16):
        x_T = bench.x_T(0)[:batch]
        for pair in pairs:
            best = [math.inf, math.inf]
            for _ in range(reps):
                for j, label in enumerate(pair):
                    r = bench._sample(by_label[label], x_T, nfe, 0)
                    best[j] = min(best[j], 1e6 * (r.wall - r.eps) / r.nfe)
            peer = by_label[pair[1]].side
            out.append(Overhead(bench.problem.name, batch, pair, (best[0], best[1]), peer))
    return out


def overhead_table(rows: list[Overhead]) -> str:
    lines = [
        "| problem | batch | scorelab sampler | µs/step | peer | peer sampler | µs/step | ratio |",
        "|---|---:|---|---:|---|---|---:|---:|",
    ]
    for o in rows:
        lines.append(
            f"| {o.problem} | {o.batch} | {o.pair[0]} | {o.us[0]:.0f} | {o.peer} | {o.pair[1]} "
            f"| {o.us[1]:.0f} | {o.us[0] / o.us[1]:.2f} |"
        )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- report


def fmt(v: float, digits: int = 4) -> str:
    if math.isnan(v) or math.isinf(v):
        return str(v)
    return f"{v:.{digits}f}" if abs(v) >= 10 ** -(digits - 1) or v == 0 else f"{v:.1e}"


PEERS: tuple[str, ...] = ("diffusers", "k-diffusion", "flow_matching")


def best_rows(rows: list[Row], floor: Floor) -> dict[str, dict[str, Row | None]]:
    """Per side: the in-race row with the lowest mean SW and the one with the lowest z."""
    out: dict[str, dict[str, Row | None]] = {}
    for side in ("scorelab", *PEERS):
        cands = [r for r in rows if r.spec.side == side and r.spec.in_race]
        cands = [r for r in cands if not math.isnan(r.mean("sw"))]
        out[side] = {
            "sw": min(cands, key=lambda r: r.mean("sw"), default=None),
            "z": min(cands, key=lambda r: (r.worst_z(floor)[0], r.mean("sw")), default=None),
        }
    return out


def race_table(bench: Bench, rows_by_nfe: dict[int, list[Row]]) -> str:
    """The markdown table of one problem, with scorelab's best against each peer's best."""
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
        for peer in PEERS:
            sl, df = best["scorelab"]["sw"], best[peer]["sw"]
            if sl is not None and df is not None:
                lines.append(
                    f"| {nfe} | **best SW** | **scorelab / {peer}: {sl.spec.label} / "
                    f"{df.spec.label}** | **ratio {sl.mean('sw') / df.mean('sw'):.3f}** "
                    f"| {sl.mean('sw') / f_sw:.2f} / {df.mean('sw') / f_sw:.2f} |||||"
                    f"| {sl.overhead_us():.0f} / {df.overhead_us():.0f} |"
                )
            sl, df = best["scorelab"]["z"], best[peer]["z"]
            if sl is not None and df is not None:
                lines.append(
                    f"| {nfe} | **best z** | **scorelab / {peer}: {sl.spec.label} / "
                    f"{df.spec.label}** || {sl.mean('sw') / f_sw:.2f} / "
                    f"{df.mean('sw') / f_sw:.2f} |||| {sl.worst_z(floor)[0]:.1f} / "
                    f"{df.worst_z(floor)[0]:.1f} || |"
                )
    return "\n".join(lines) + "\n"


def summary_table(benches: dict[str, tuple[Bench, dict[int, list[Row]]]]) -> str:
    """Per problem and NFE: each side's lowest-SW row as a multiple of the SW floor."""
    sides = ("scorelab", *PEERS)
    present = [s for s in sides if any(
        r.spec.side == s for _, by_nfe in benches.values() for rows in by_nfe.values()
        for r in rows
    )]  # fmt: skip
    lines = [
        "| problem | NFE | " + " | ".join(f"best {s} (SW / floor)" for s in present) + " |",
        "|---|---:|" + "---|" * len(present),
    ]
    for name, (bench, by_nfe) in benches.items():
        f_sw = bench.floor.mean("sw")
        for nfe, rows in by_nfe.items():
            best = best_rows(rows, bench.floor)
            cells = []
            for side in present:
                r = best[side]["sw"]
                cells.append("-" if r is None else f"{r.spec.label}: {r.mean('sw') / f_sw:.2f}")
            lines.append(f"| {name} | {nfe} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tune_table(infos: list[TuneInfo]) -> str:
    """What tune_timesteps reported for each fitted grid (on the tuning seed's noise)."""
    lines = [
        "| sampler | NFE | error (tuned) | error (default grid) | ratio | evaluations | s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for t in infos:
        ratio = t.error / t.baseline_error if t.baseline_error > 0 else math.nan
        lines.append(
            f"| {t.spec.label} | {t.nfe} | {t.error:.2e} | {t.baseline_error:.2e} "
            f"| {ratio:.3f} | {t.evaluations} | {t.seconds:.1f} |"
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


def adaptive_table(rows: list[Row], floor: Floor) -> str:
    lines = [
        "| side | adaptive setting | NFE (mean) | SW / floor | spread | dlogp | mode TV | z "
        "| wall ms |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        z, zm = r.worst_z(floor)
        lines.append(
            f"| {r.spec.side} | {r.spec.label} | {statistics.fmean(r.nfe):.1f} "
            f"| {r.mean('sw') / floor.mean('sw'):.2f} | {fmt(r.mean('spread'))} "
            f"| {fmt(r.mean('dlogp'))} | {fmt(r.mean('tv'))} | {z:.1f} {zm} "
            f"| {1e3 * statistics.fmean(r.wall):.0f} |"
        )
    return "\n".join(lines) + "\n"


Results = dict[str, tuple[Bench, dict[int, list[Row]]]]


def race_goal(results: Results, peers: Sequence[str], number: str, what: str) -> list[str]:
    """Goals `number` (SW) and `number`b (z): scorelab's best row against each peer's best at
    every NFE of every problem in results."""
    lines, z_lines, fails, z_fails = [], [], [], []
    for name, (bench, rows_by_nfe) in results.items():
        floor = bench.floor
        se = floor.sd("sw") / math.sqrt(len(bench.seeds))
        for nfe, rows in rows_by_nfe.items():
            best = best_rows(rows, floor)
            for peer in peers:
                sl, df = best["scorelab"]["sw"], best[peer]["sw"]
                zl, zd = best["scorelab"]["z"], best[peer]["z"]
                if None in (sl, df, zl, zd):
                    continue
                win = sl.mean("sw") < df.mean("sw")
                if not win:
                    fails.append(f"{name} NFE {nfe} vs {peer}")
                z_sl, z_df = zl.worst_z(floor)[0], zd.worst_z(floor)[0]
                verdict = "both at the floor" if max(z_sl, z_df) <= 2 else "lower"
                if z_sl >= z_df and max(z_sl, z_df) > 2:
                    verdict = "NOT lower"
                    z_fails.append(f"{name} NFE {nfe} vs {peer}")
                z_lines.append(
                    f"  - {name} NFE {nfe} vs {peer}: z {z_sl:.1f} ({zl.spec.label}) vs "
                    f"{z_df:.1f} ({zd.spec.label}): {verdict}"
                )
                tie = abs(sl.mean("sw") - df.mean("sw")) <= 2 * se
                lines.append(
                    f"  - {name} NFE {nfe} vs {peer}: SW {fmt(sl.mean('sw'))} ({sl.spec.label}) "
                    f"vs {fmt(df.mean('sw'))} ({df.spec.label}): "
                    f"{'lower' if win else 'NOT lower'}"
                    f"{', within 2 standard errors (a tie)' if tie else ''}"
                )
    if not lines:
        return []

    def verdict(failed: list[str]) -> str:
        return "**met**" if not failed else f"**not met** (not at: {', '.join(failed)})"

    who = ", ".join(peers)
    return [
        f"{number}. {what}: at every NFE the best scorelab row has a lower mean SW than the best "
        f"row of each peer ({who}): {verdict(fails)}",
        *lines,
        f"{number}b. The same race on all four metrics: scorelab's lowest worst-metric z below "
        f"each peer's at every NFE, or both at the floor: {verdict(z_fails)}",
        *z_lines,
    ]


def goals(results: Results, flow_results: Results, overheads: list[Overhead]) -> str:
    """The benchmark's goals, each with the numbers that decide it."""
    out = ["## Goals", ""]
    out += race_goal(results, ("diffusers", "k-diffusion"), "1", "DDPM schedule")
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
    for nfe, limit, number in ((10, 1.5, "3"), (5, 1.1, "3b")):
        if "mix-64d" not in results or nfe not in results["mix-64d"][1]:
            continue
        bench, rows_by_nfe = results["mix-64d"]
        row = best_rows(rows_by_nfe[nfe], bench.floor)["scorelab"]["sw"]
        if row is None:
            continue
        ratio = row.mean("sw") / bench.floor.mean("sw")
        text = (
            f"{number}. mix-64d, NFE {nfe}, scorelab's lowest-SW row ({row.spec.label}) within "
            f"{limit}x of the SW floor: **{'met' if ratio <= limit else 'not met'}**: "
            f"{ratio:.2f}x ({fmt(row.mean('sw'))} vs {fmt(bench.floor.mean('sw'))})"
        )
        if "mix-64d" in flow_results and nfe in flow_results["mix-64d"][1]:
            fb, f_rows = flow_results["mix-64d"]
            fr = best_rows(f_rows[nfe], fb.floor)["scorelab"]["sw"]
            if fr is not None:
                text += (
                    f"; on the flow process {fr.mean('sw') / fb.floor.mean('sw'):.2f}x "
                    f"({fr.spec.label})"
                )
        out.append(text)
    for number, peers, what in (
        ("4", ("diffusers", "k-diffusion"), "its diffusers or k-diffusion counterpart"),
        ("4b", ("flow_matching",), "flow_matching's on the flow process"),
    ):
        pairs = [o for o in overheads if o.peer in peers]
        if not pairs:
            continue
        worse = [o for o in pairs if o.us[0] >= o.us[1]]
        per_peer = "; ".join(
            f"{peer}: {sum(o.us[0] < o.us[1] for o in pairs if o.peer == peer)} of "
            f"{sum(o.peer == peer for o in pairs)}"
            for peer in peers
            if any(o.peer == peer for o in pairs)
        )
        out.append(
            f"{number}. Per-step overhead ((wall - eps time) / NFE, fastest of 5 interleaved "
            f"repeats at NFE 20) of each scorelab sampler below {what}: "
            f"**{'met' if not worse else 'not met'}** ({len(pairs) - len(worse)} of "
            f"{len(pairs)} pairs below ({per_peer}); ratio scorelab / peer "
            f"{min(o.us[0] / o.us[1] for o in pairs):.2f} to "
            f"{max(o.us[0] / o.us[1] for o in pairs):.2f}, see the overhead table)"
        )
    out += race_goal(flow_results, ("flow_matching",), "5", "flow process")
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
    kd = (
        "only k_diffusion/sampling.py is loaded (importlib, from the installed package, as a "
        "module of a stub package whose utils holds k-diffusion's one-line append_dims): its "
        "package __init__ imports torchvision, which is not installable next to this torch. "
        "Samplers get a denoiser D(x^, s) = x^ - s eps(x^ / sqrt(1 + s^2), t(s)) in its VE "
        "convention on the same DDPM schedule (s = sqrt((1 - alpha_bar) / alpha_bar), t(s) = "
        "the schedule's time of log-SNR -2 log s), x^_T = x_T sqrt(1 + s_max^2); [karras] = "
        "get_sigmas_karras(K, s_min, s_max, rho=7), [exponential] = get_sigmas_exponential, "
        "s_min and s_max the schedule's at t = 1 and t = T, cast to float64; the *_sde samplers "
        "run with eta = 1 and a BrownianTreeNoiseSampler seeded per seed; sample_heun makes "
        "2K - 1 calls; sample_dpm_adaptive (order 3) stops at s_min, as k-diffusion's does"
    )
    ours = (
        "every sampler on its default grid (steps K set so that the counted NFE hits the "
        "target); 'tuned' rows: ddpm, ddim, dpm-solver++ o2/o3 and heun-edm on the grid "
        "(spacing in uniform, quadratic, logsnr, karras; t_min default, 1, 2 or 5) with the "
        "lowest z on the tuning seed; '[tune-steps]' rows: dpm-solver++ o2/o3 and unipc o2/o3 "
        "on the grid scorelab.samplers.tuning.tune_timesteps fits per NFE on the tuning seed's "
        f"noise ({128 if args.quick else 256} x_T, {100 if args.quick else 300} evaluations at "
        "most), passed as sample(timesteps=); Langevin-type samplers only at NFE 50, out of "
        "the race"
    )
    flow = (
        "Flow() (x_t = (1 - t) x_0 + t eps, t in [1e-3, 1 - 1e-3]), the same problems, seeds, "
        "references and floors; scorelab: flow-euler, flow-midpoint, flow-heun, ddim, "
        "dpm-solver++ o2/o3, unipc o2/o3, heun-edm on their default grids and the tune-steps "
        "grids; flow_matching: ODESolver(velocity).sample(method=euler | midpoint | heun3 | rk4, "
        "1/2/3/4 calls per step, K = NFE // calls) on the uniform grid s = 1e-3..1 (its t = 0 "
        "is noise), v(x, s) = -u(x, 1 - s), u = GaussianMixture.velocity_fn(Flow()) (FastEps "
        "inside, checked), x_init = x_T / Flow().input_scale(T); scorelab's flow-euler and "
        "flow_matching's euler on one grid agree to 1e-6 (checked)"
    )
    where = {
        "sigma": "at the noise level the scheduler steps with (its sigmas; DDPM/DDIM: time k + 1)",
        "timestep": "at time k + 1 for the timestep k it hands the network",
    }[args.peer_time]
    version = diffusers.__version__ if diffusers is not None else "not installed"
    return (
        "# Sampler race on exact oracles: scorelab vs diffusers, k-diffusion and flow_matching\n\n"
        "Generated by `benchmarks/samplers.py`"
        f"{' --quick' if args.quick else ''}; see its docstring for the method.\n\n"
        f"- date {datetime.date.today().isoformat()}, runtime {runtime:.0f} s; torch "
        f"{torch.__version__}, diffusers {version}, k-diffusion {peer_version('k-diffusion')}, "
        f"flow_matching {peer_version('flow-matching')} (torchdiffeq "
        f"{peer_version('torchdiffeq')}), scorelab {scorelab.__version__}, python "
        f"{platform.python_version()}; CPU: {cpu_model()}, {torch.get_num_threads()} torch "
        "thread(s)\n"
        f"- seeds {', '.join(map(str, seeds))} (x_T, references, stochastic noise); grids tuned "
        f"on seed {tune}; floors from {args.replicates} replicate true-sample pairs per seed\n"
        "- DDPM section: DDPM linear schedule, beta 1e-4..0.02, T = 1000; diffusers timestep k "
        "= scorelab time k + 1 (alphas_cumprod checked to 1e-6)\n"
        f"- scorelab rows: {ours}\n"
        f"- diffusers options: {peer}\n"
        f"- diffusers' eps: the same oracle, {where}; scorelab runs in float64, diffusers' "
        "Euler/DPM steps cast the state to float32\n"
        f"- k-diffusion: {kd}\n"
        f"- flow section: {flow}\n"
        "- NFE: eps_fn calls, counted. Heun-type rows make 2K - 1 calls for K steps, so at an "
        "even target they use one fewer; pc makes K + (K - 1); flow_matching's heun3 and rk4 "
        "make 3K and 4K\n"
        "- SW: sliced Wasserstein-2 to true samples; spread: within-mode mean squared deviation "
        "/ true variance (1 exact); dlogp: mean log p(samples) - mean log p(true); mode TV: "
        "total variation of the mode frequencies; z: the worst metric's |row - floor| in "
        "standard errors of a seed-averaged row (SW and TV count only an excess); overhead: "
        "(wall - eps time) / NFE\n"
    )


def problem_heading(problem: Problem, seeds: Sequence[int], what: str) -> str:
    mix = problem.mixture
    return (
        f"## {problem.name}{what}: d = {mix.dim}, {mix.n_components} components, weights "
        f"{', '.join(f'{w:.2f}' for w in mix.weights.tolist())}; n = {problem.n} per run, "
        f"{len(seeds)} seed(s), SW with {problem.n_projections} projections\n\n"
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
    peers = {"diffusers": diffusers, "k-diffusion": KD, "flow-matching": ODESolver}
    missing = [name for name, mod in peers.items() if mod is None]
    if missing:
        print(
            f"not installed: {', '.join(missing)}: those peers are left out. "
            "For the comparison: pip install -e '.[bench]'",
            file=sys.stderr,
        )
    if diffusers is not None:
        ac = diffusers.DDPMScheduler(**DIFFUSERS_COMMON).alphas_cumprod.to(torch.float64)
        gap = float((ac - schedule.alpha_bar_table[1:]).abs().max())
        if gap > 1e-6:
            raise SystemExit(f"diffusers alphas_cumprod[k] != scorelab alpha_bar(k + 1): {gap}")

    sections: list[str] = []
    results: Results = {}
    flow_results: Results = {}
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
        fits: list[TuneInfo] = []
        for nfe in NFES:
            tuned = [w.tuned() for w in sweep_winners(swept, tune.floor, nfe).values()]
            fits += tune_steps(tune, nfe, args.quick)
            specs = [s for s in scorelab_defaults() if s.in_race or nfe == 50]
            specs += [s for s in tuned if s.side == "scorelab"]
            specs += [f.spec for f in fits if f.nfe == nfe]
            if diffusers is not None:
                specs += peer_standard() + [s for s in tuned if s.side == "diffusers"]
            specs += kd_specs()
            rows_by_nfe[nfe] = [bench.run(s, nfe) for s in specs]
            print(f"  {problem.name} NFE {nfe} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        results[problem.name] = (bench, rows_by_nfe)
        overheads += measure_overhead(
            bench,
            scorelab_defaults() + (peer_standard() if diffusers is not None else []) + kd_specs(),
            OVERHEAD_PAIRS,
        )
        sections.append(
            problem_heading(problem, seeds, "")
            + race_table(bench, rows_by_nfe)
            + "\nThe adaptive solvers (not in the race: their NFE is what the tolerance needs):"
            "\n\n"
            + adaptive_table(adaptive_rows(bench), bench.floor)
            + f"\n### {problem.name}: what each grid gave (tuning seed {tune_seed}; cells: SW / "
            "floor, spread, z; bold: the grid the 'tuned' row uses)\n\n"
            + sweep_table(swept, tune.floor, NFES)
            + f"\n### {problem.name}: the tune-steps grids (tune_timesteps on seed {tune_seed}'s "
            "noise: mean squared distance to a 200-step DPM-Solver++ 3 solve, per dimension)\n\n"
            + tune_table(fits)
            + f"\n({problem.name}: {time.perf_counter() - t0:.0f} s)\n"
        )
        print(sections[-1], flush=True)

    for problem in make_problems(args.quick):
        t0 = time.perf_counter()
        flow_sde = Flow()
        gap = check_oracle(problem, flow_sde)
        if gap > 1e-9:
            raise SystemExit(f"{problem.name}: the fast flow oracle differs by {gap}")
        bench = Bench(problem, seeds, args.peer_time, args.replicates, schedule=flow_sde)
        tune = Bench(problem, (tune_seed,), args.peer_time, args.replicates, schedule=flow_sde)
        if ODESolver is not None:
            gap = check_flow_peer(bench)
            if gap > 1e-6:
                raise SystemExit(f"{problem.name}: flow-euler and flow_matching's euler differ "
                                 f"by {gap}")  # fmt: skip
        rows_by_nfe = {}
        fits = []
        for nfe in NFES:
            fits += tune_steps(tune, nfe, args.quick)
            specs = flow_defaults() + [f.spec for f in fits if f.nfe == nfe] + fm_specs()
            rows_by_nfe[nfe] = [bench.run(s, nfe) for s in specs]
            print(f"  flow {problem.name} NFE {nfe} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)  # fmt: skip
        flow_results[problem.name] = (bench, rows_by_nfe)
        overheads += [
            replace(o, problem=f"{o.problem} (flow)")
            for o in measure_overhead(bench, flow_defaults() + fm_specs(), FLOW_OVERHEAD_PAIRS)
        ]
        sections.append(
            problem_heading(problem, seeds, " on the flow process")
            + race_table(bench, rows_by_nfe)
            + f"\n### {problem.name} on the flow process: the tune-steps grids (seed "
            f"{tune_seed}'s noise)\n\n"
            + tune_table(fits)
            + f"\n({problem.name}, flow: {time.perf_counter() - t0:.0f} s)\n"
        )
        print(sections[-1], flush=True)

    summary = (
        "## Summary: each side's lowest-SW row, SW / floor\n\n"
        + summary_table(results)
        + "\nOn the flow process:\n\n"
        + summary_table(flow_results)
    )
    sections.insert(0, summary)
    if overheads:
        sections.append(
            "## Per-step overhead: (wall - eps time) / NFE at NFE 20, fastest of 5 interleaved "
            "repeats, at the problem's batch and at batch 16\n\n" + overhead_table(overheads)
        )
        print(sections[-1])
    goal_text = goals(results, flow_results, overheads)
    print(goal_text)
    runtime = time.perf_counter() - started
    report = header(args, runtime, seeds, tune_seed) + "\n" + "\n".join(sections) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report + goal_text)
    print(f"runtime {runtime:.0f} s; wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
