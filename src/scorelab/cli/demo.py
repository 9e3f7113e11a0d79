"""scorelab demo: the one-command tour on the ring of Gaussians."""

from __future__ import annotations

import argparse
from pathlib import Path

from scorelab.cli.args import nonneg_int, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="train on the ring of Gaussians, sample, and write pictures and metrics",
        description="The one-command tour: trains a DDPM on eight Gaussians on a ring, samples "
        "with Algorithm 2, and writes data-vs-samples, the denoising trajectory and the loss "
        "curve, and the sliced Wasserstein distance next to its data-vs-data floor.",
    )
    p.add_argument(
        "--out", type=Path, default=Path("runs/demo"), help="output folder (default: runs/demo)"
    )
    p.add_argument(
        "--steps", type=positive_int, default=3000, help="training steps (default: 3000)"
    )
    p.add_argument(
        "--n", type=positive_int, default=4000, help="samples to draw and compare (default: 4000)"
    )
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from scorelab.demo import run_demo

    run_demo(args.out, steps=args.steps, n=args.n, seed=args.seed, progress=not args.no_progress)
    return 0
