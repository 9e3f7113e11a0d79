"""Likelihood on an exact 2-D mixture: the VLB (three variances) and the PF-ODE NLL of trained
models against the true entropy.

What it measures
----------------
Data: the built-in ``ring`` dataset, which is ``scorelab.oracle.ring_mixture()`` (8 equal
Gaussians of std 0.15 on a radius-2 circle), so its density is known exactly. Two models are
trained with the same budget (steps, batch, width, schedule, seed) through ``scorelab.runs.train``:

* L_simple (eps prediction): evaluated with the fixed small (beta_tilde) and fixed large (beta)
  reverse variances; the network is the same, only Sigma differs;
* hybrid (learned variance, L_simple + 0.001 L_vlb, Nichol & Dhariwal 2021).

On held-out points (n_eval, drawn with another seed) every row gives the mean NLL in nats per
example in the data's own units (the normalizer's log|det| included), its standard error, and
the gap to the true NLL -log p(x) of the same points (paired, so the gap's standard error is
smaller than the NLL's). Rows:

* true NLL of the eval points, and the Monte Carlo entropy of the mixture (200k samples);
* oracle rows: the exact eps (closed form) in place of a network, so what is left is the VLB's
  own gap and the ODE solver's error; the ODE computes log p_{t0}(x) at t0 = 1e-3 T, and the
  row "true NLL at t0" gives -log p_{t0}(x) exactly, what a perfect model's ODE NLL is;
* VLB of the trained models (one x_t per step per example, all T = 1000 steps);
* ODE NLL (Dormand-Prince, rtol = atol = 1e-5, in rho = -log alpha_bar) with the exact trace
  and Hutchinson with 1 and 8 Rademacher probes; NFE = network evaluations per solve.

Goal: the trained model's ODE NLL within 0.05 nats of the true entropy per sample.

Settings: the ring models start from the ring preset (configs/ring.json) with this benchmark's
own budget on top (ring_configs: --steps, 50,000 points, batch 512, lr 3e-3); the digits
models (--only digits or both) from the digits preset (configs/digits.json: the U-Net, batch
64, lr 2e-3, warm-up 100, EMA 0.999) trained for --digits-budget seconds (digits_configs).

Run
---
    .venv/bin/python benchmarks/likelihood.py          # writes benchmarks/results/likelihood.md
    .venv/bin/python benchmarks/likelihood.py --quick  # fewer steps and points: a smoke test

Options: --steps (default 10000), --n-eval, --threads (default 1), --out PATH. About 15
minutes on one core of a loaded shared machine (training is 13 of them). At 4000 steps the
ODE gap was +0.36 nats: the goal needs the longer training.
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script

from scorelab.config import RunConfig, apply_overrides
from scorelab.likelihood import default_t0, ode_log_likelihood, vlb
from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.presets import config_file_overrides
from scorelab.runs import load_run, train


def _stats(x: torch.Tensor) -> tuple[float, float]:
    x = x.to(torch.float64)
    return float(x.mean()), float(x.std()) / math.sqrt(x.numel())


def _in_model_units(mixture: GaussianMixture, normalizer) -> GaussianMixture:
    shift = torch.tensor(normalizer.shift, dtype=torch.float64)
    s = normalizer.scale
    return GaussianMixture(mixture.weights, (mixture.means - shift) / s, mixture.variances / s**2)


# the two objectives each part compares: L_simple, and hybrid with a learned variance
HYBRID = {"objective": "hybrid", "model.variance": "learned"}


def ring_configs(steps: int) -> dict[str, RunConfig]:
    """The ring preset with the benchmark's budget: steps steps on 50,000 points, batch 512,
    lr 3e-3 (the preset leaves the default, 1e-2), warm-up 200, seed 0, an MLP of width 128
    and depth 3, the linear schedule with T = 1000 (the settings the recorded results were
    measured with, named here as the report states them), one checkpoint at the end."""
    base = apply_overrides(RunConfig(), {
        **config_file_overrides("ring"),
        "n_data": 50_000, "model.width": 128, "model.depth": 3,
        "schedule.name": "linear", "schedule.T": 1000,
        "train.steps": steps, "train.batch_size": 512, "train.lr": 3e-3, "train.warmup": 200,
        "train.seed": 0, "train.ckpt_every": steps, "train.log_every": 100,
    })  # fmt: skip
    return {"L_simple": base, "hybrid (learned)": apply_overrides(base, HYBRID)}


def digits_configs(data: str, seconds: float) -> dict[str, RunConfig]:
    """The digits preset on data, trained until seconds are spent (--max-seconds), with no
    checkpoints or sample grids on the way; the schedule pinned (linear, T = 1000)."""
    base = apply_overrides(RunConfig(), {
        **config_file_overrides("digits"),
        "data": data, "schedule.name": "linear", "schedule.T": 1000,
        "train.steps": 10**7, "train.max_seconds": seconds, "train.ckpt_every": 10**9,
        "train.sample_every": 0, "train.log_every": 100,
    })  # fmt: skip
    return {"L_simple": base, "hybrid": apply_overrides(base, HYBRID)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--only", choices=("ring", "digits", "both"), default="both", help="which data (both)"
    )
    parser.add_argument(
        "--digits-budget", type=float, default=300, help="digits: training seconds per model"
    )
    parser.add_argument("--n-digits", type=int, default=300, help="digits: held-out images")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "likelihood.md"
    )
    args = parser.parse_args(argv)
    args.command = " ".join(["benchmarks/likelihood.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        args.steps, args.n_eval = 300, 300
        args.digits_budget, args.n_digits = 20, 40
    torch.set_num_threads(args.threads)
    if args.only in ("digits", "both"):
        text = digits(args)
        out = args.out.with_name(args.out.stem + "_digits.md")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(text)
        if args.only == "digits":
            return 0
    start_all = time.perf_counter()
    mixture = ring_mixture()
    x_eval, _ = mixture.sample(args.n_eval, generator=torch.Generator().manual_seed(12345))
    true_nll = -mixture.log_prob(x_eval)
    entropy = mixture.entropy(200_000, generator=torch.Generator().manual_seed(7))
    d = mixture.dim

    rows: list[tuple] = []  # (name, nll tensor (n,), nfe or None, seconds)
    configs = ring_configs(args.steps)
    runs, train_seconds = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in configs.items():
            t0 = time.perf_counter()
            train(cfg, Path(tmp) / name.split()[0], progress=False, log=lambda s: None)
            train_seconds[name] = time.perf_counter() - t0
            runs[name] = load_run(Path(tmp) / name.split()[0])
            print(f"trained {name} in {train_seconds[name]:.0f}s", file=sys.stderr)

    run = runs["L_simple"]
    norm = run.normalizer
    log_det = d * math.log(norm.scale)
    z = norm.encode(x_eval).to(torch.float64)
    oracle = _in_model_units(mixture, norm)
    sched = run.schedule
    t0 = default_t0(sched)
    a0 = sched.alpha_bar(torch.tensor(t0, dtype=torch.float64))
    rows.append(("true NLL at t0 (exact)", -oracle.log_prob(z, a0) + log_det, None, 0.0))

    def timed(name, fn, nfe_of=None):
        t = time.perf_counter()
        nll, nfe = fn()
        rows.append((name, nll, nfe, time.perf_counter() - t))
        print(f"{name}: {float(nll.mean()):.4f} ({time.perf_counter() - t:.1f}s)", file=sys.stderr)

    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    n_vlb = min(args.n_eval, 1000)
    oracle_eps = oracle.eps_fn(sched)
    for variance, label in (("beta_tilde", "fixed small"), ("beta", "fixed large")):
        timed(
            f"oracle eps: VLB, {label}",
            lambda v=variance: (
                vlb(oracle_eps, z[:n_vlb], sched, variance=v, generator=gen()).total + log_det,
                None,
            ),
        )
    timed("oracle eps: ODE, exact trace", lambda: _ode(oracle_eps, z, sched, log_det))

    z32 = z.float()
    for variance, label in (("beta_tilde", "fixed small"), ("beta", "fixed large")):
        timed(
            f"L_simple: VLB, {label}",
            lambda v=variance: (
                vlb(run.eps_fn, z32[:n_vlb], sched, variance=v, generator=gen()).total.double()
                + log_det,
                None,
            ),
        )
    learned = runs["hybrid (learned)"]
    timed(
        "hybrid: VLB, learned",
        lambda: (
            vlb(
                learned.eps_fn, z32[:n_vlb], sched, variance=learned.variance, generator=gen()
            ).total.double()
            + log_det,
            None,
        ),
    )
    for name, r in (("L_simple", run), ("hybrid", learned)):
        timed(f"{name}: ODE, exact trace", lambda r=r: _ode(r.eps_fn, z32, sched, log_det))
    n_h8 = min(args.n_eval, 250)  # 8 vector-Jacobian products per NFE: fewer points
    for probes, zz in ((1, z32), (8, z32[:n_h8])):
        timed(
            f"L_simple: ODE, Hutchinson {probes}",
            lambda p=probes, zz=zz: _ode(
                run.eps_fn, zz, sched, log_det, divergence="hutchinson", probes=p
            ),
        )

    text = _table(rows, true_nll, entropy, args, train_seconds, d, time.perf_counter() - start_all)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def digits(args) -> str:
    """The same rows on scikit-learn's 8x8 digits (as 8-bit images): two U-Nets, L_simple and
    hybrid (learned variance), each trained for --digits-budget seconds on one half of the
    data; NLL of --n-digits images of the other half. The VLB is a discrete probability (the
    discretized decoder); the ODE bound is on uniformly dequantized data (its bin log-volume
    included), so both are in bits per dimension of the same 8-bit images."""
    import numpy as np

    from scorelab.data import load_images
    from scorelab.evaluation.nll import evaluate_nll
    from scorelab.reports.metrics import split_reference

    start_all = time.perf_counter()
    images = load_images("digits")
    ref, held, _, _ = split_reference(images.x, images.labels)
    # the digits' 17 grey levels as 8-bit values, the grid the discretized decoder expects
    to8 = lambda x: ((x.clamp(-1, 1) + 1) * 127.5).round()  # noqa: E731
    held = (to8(held[: args.n_digits]) / 127.5 - 1).float()
    d = held[0].numel()
    rows: list[tuple] = []  # (name, nll (n,) in nats, nfe, seconds)
    train_info = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "ref.npy"
        np.save(data, to8(ref[:, 0]).byte().numpy())
        configs = digits_configs(str(data), args.digits_budget)
        runs = {}
        for name, c in configs.items():
            result = train(c, Path(tmp) / name, progress=False, log=lambda m: None)
            train_info[name] = (result.step, result.seconds)
            runs[name] = load_run(Path(tmp) / name)
            print(f"digits: trained {name}: {result.step} steps", file=sys.stderr)

        def timed(name, fn):
            t = time.perf_counter()
            nll, nfe = fn()
            rows.append((name, nll.double(), nfe, time.perf_counter() - t))
            print(f"{name}: {float(nll.mean()) / (d * math.log(2)):.4f} bits/dim", file=sys.stderr)

        run, learned = runs["L_simple"], runs["hybrid"]
        gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        for variance, label in (("beta_tilde", "fixed small"), ("beta", "fixed large")):
            timed(
                f"L_simple: VLB, {label}",
                lambda v=variance: (
                    vlb(run.eps_fn, held, run.schedule, variance=v, decoder="discretized",
                        generator=gen()).total,
                    None,
                ),
            )  # fmt: skip

        for name, r, kw in (
            ("hybrid: VLB, learned", learned, {"method": "vlb"}),
            ("L_simple: ODE, Hutchinson 1", run, {"method": "ode", "divergence": "hutchinson"}),
            ("hybrid: ODE, Hutchinson 1", learned, {"method": "ode", "divergence": "hutchinson"}),
            ("L_simple: ODE, Hutchinson 8", run,
             {"method": "ode", "divergence": "hutchinson", "probes": 8, "x": held[:50]}),
            ("L_simple: ODE, exact trace", run, {"method": "ode", "x": held[:50]}),
        ):  # fmt: skip
            t = time.perf_counter()
            rep = evaluate_nll(r, kw.pop("x", held), **kw)
            rows.append((name, (rep.nll_nats, rep.stderr_nats, rep.n), rep.nfe,
                         time.perf_counter() - t))  # fmt: skip
            print(f"{name}: {rep.nll_bits_per_dim:.4f} bits/dim", file=sys.stderr)

    lines = [
        "# Likelihood on the 8x8 digits",
        "",
        f"{datetime.date.today()} · {cpu_model()} · torch {torch.__version__} · "
        f"python {platform.python_version()} · {args.threads} threads · total "
        f"{time.perf_counter() - start_all:.0f}s · `{args.command}`",
        "",
        f"Data: scikit-learn's digits as 8-bit images (17 grey levels, k·255/16 rounded), d = "
        f"{d}; training on the reference half ({len(ref)} images), NLL of {len(held)} held-out "
        "images (ODE exact trace and Hutchinson 8: the first 50). The digits preset: U-Net "
        "(32, 64 channels, one block per level, no attention), linear schedule T = 1000, "
        "batch 64, lr 2e-3, EMA 0.999; "
        f"**{args.digits_budget:g}s of training per model** (--max-seconds): "
        + ", ".join(f"{k} {v[0]} steps" for k, v in train_info.items())
        + ". VLB: a discrete probability (discretized Gaussian decoder at t = 1, all T terms, "
        "one x_t per term); ODE: dequantized, uniform noise in each bin, bin log-volume "
        "included, Dormand-Prince rtol = atol = 1e-5. Both are upper bounds on -log P(x) of "
        "the 8-bit images.",
        "",
        "| row | NLL (nats per image) | bits/dim | NFE | seconds |",
        "|---|---|---|---|---|",
    ]
    for name, nll, nfe, seconds in rows:
        if isinstance(nll, tuple):
            m, se, _ = nll
        else:
            m, se = _stats(nll)
        lines.append(
            f"| {name} | {m:.1f} ± {se:.1f} | {m / (d * math.log(2)):.3f} ± "
            f"{se / (d * math.log(2)):.3f} | {nfe if nfe is not None else '-'} | {seconds:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _ode(eps_fn, z, sched, log_det, **kw):
    res = ode_log_likelihood(
        eps_fn, z, sched, generator=torch.Generator().manual_seed(0), rtol=1e-5, atol=1e-5, **kw
    )
    return -res.log_prob.double() + log_det, res.nfe


def _table(rows, true_nll, entropy, args, train_seconds, d, total_seconds) -> str:
    n = true_nll.numel()
    tn, tse = _stats(true_nll)
    lines = [
        "# Likelihood on the exact ring mixture",
        "",
        f"{datetime.date.today()} · {cpu_model()} · torch {torch.__version__} · "
        f"python {platform.python_version()} · {args.threads} threads · "
        f"total {total_seconds:.0f}s · "
        f"`{args.command}`",
        "",
        f"Data: `ring` = `oracle.ring_mixture()` (d = {d}); {n} held-out points (VLB rows: the "
        f"first {min(n, 1000)}, Hutchinson 8: the first {min(n, 250)}). Training: "
        f"{args.steps} steps, batch 512, MLP width 128 depth 3, "
        "linear schedule T = 1000, lr 3e-3, seed 0, EMA weights; "
        + ", ".join(f"{k} {v:.0f}s" for k, v in train_seconds.items())
        + ". NLL in nats per example, data units; gap = NLL - true NLL of the same points "
        "(paired standard error). ODE: Dormand-Prince rtol = atol = 1e-5 from t0 = 1e-3 T.",
        "",
        f"True NLL of the eval points: **{tn:.4f} ± {tse:.4f}**; entropy of the mixture "
        f"(Monte Carlo, 200k samples): {entropy:.4f}.",
        "",
        "| row | NLL (nats) | bits/dim | gap to true NLL | NFE | seconds |",
        "|---|---|---|---|---|---|",
    ]
    goal = None
    for name, nll, nfe, seconds in rows:
        m, se = _stats(nll)
        gm, gse = _stats(nll - true_nll[: nll.numel()])
        lines.append(
            f"| {name} | {m:.4f} ± {se:.4f} | {m / (d * math.log(2)):.4f} | "
            f"{gm:+.4f} ± {gse:.4f} | {nfe if nfe is not None else '-'} | {seconds:.1f} |"
        )
        if name == "L_simple: ODE, exact trace":
            goal = (gm, gse)
    if goal is not None:
        ok = abs(goal[0]) <= 0.05
        ode_mean = float(rows[[r[0] for r in rows].index("L_simple: ODE, exact trace")][1].mean())
        lines += [
            "",
            f"Goal (ODE NLL within 0.05 nats of the true NLL): measured gap "
            f"{goal[0]:+.4f} ± {goal[1]:.4f} nats for the L_simple model, exact trace, on the "
            f"same points ({ode_mean - entropy:+.4f} against the Monte Carlo entropy): "
            f"{'met' if ok else 'NOT met'}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
