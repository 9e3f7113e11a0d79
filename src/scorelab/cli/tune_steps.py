"""scorelab tune-steps: tune a deterministic sampler's time grid for K network calls on a run's
own model (samplers/tuning.py) and save it in the run, where `sample --spacing tuned` uses it."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scorelab.cli.args import nonneg_int, positive_int
from scorelab.errors import ScorelabError


def register(sub) -> None:
    from scorelab.samplers import SAMPLERS

    p = sub.add_parser(
        "tune-steps",
        help="tune a sampler's time grid for K network calls on a run",
        description="Choose the K sampling times that minimise a deterministic sampler's "
        "error on the run's own model: the mean squared distance, per dimension, between its "
        "samples and a fine reference solve of the same probability-flow ODE from the same "
        "noise (third-order DPM-Solver++, 200 log-SNR steps), searched by Nelder-Mead over "
        "the grid's log-SNR gaps and its last time from the sampler's default grid. The grid "
        "is saved in RUN/tuned_grids.json; `scorelab sample RUN --sampler S --steps K "
        "--spacing tuned` uses it.",
    )
    p.add_argument("run_dir", type=Path, help="run directory (or a diffusers DDPM folder)")
    p.add_argument("--nfe", type=positive_int, required=True, help="network calls per sample")
    p.add_argument(
        "--sampler",
        default="dpm-solver++",
        choices=list(SAMPLERS),
        help="a deterministic sampler (default: dpm-solver++)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a sampler option, repeatable (e.g. --opt order=3); the grid is saved for these",
    )
    p.add_argument(
        "--n", type=positive_int, default=256, help="noises the error is averaged over (256)"
    )
    p.add_argument(
        "--max-evals", type=positive_int, default=300, help="sampler runs of the search (300)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noises (default: 0)")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from scorelab.runs import load_run
    from scorelab.runs.diffusion import TUNED_GRIDS
    from scorelab.samplers import parse_options, validate_options

    options = parse_options(args.sampler, args.opt)
    validate_options(args.sampler, options)
    model = load_run(args.run_dir)
    if not hasattr(model, "tune_steps"):
        raise ScorelabError(f"{args.run_dir} is not a diffusion run: tune-steps tunes samplers")
    t0 = time.perf_counter()
    tuned = model.tune_steps(args.nfe, sampler=args.sampler, n=args.n, max_evals=args.max_evals,
                             seed=args.seed, **options)  # fmt: skip
    seconds = time.perf_counter() - t0
    if args.format == "json":
        print(json.dumps({**tuned.to_dict(), "seconds": seconds}))
        return 0
    ratio = tuned.error / tuned.baseline_error if tuned.baseline_error > 0 else 1.0
    grid = ", ".join(f"{t:.4g}" for t in tuned.timesteps.tolist())
    opts = "".join(f" --opt {k}={v}" for k, v in options.items())
    print(
        f"{args.sampler}, {tuned.steps} steps ({tuned.nfe} network calls): error per dimension "
        f"{tuned.baseline_error:.4g} on its {tuned.baseline_spacing} grid -> {tuned.error:.4g} "
        f"tuned ({ratio:.2f}x), {tuned.evaluations} evaluations on {args.n} noises, "
        f"{seconds:.1f}s\ngrid: {grid}\nsaved in {args.run_dir / TUNED_GRIDS}; sample "
        f"with: scorelab sample {args.run_dir} --sampler {args.sampler} --steps {tuned.steps} "
        f"--spacing tuned{opts} --out FILE"
    )
    return 0
