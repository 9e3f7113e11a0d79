"""scorelab compare: a side-by-side HTML and markdown report of runs on the same data."""

from __future__ import annotations

import argparse
from pathlib import Path

from scorelab.cli.args import nonneg_int, positive_int


def run(args: argparse.Namespace) -> int:
    from scorelab.reports.compare import compare_runs

    paths = compare_runs(
        args.run_dirs,
        args.out,
        n=args.n,
        n_nll=args.n_nll,
        steps=args.steps,
        k=args.k,
        seed=args.seed,
        data=args.data,
        log=print,
    )
    print(f"wrote {' and '.join(map(str, paths))}")
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="a side-by-side report of runs on the same data (HTML and markdown)",
        description="Load each run, draw --n samples (diffusion: DDIM with --steps; VAE: "
        "decoded from the prior), and write OUT/index.html (self-contained, images embedded) "
        "and OUT/report.md: sample pictures side by side; FD, KID, precision/recall (images) "
        "or precision/recall, SWD, energy, MMD (vectors), each with its data floor; NLL bounds "
        "(diffusion: VLB or ODE on vectors; VAE: ELBO and IWAE); sampling time and NFE; "
        "training time; parameters; and for VAE runs the aggregate-posterior diagnostic.",
    )
    p.add_argument("run_dirs", type=Path, nargs="+", help="run directories to compare")
    p.add_argument("--out", type=Path, required=True, help="report folder to write")
    p.add_argument(
        "--n", type=positive_int, default=500, help="samples per run for metrics (default: 500)"
    )
    p.add_argument(
        "--n-nll",
        type=nonneg_int,
        default=100,
        help="examples for the NLL bounds; 0 skips them (default: 100)",
    )
    p.add_argument(
        "--steps", type=positive_int, default=50, help="diffusion: DDIM steps (default: 50)"
    )
    p.add_argument("--k", type=positive_int, default=16, help="vae: IWAE samples (default: 16)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default: 0)")
    p.add_argument(
        "--data",
        help="the data of runs that record none (a diffusers folder): a data set name or path",
    )
    p.set_defaults(handler=run)
