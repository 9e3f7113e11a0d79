"""Score-matching objectives race: dsm, ism, ssm and three tsm variants on exact mixtures.

What it measures
----------------
Every objective trains the same network (scorelab.nn.MLP, width 128, 3 residual blocks, eps
output, fed x~ = input_scale(t) x_t and log sigma_t; processes.parameterization.preconditioned)
from the same initial weights, on the same stream of fresh samples of a Gaussian mixture whose
noisy score is known in closed form (scorelab.oracle), on the same SDE (VE, sigma 0.01..10 by
default), with Adam (lr 2e-3, batch 256) for the same number of optimizer steps (--steps,
default 2000; --budget SECONDS gives every row the same CPU time instead):

* mix-2d: 8 equal modes of std 0.15 on a radius-2 circle (scorelab.oracle.ring_mixture);
* mix6-2d: 6 unequal diagonal Gaussians in 2-D, weights 0.3/0.2/0.15/0.15/0.1/0.1, standard
  deviations 0.3..1 (variances 0.1..1.0 per axis);
* mix-16d: 4 diagonal Gaussians in 16-D, weights 0.4/0.3/0.2/0.1, means of norm about 3,
  variances in [0.05, 0.5] (fixed seed).

Rows: dsm; ism (exact divergence, one backward pass per dimension, so its steps/s falls
roughly like 1/d); ssm with 1 and 4 Rademacher projections; and target score matching (tsm,
De Bortoli et al. 2024, "Target score matching"), whose target is the mixture's exact clean
score grad log p_0(x_0) / alpha_t, in three forms:
* "tsm (snr blend)": the target blended with dsm's by noise level (De Bortoli et al. 2024 use
  tsm at low noise and dsm at high noise), weight w_t = alpha_t^2 s^2 / (alpha_t^2 s^2 +
  sigma_t^2) on the tsm part (tsm_blend="snr", the variance-optimal weight for Gaussian data,
  docs/theory.md section 22), with s = data_std = fisher_scale(mix.score, x0) =
  sqrt(d / E||grad log p_0||^2) over 4096 data samples, computed once per problem and printed
  under the table;
* "tsm (switch)": w_t = 1 where alpha_t s > sigma_t, else 0 (same s);
* "tsm (plain, no blend)": w_t = 1 at every t (tsm_blend="none"), the original objective,
  whose target's variance grows like sigma_t^2 at high noise.

Columns:
* score err: E_t E_{x_t} sigma_t^2 ||s_theta(x_t, t) - grad log p_t(x_t)||^2 with t uniform on
  [t_min, T] (4000 points; the sigma^2 weighting makes it the eps error, finite at every t);
  rel: the same divided by E sigma_t^2 ||grad log p_t||^2, the error of s = 0;
* low-noise err ± se: the same sigma_t^2-weighted error with t uniform on the lowest 10% of
  [t_min, T] (4000 points, the same points for every row), ± its standard error std / sqrt(n);
  this is where tsm's target is meant to beat dsm's;
* SW: sliced Wasserstein-2 between 2000 samples (ddim, eta = 0: the PF-ODE, 100 steps) and
  2000 true samples; SW / floor: over the floor, the SW between two true sample sets (the
  oracle, the same sampler with the exact eps, is printed under the table);
* steps and steps/s: optimizer steps, and steps per CPU second (time.process_time, one thread).

Under the table a verdict per problem says whether "tsm (snr blend)" samples within 2x the SW
floor (and whether dsm does), and whether its low-noise error is below dsm's, in standard
errors of the paired difference (both rows are scored on the same points).

Run
---
    .venv/bin/python benchmarks/objectives.py               # about 7-9 minutes on 2 cores
    .venv/bin/python benchmarks/objectives.py --steps 100   # a smoke test
Options: --steps N (optimizer steps per objective and problem, default 2000), --budget SECONDS
(CPU seconds per objective and problem instead of --steps), --sde vp|subvp|ve, --out PATH
(default benchmarks/results/objectives.md), --seed N.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from torch import Tensor

from scorelab.evaluation import sliced_wasserstein
from scorelab.nn import MLP
from scorelab.objectives import fisher_scale, score_matching_loss
from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.processes import as_eps_fn, make_sde, preconditioned, score_from_eps
from scorelab.samplers import sample

DEFAULT_STEPS = 2000
TSM_SNR = "tsm (snr blend)"
# (row name, objective, options); "data_std" is filled in per problem with the Fisher scale
OBJECTIVES = [
    ("dsm", "dsm", {}),
    ("ism", "ism", {}),
    ("ssm (1 proj)", "ssm", {"probes": 1}),
    ("ssm (4 proj)", "ssm", {"probes": 4}),
    (TSM_SNR, "tsm", {"tsm_blend": "snr", "data_std": None}),
    ("tsm (switch)", "tsm", {"tsm_blend": "switch", "data_std": None}),
    ("tsm (plain, no blend)", "tsm", {"tsm_blend": "none"}),
]


def mixture_6() -> GaussianMixture:
    weights = torch.tensor([0.3, 0.2, 0.15, 0.15, 0.1, 0.1], dtype=torch.float64)
    means = torch.tensor(
        [[-3, 2], [2, 3], [0, -2], [-4, -2], [3, -1], [-1, 4]], dtype=torch.float64
    )
    variances = torch.tensor(
        [[0.3, 0.5], [0.2, 0.2], [1.0, 0.3], [0.4, 0.4], [0.1, 0.6], [0.5, 0.2]],
        dtype=torch.float64,
    )
    return GaussianMixture(weights, means, variances)


def mixture_16d() -> GaussianMixture:
    g = torch.Generator().manual_seed(7)
    means = torch.randn(4, 16, generator=g, dtype=torch.float64)
    means = means / means.norm(dim=1, keepdim=True) * 3.0
    variances = 0.05 + 0.45 * torch.rand(4, 16, generator=g, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1]), means, variances)


def make_net(dim: int, sde, seed: int) -> MLP:
    lo, hi = sde.noise_label_range()
    torch.manual_seed(seed)
    return MLP(dim, 128, 3, time_scale=1000 / (hi - lo))


def train(
    objective: str,
    options: dict,
    mix: GaussianMixture,
    sde,
    steps: int | None,
    budget: float | None,
    seed: int,
):
    """Adam for `steps` optimizer steps, or for `budget` CPU seconds when budget is given."""
    net = make_net(mix.dim, sde, seed)
    eps_fn = as_eps_fn(preconditioned(net, sde), sde, "eps")
    score_fn = score_from_eps(eps_fn, sde)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 1)
    done, start = 0, time.process_time()
    while time.process_time() - start < budget if budget is not None else done < (steps or 0):
        x0, _ = mix.sample(256, generator=g)
        loss = score_matching_loss(
            objective,
            score_fn,
            x0.float(),
            sde=sde,
            clean_score=mix.score,
            generator=g,
            **options,
        ).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
    return net, eps_fn, done, time.process_time() - start


def eps_errors(eps_fn, mix: GaussianMixture, sde, seed: int, t_hi: float) -> tuple[Tensor, float]:
    """Per-point sigma_t^2 ||s_theta - grad log p_t||^2 = ||eps_theta - eps||^2 for t uniform on
    [t_min, t_hi] (4000 points, fixed by seed), and the error of s = 0 on the same points."""
    g = torch.Generator().manual_seed(seed + 2)
    x0, _ = mix.sample(4000, generator=g)
    t = sde.t_min + torch.rand(4000, generator=g, dtype=torch.float64) * (t_hi - sde.t_min)
    x_t = sde.marginal_sample(x0, t, generator=g)
    with torch.no_grad():
        eps = eps_fn(x_t.float(), t).double()
    exact = mix.eps_fn(sde)(x_t, t)
    return ((eps - exact) ** 2).sum(1), float((exact**2).sum(1).mean())


def sw_of(eps_fn, mix: GaussianMixture, sde, seed: int) -> float:
    x = sample(
        eps_fn, (2000, mix.dim), sde, "ddim", 100, generator=torch.Generator().manual_seed(seed + 3)
    ).x
    ref, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 4))
    if not torch.isfinite(x).all():
        return float("nan")
    return sliced_wasserstein(x.double(), ref)


def verdict(pname: str, rows: dict, floor: float, oracle: float) -> str:
    """One line: does tsm (snr blend) sample within 2x the floor, and beat dsm at low noise?"""
    tsm, dsm = rows[TSM_SNR], rows["dsm"]

    def within(sw: float) -> str:
        return "yes" if sw <= 2 * floor else "no"

    diff = tsm["low"] - dsm["low"]  # paired: the same evaluation points
    mean, se = float(diff.mean()), float(diff.std() / diff.numel() ** 0.5)
    z = mean / se if se > 0 else float("inf")
    side = "below" if mean < 0 else "above"
    return (
        f"- {pname}: {TSM_SNR} samples at SW {tsm['sw'] / floor:.2f}x the floor "
        f"(within 2x: {within(tsm['sw'])}; dsm {dsm['sw'] / floor:.2f}x, within 2x: "
        f"{within(dsm['sw'])}; the exact score, same sampler: {oracle / floor:.2f}x). "
        f"Its low-noise error {tsm['low'].mean():.3g} is {side} dsm's "
        f"{dsm['low'].mean():.3g} by {abs(z):.1f} standard errors of the paired difference "
        f"({mean:+.3g} ± {se:.2g})."
    )


def run(steps: int | None, budget: float | None, sde_name: str, seed: int, log=print) -> str:
    torch.set_num_threads(1)
    sde = make_sde(sde_name, **({"sigma_max": 10.0} if sde_name == "ve" else {}))
    t_low = sde.t_min + 0.1 * (sde.T - sde.t_min)
    problems = [("mix-2d", ring_mixture()), ("mix6-2d", mixture_6()), ("mix-16d", mixture_16d())]
    length = f"{budget:g} CPU s" if budget is not None else f"{steps} optimizer steps"
    flag = f" --budget {budget:g}" if budget is not None else f" --steps {steps}"
    lines = [
        "# Score-matching objectives on exact Gaussian mixtures",
        "",
        f"{datetime.date.today()}, {cpu_model()}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, 1 thread; SDE {sde.to_dict()}; "
        f"{length} per objective and problem (same network, same initial weights, same data "
        f"stream); seed {seed}. Command: `python benchmarks/objectives.py{flag}`.",
        "",
        "score err = E_t E sigma_t^2 ||s_theta - grad log p_t||^2 (t uniform on [t_min, T]); "
        "rel = over the error of s = 0; low-noise err: the same with t uniform on the lowest "
        f"10% of [t_min, T] (t <= {t_low:.4g}), ± its standard error (4000 points). "
        "SW: ddim (PF-ODE) 100 steps, 2000 samples; SW / floor: over the SW of two true "
        "sample sets. tsm: De Bortoli et al. 2024; snr blend w_t = alpha_t^2 s^2 / "
        "(alpha_t^2 s^2 + sigma_t^2), s = fisher_scale over 4096 data samples.",
        "",
        "| problem | objective | steps | steps/s | score err | rel | low-noise err ± se | SW "
        "| SW / floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes, verdicts = [], []
    for pname, mix in problems:
        ref_a, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 5))
        ref_b, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 4))
        floor = sliced_wasserstein(ref_a, ref_b)
        oracle = sw_of(mix.eps_fn(sde), mix, sde, seed)
        x_fisher, _ = mix.sample(4096, generator=torch.Generator().manual_seed(seed + 6))
        data_std = fisher_scale(mix.score, x_fisher)
        note = (
            f"- {pname}: SW floor {floor:.4f}, oracle {oracle:.4f} ({oracle / floor:.2f}x the "
            f"floor); tsm data_std = fisher_scale = {data_std:.4f}."
        )
        log(note)
        notes.append(note)
        rows = {}
        for name, objective, options in OBJECTIVES:
            opts = {k: (data_std if k == "data_std" else v) for k, v in options.items()}
            wall = time.perf_counter()
            net, eps_fn, done, cpu = train(objective, opts, mix, sde, steps, budget, seed)
            net.eval()
            all_err, zero_err = eps_errors(eps_fn, mix, sde, seed, sde.T)
            low, _ = eps_errors(eps_fn, mix, sde, seed, t_low)
            err = float(all_err.mean())
            sw = sw_of(eps_fn, mix, sde, seed)
            rows[name] = {"sw": sw, "low": low}
            low_se = float(low.std() / low.numel() ** 0.5)
            row = (
                f"| {pname} | {name} | {done} | {done / cpu:.1f} | {err:.4g} | "
                f"{err / zero_err:.3f} | {float(low.mean()):.3g} ± {low_se:.2g} | {sw:.4f} | "
                f"{sw / floor:.2f} |"
            )
            log(f"{row}  ({time.perf_counter() - wall:.0f} s wall)")
            lines.append(row)
        verdicts.append(verdict(pname, rows, floor, oracle))
        log(verdicts[-1])
    lines += ["", "Per problem:", "", *notes, "", "Verdict (tsm with the snr blend):", ""]
    lines += verdicts
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"optimizer steps per run (default {DEFAULT_STEPS})",
    )
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="CPU seconds per run instead of a fixed number of steps",
    )
    p.add_argument("--sde", default="ve", choices=["vp", "subvp", "ve"], help="default: ve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "objectives.md")
    args = p.parse_args(argv)
    if args.budget is None and args.steps < 1:
        p.error("--steps must be >= 1")
    table = run(
        args.steps, args.budget, args.sde, args.seed, log=lambda s: print(s, file=sys.stderr)
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
