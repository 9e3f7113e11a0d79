"""Score-matching objectives race: dsm, ism, ssm (1 and 4 projections) and tsm on exact mixtures.

What it measures
----------------
Every objective trains the same network (scorelab.nn.MLP, width 128, 3 residual blocks, eps
output, fed x~ = input_scale(t) x_t and log sigma_t; processes.parameterization.preconditioned)
from the same initial weights, on fresh samples of a Gaussian mixture whose noisy score is
known in closed form (scorelab.oracle), on the same SDE (VE, sigma 0.01..10 by default), with
Adam (lr 2e-3, batch 256) for the same CPU-time budget (time.process_time, one thread):

* mix-2d: 8 equal modes of std 0.15 on a radius-2 circle (scorelab.oracle.ring_mixture);
* mix-32d: 4 diagonal Gaussians in 32-D, weights 0.4/0.3/0.2/0.1, means of norm about 3,
  variances in [0.05, 0.5] (fixed seed).

Per row:
* score err: E_t E_{x_t} sigma_t^2 ||s_theta(x_t, t) - grad log p_t(x_t)||^2 with t uniform on
  [t_min, 1] (4000 points; the sigma^2 weighting makes it the eps error, finite at every t);
  rel: the same divided by E sigma_t^2 ||grad log p_t||^2, the error of s = 0;
* SW: sliced Wasserstein-2 between 2000 samples (ddim, eta = 0: the PF-ODE, 100 steps) and
  2000 true samples; floor: between two true sample sets; oracle: the same sampler with the
  exact eps, i.e. what is left when the score is perfect (the sampler's own error);
* steps/s: optimizer steps per CPU second, and the number of steps the budget bought.

tsm's target grad log p_0(x_0) is the mixture's exact clean score. ism computes the exact
divergence, one backward pass per dimension, so its steps/s falls roughly like 1/d.

Run
---
    .venv/bin/python benchmarks/objectives.py               # about 3-4 minutes on 2 cores
    .venv/bin/python benchmarks/objectives.py --budget 3    # a smoke test
Options: --budget SECONDS (CPU seconds per objective and problem, default 12), --sde vp|subvp|ve,
--out PATH (default benchmarks/results/objectives.md), --seed N.
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

from scorelab.evaluation import sliced_wasserstein
from scorelab.nn import MLP
from scorelab.objectives import score_matching_loss
from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.processes import as_eps_fn, make_sde, preconditioned, score_from_eps
from scorelab.samplers import sample

OBJECTIVES = [
    ("dsm", {}),
    ("ism", {}),
    ("ssm (1 proj)", {"probes": 1}),
    ("ssm (4 proj)", {"probes": 4}),
    ("tsm", {}),
]


def mixture_32d() -> GaussianMixture:
    g = torch.Generator().manual_seed(7)
    means = torch.randn(4, 32, generator=g, dtype=torch.float64)
    means = means / means.norm(dim=1, keepdim=True) * 3.0
    variances = 0.05 + 0.45 * torch.rand(4, 32, generator=g, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.4, 0.3, 0.2, 0.1]), means, variances)


def make_net(dim: int, sde, seed: int) -> MLP:
    lo, hi = sde.noise_label_range()
    torch.manual_seed(seed)
    return MLP(dim, 128, 3, time_scale=1000 / (hi - lo))


def train(objective: str, options: dict, mix: GaussianMixture, sde, budget: float, seed: int):
    net = make_net(mix.dim, sde, seed)
    eps_fn = as_eps_fn(preconditioned(net, sde), sde, "eps")
    score_fn = score_from_eps(eps_fn, sde)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed + 1)
    steps, start = 0, time.process_time()
    while time.process_time() - start < budget:
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
        steps += 1
    return net, eps_fn, steps, time.process_time() - start


def score_error(eps_fn, mix: GaussianMixture, sde, seed: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(seed + 2)
    x0, _ = mix.sample(4000, generator=g)
    t = sde.t_min + torch.rand(4000, generator=g, dtype=torch.float64) * (sde.T - sde.t_min)
    x_t = sde.marginal_sample(x0, t, generator=g)
    with torch.no_grad():
        eps = eps_fn(x_t.float(), t).double()
    exact = mix.eps_fn(sde)(x_t, t)
    err = float(((eps - exact) ** 2).sum(1).mean())
    return err, err / float((exact**2).sum(1).mean())


def sw_of(eps_fn, mix: GaussianMixture, sde, seed: int) -> float:
    x = sample(
        eps_fn, (2000, mix.dim), sde, "ddim", 100, generator=torch.Generator().manual_seed(seed + 3)
    ).x
    ref, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 4))
    if not torch.isfinite(x).all():
        return float("nan")
    return sliced_wasserstein(x.double(), ref)


def run(budget: float, sde_name: str, seed: int, log=print) -> str:
    torch.set_num_threads(1)
    sde = make_sde(sde_name, **({"sigma_max": 10.0} if sde_name == "ve" else {}))
    problems = [("mix-2d", ring_mixture()), ("mix-32d", mixture_32d())]
    lines = [
        "# Score-matching objectives on exact Gaussian mixtures",
        "",
        f"{datetime.date.today()}, {cpu_model()}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, 1 thread; SDE {sde.to_dict()}; "
        f"{budget:g} CPU s per objective and problem; seed {seed}. "
        "Command: `python benchmarks/objectives.py`.",
        "",
        "score err = E_t E sigma_t^2 ||s_theta - grad log p_t||^2 (t uniform on [t_min, 1]); "
        "rel = over the error of s = 0. SW: ddim (PF-ODE) 100 steps, 2000 samples.",
        "",
        "| problem | objective | steps | steps/s | score err | rel | SW | SW oracle | SW floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for pname, mix in problems:
        ref_a, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 5))
        ref_b, _ = mix.sample(2000, generator=torch.Generator().manual_seed(seed + 4))
        floor = sliced_wasserstein(ref_a, ref_b)
        oracle = sw_of(mix.eps_fn(sde), mix, sde, seed)
        for name, options in OBJECTIVES:
            objective = name.split()[0]
            net, eps_fn, steps, cpu = train(objective, options, mix, sde, budget, seed)
            net.eval()
            err, rel = score_error(eps_fn, mix, sde, seed)
            sw = sw_of(eps_fn, mix, sde, seed)
            row = (
                f"| {pname} | {name} | {steps} | {steps / cpu:.1f} | {err:.4g} | {rel:.3f} | "
                f"{sw:.4f} | {oracle:.4f} | {floor:.4f} |"
            )
            log(row)
            lines.append(row)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", type=float, default=12.0, help="CPU seconds per run (default 12)")
    p.add_argument("--sde", default="ve", choices=["vp", "subvp", "ve"], help="default: ve")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "objectives.md")
    args = p.parse_args(argv)
    table = run(args.budget, args.sde, args.seed, log=lambda s: print(s, file=sys.stderr))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
