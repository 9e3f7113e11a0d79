"""scorelab eval: a run's likelihood (--nll) and sample metrics (--metrics), each metric
with its data-vs-data floor."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scorelab.cli.args import nonneg_int, positive_float, positive_int
from scorelab.errors import ScorelabError


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run: likelihood (--nll vlb|ode) or sample-quality metrics (--metrics)",
        description="--nll: the NLL in nats per example and bits per dimension, mean with its "
        "standard error, in the data's own units (the run's normalization is accounted for). "
        "vlb: the variational bound over all T steps (Ho et al. 2020), and a plot of its "
        "per-step terms; ode: the exact likelihood through the probability-flow ODE (Song et "
        "al. 2021), at the stated solver tolerances, with its NFE. Without --nll: draw --n "
        f"samples and compare them with the run's data: {_metric_spaces()}; each metric "
        "beside the value of held-out data against the same reference (the floor).",
    )
    p.add_argument("run_dir", type=Path, help="run directory written by `scorelab train`")
    p.add_argument(
        "--nll",
        default=None,
        choices=["vlb", "ode", "elbo", "iwae"],
        help="which likelihood: vlb or ode for diffusion runs, elbo or iwae (--k samples) "
        "for vae runs",
    )
    p.add_argument(
        "--k", type=positive_int, default=64, help="iwae: importance samples (default: 64)"
    )
    p.add_argument(
        "--divergence",
        choices=["exact", "hutchinson"],
        default="exact",
        help="ode: exact trace (autograd, low dimension) or Hutchinson (default: exact)",
    )
    p.add_argument(
        "--probes",
        type=positive_int,
        default=1,
        help="ode, hutchinson: Rademacher probes per trajectory (default: 1)",
    )
    p.add_argument("--rtol", type=positive_float, default=1e-5, help="ode: rtol (default: 1e-5)")
    p.add_argument("--atol", type=positive_float, default=1e-5, help="ode: atol (default: 1e-5)")
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="vlb: where to write the per-step plot (default: RUN_DIR/vlb_terms.png)",
    )
    p.add_argument(
        "--weights",
        default="ema",
        choices=["ema", "raw"],
        help="which weights to evaluate (default: ema)",
    )
    _add_eval_metrics_args(p)
    p.set_defaults(handler=run)


def _add_eval_metrics_args(p: argparse.ArgumentParser) -> None:
    from scorelab.evaluation.registry import METRICS, default_metrics
    from scorelab.samplers import SAMPLERS, SPACINGS

    listing = "; ".join(
        f"{name}{_gives(spec.name, spec.keys)} ({spec.summary}; {spec.paper})"
        for name, spec in METRICS.items()
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from: {listing} "
        f"(default without --nll: {','.join(default_metrics())})",
    )
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="metrics: samples to draw and compare (default: 1000); --nll: examples to "
        "evaluate (default: 1000 for a dataset name, all rows of a .npy)",
    )
    p.add_argument(
        "--format", choices=["text", "json"], default="text", help="output format (default: text)"
    )
    p.add_argument(
        "--data",
        default=None,
        help="reference data (metrics) or the data to score (--nll) instead of fresh data from "
        "the run's own dataset: a dataset name, folder or .npy, in the training data's units",
    )
    p.add_argument(
        "--samples",
        type=Path,
        default=None,
        help="score these samples (.npy as written by `scorelab sample`) instead of drawing new",
    )
    p.add_argument(
        "--seed",
        type=nonneg_int,
        default=None,
        help="seed of the samples' noise (metrics, default 0), or of the data drawn by name, "
        "the VLB's x_t and the probes (--nll, default 1)",
    )
    p.add_argument(
        "--sampler", default="ddim", choices=list(SAMPLERS), help="sampler (default: ddim)"
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="metrics: sampling steps (default: 100, or the run's T if smaller)",
    )
    p.add_argument(
        "--spacing",
        default=None,
        choices=[*SPACINGS, "tuned"],
        help="metrics: the sampler's time grid (default: its own; tuned: the grid `scorelab "
        "tune-steps` saved in the run)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metrics: a sampler option, repeatable (e.g. --opt order=3)",
    )
    p.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="fid: a local Inception-v3 weights file for torch-fidelity (never downloaded)",
    )


def _gives(name: str, keys: tuple[str, ...]) -> str:
    """' gives precision and recall' where a metric's results are named otherwise."""
    return "" if keys == (name,) else " gives " + " and ".join(keys)


def _metric_spaces() -> str:
    """'fd/kid/pr in the features of ..., swd/energy/mmd in data space, ...' (the registry's)."""
    from scorelab.evaluation.registry import METRICS, SPACES

    groups = {
        space: "/".join(n for n, spec in METRICS.items() if spec.space == space) for space in SPACES
    }
    return ", ".join(f"{names} {SPACES[space]}" for space, names in groups.items() if names)


def _run_eval_metrics(args: argparse.Namespace) -> int:
    from scorelab.data import load_images, load_npy
    from scorelab.evaluation.registry import default_metrics
    from scorelab.reports.metrics import evaluate_metrics, format_report, parse_metrics
    from scorelab.runs import is_image, load_run

    metrics = parse_metrics(args.metrics or default_metrics())
    args.n = 1000 if args.n is None else args.n
    args.seed = 0 if args.seed is None else args.seed
    run = load_run(args.run_dir, weights=args.weights)
    if args.steps is None and args.spacing != "tuned":  # a diffusion run's DDIM steps (a VAE
        args.steps = run.preview(100)[0].get("steps")  # decodes in one: None); tuned: its own
    samples = None
    if args.samples is not None:
        if is_image(run.config):
            samples = load_images(str(args.samples)).x
        else:
            samples = load_npy(args.samples)
    log = (lambda message: print(message, file=sys.stderr)) if args.format == "json" else print
    results = evaluate_metrics(
        run,
        metrics,
        args.n,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        data=args.data,
        samples=samples,
        inception_weights=args.inception_weights,
        log=log,
        sampling=_sampling(args),
    )
    if args.format == "json":
        print(json.dumps(results))
    else:
        print(format_report(results))
    return 0


def run(args: argparse.Namespace) -> int:
    """--nll: the likelihood; otherwise the sample-quality metrics."""
    if args.nll is None:
        return _run_eval_metrics(args)
    if args.metrics is not None:
        raise ScorelabError("give --nll or --metrics, not both (run eval once for each)")
    return _run_eval_nll(args)


def _run_eval_nll(args: argparse.Namespace) -> int:
    from scorelab.build import check_has_data
    from scorelab.data import DATASETS, check_array, load_dataset, load_images
    from scorelab.evaluation import vlb_breakdown
    from scorelab.runs import is_image, kind_of, load_run

    args.seed = 1 if args.seed is None else args.seed
    run = load_run(args.run_dir, weights=args.weights)
    name = run.config.data if args.data is None else args.data
    if name is None:
        check_has_data(run.config)
    if is_image(run.config):
        data = load_images(name, run.config.model.image_size, data_dir=run.config.data_dir).x
        data = data if args.n is None else data[: args.n]
    elif name in DATASETS:
        data = load_dataset(name, args.n or 1000, seed=args.seed)
    else:
        data = load_dataset(name)
        if args.n is not None:
            data = data[: args.n]
    data = data if data.ndim == 4 else check_array(data, name)
    # the run's kind checks that it offers --nll and takes the options it uses (VAE: k)
    [report] = kind_of(run.config).nll(
        run,
        data,
        methods=[args.nll],
        seed=args.seed,
        k=args.k,
        divergence=args.divergence,
        probes=args.probes,
        rtol=args.rtol,
        atol=args.atol,
    )
    if "decoder" in report.settings:  # a VAE's bound
        return _print_vae_nll(args, report, name)
    out = report.to_dict()
    if args.nll == "vlb":
        plot = args.plot or args.run_dir / "vlb_terms.png"
        try:
            vlb_breakdown(report.per_t_nats, plot, f"VLB per step: {name}, {report.n} examples")
        except OSError as e:
            raise ScorelabError(f"cannot write {plot}: {e.strerror or e}") from None
        out["plot"] = str(plot)
    if args.format == "json":
        print(json.dumps(out))
        return 0
    extra = f", {report.nfe} NFE" if report.nfe is not None else ""
    print(
        f"NLL ({args.nll}, {report.settings['variance']} variance) on {name}: "
        f"{report.nll_nats:.4f} ± {report.stderr_nats:.4f} nats/example, "
        f"{report.nll_bits_per_dim:.4f} ± {report.stderr_bits_per_dim:.4f} bits/dim "
        f"(n={report.n}, d={report.dim}, data units{extra}, {report.seconds:.1f}s)"
    )
    if "plot" in out:
        print(f"wrote the per-step VLB terms to {out['plot']}")
    return 0


def _print_vae_nll(args: argparse.Namespace, report, name: str) -> int:
    out = report.to_dict()
    if args.format == "json":
        print(json.dumps(out))
        return 0
    k = f", k={report.settings['k']}" if "k" in report.settings else ""
    print(
        f"NLL bound ({args.nll}{k}, {report.settings['decoder']} decoder, "
        f"{report.settings['likelihood']}) on {name}: "
        f"{report.nll_nats:.4f} ± {report.stderr_nats:.4f} nats/example, "
        f"{report.nll_bits_per_dim:.4f} ± {report.stderr_bits_per_dim:.4f} bits/dim "
        f"(n={report.n}, d={report.dim}, data units, {report.seconds:.1f}s)"
    )
    return 0


def _sampling(args: argparse.Namespace) -> dict:
    """--spacing and --opt KEY=VALUE as run.sample's options (checked against the sampler)."""
    from scorelab.samplers import parse_options, validate_options

    options = parse_options(args.sampler, args.opt)
    validate_options(args.sampler, options)
    return {**options, **({"spacing": args.spacing} if args.spacing else {})}
