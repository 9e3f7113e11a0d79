"""scorelab sample: draw samples from a run with any registered sampler, its options
(--opt KEY=VALUE, checked against the sampler's registry entry), guidance and pictures."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scorelab.cli.args import float_list, nonneg_float, nonneg_int, positive_int, show
from scorelab.errors import ScorelabError


def register(sub) -> None:
    from scorelab.samplers import REGISTRY, SAMPLERS, SPACINGS

    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Sample from a run's EMA weights; .npy gets the samples in the data's own "
        "units, .png a scatter plot of samples against the data.",
    )
    p.add_argument("run_dir", type=Path, help="run directory written by `scorelab train`")
    p.add_argument("--n", type=positive_int, default=None, help="number of samples (default: 2000)")
    p.add_argument("--out", type=Path, required=True, help="FILE.npy or FILE.png")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the noise (default: 0)")
    p.add_argument(
        "--sampler",
        default=None,
        choices=list(SAMPLERS),
        help="sampler (default: ddpm, over every step of the schedule for vectors and 50 "
        "respaced steps for images; `scorelab samplers` lists them)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="sampling steps, i.e. grid intervals (default: T, or 50 for an image run with the "
        "default sampler; fewer respace the grid)",
    )
    p.add_argument(
        "--spacing",
        default=None,
        choices=[*SPACINGS, "tuned"],
        help="time grid (default: the sampler's own, see `scorelab samplers`); tuned: the grid "
        "`scorelab tune-steps` saved in the run for this sampler, --steps and options",
    )
    listed = "; ".join(
        f"{name}: {', '.join(spec.cli_options)}"
        for name, spec in REGISTRY.items()
        if spec.cli_options
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a sampler option, repeatable, e.g. --sampler pc --opt snr=0.2 --opt "
        "n_corrector=2 (`scorelab samplers` lists every sampler's options with their types, "
        f"defaults and ranges). The options: {listed}",
    )
    for key in ("variance", "eta", "order", "churn"):  # shortcuts of --opt KEY=VALUE
        _add_option_flag(p, key)
    p.add_argument(
        "--weights",
        default="ema",
        choices=["ema", "raw"],
        help="which weights to sample with (default: ema)",
    )
    p.add_argument(
        "--latents",
        default=None,
        choices=["prior", "aggregate"],
        help="vae runs: decode z from the prior N(0, I) or from the aggregate posterior q(z) "
        "of 2000 training examples (default: prior)",
    )
    _add_guidance_args(p)
    p.set_defaults(handler=run)


_OPTION_FLAG = "sampler_option_"  # the dest prefix of the shortcut flags of --opt


def _add_option_flag(p: argparse.ArgumentParser, key: str) -> None:
    """--KEY VALUE, the same as --opt KEY=VALUE; its type, choices and help from the registry."""
    from scorelab.samplers import REGISTRY

    takers = {n: s.options[key] for n, s in REGISTRY.items() if key in s.options}
    takers = {n: o for n, o in takers.items() if o.cli}
    if not takers:
        return
    first = next(iter(takers.values()))
    choices = list(dict.fromkeys(c for o in takers.values() for c in o.choices or ()))
    p.add_argument(
        f"--{key}",
        dest=_OPTION_FLAG + key,
        metavar=None if first.choices else key.upper(),
        type=first.type,
        default=None,
        choices=choices or None,
        help=f"{', '.join(takers)}: {first.help} (default: {show(first.default)}); "
        f"the same as --opt {key}=VALUE",
    )


def _add_guidance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class",
        dest="class_",
        type=nonneg_int,
        default=None,
        help="sample this class: with a conditional run alone, its conditional model; with "
        "--classifier, classifier guidance; with --cfg, classifier-free guidance",
    )
    p.add_argument(
        "--classifier",
        type=Path,
        default=None,
        help="classifier guidance with this noise-aware classifier (`scorelab "
        "train-classifier`), on the same data and schedule as the run",
    )
    p.add_argument(
        "--scale",
        type=nonneg_float,
        default=1.0,
        help="classifier guidance scale s: score + s grad log p(y | x_t) (default: 1)",
    )
    p.add_argument(
        "--cfg",
        type=nonneg_float,
        default=None,
        help="classifier-free guidance weight w: (1 + w) eps(x, y) - w eps(x, null); needs a "
        "run trained with --cond-drop > 0; 0 is plain conditional sampling",
    )
    p.add_argument(
        "--sweep-classes",
        action="store_true",
        help="sample every class at each of --scales (classifier scales with --classifier, "
        "else CFG weights) and write a grid (images) or a panel per scale (2-D) to --out "
        "(.png); --n is then the samples per class and scale (default: 8 images, 200 points)",
    )
    p.add_argument(
        "--scales",
        type=float_list,
        default=[0.0, 1.0, 3.0],
        help="the scales of --sweep-classes (default: 0,1,3)",
    )


def run(args: argparse.Namespace) -> int:
    from scorelab.build import build_data
    from scorelab.evaluation import scatter_vs_data
    from scorelab.files import atomic_save_npy
    from scorelab.runs import VAERun, is_image, load_run

    suffix = args.out.suffix.lower()
    run = load_run(args.run_dir, weights=args.weights)
    if args.sampler is None:  # the run's own default (runs/diffusion.py: Run.default_sampling)
        default = run.default_sampling()
        args.sampler = default["sampler"]
        args.steps = default["steps"] if args.steps is None else args.steps
    args.vae_options = {}
    if args.latents is not None:
        if not isinstance(run, VAERun):
            raise ScorelabError("--latents applies to VAE runs only")
        args.vae_options = {"latents": args.latents}
    if args.sweep_classes:
        return _sample_sweep(args, run)
    if args.n is None:
        args.n = 2000
    if args.class_ is None and (args.cfg is not None or args.classifier is not None):
        raise ScorelabError("--cfg and --classifier need --class (or --sweep-classes)")
    if is_image(run.config):
        return _sample_images(args, run)
    if suffix not in (".npy", ".png"):
        raise ScorelabError(f"--out must end in .npy or .png, got {args.out}")
    t0 = time.perf_counter()
    x, result = run.sample(
        args.n,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        spacing=args.spacing,
        **_guidance(args),
        **_sampler_options(args),
        **args.vae_options,
    )
    seconds = time.perf_counter() - t0
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            atomic_save_npy(args.out, x.numpy())
        else:
            data = build_data(run.config)
            how = "VAE decoder" if isinstance(run, VAERun) else args.sampler
            scatter_vs_data(
                x, data[: args.n], args.out, f"{run.config.data}: {how}, {result.nfe} NFE"
            )
    except OSError as e:
        raise ScorelabError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(f"wrote {args.n} samples to {args.out} ({result.nfe} NFE, {seconds:.2f}s)")
    return 0


def _sample_images(args: argparse.Namespace, run) -> int:
    """Image runs: .png a grid, .gif the denoising trajectory (and a strip), .npy uint8."""
    from scorelab.data.images import to_uint8
    from scorelab.evaluation.images import (
        save_image_grid,
        save_trajectory_gif,
        save_trajectory_strip,
    )
    from scorelab.files import atomic_save_npy

    suffix = args.out.suffix.lower()
    if suffix not in (".npy", ".png", ".gif"):
        raise ScorelabError(
            f"--out must end in .npy, .png or .gif for an image run, got {args.out}"
        )
    import torch

    from scorelab.reports.metrics import sampling_batch

    # a GIF records one trajectory; VAE latents are one array: one batch. Else batches of
    # sampling_batch images, seeded like eval's (seed + images drawn before), which on a CPU
    # sample 28x28 images 1.9x faster per image than one batch of 1000
    whole = suffix == ".gif" or bool(args.vae_options)
    batch = args.n if whole else sampling_batch(run.shape)
    t0 = time.perf_counter()
    parts = []
    for start in range(0, args.n, batch):
        x, result = run.sample(
            min(batch, args.n - start),
            seed=args.seed + start,
            sampler=args.sampler,
            steps=args.steps,
            spacing=args.spacing,
            record_trajectory=suffix == ".gif",
            **_guidance(args),
            **_sampler_options(args),
            **args.vae_options,
        )
        parts.append(x)
    x = torch.cat(parts)
    seconds = time.perf_counter() - t0
    written = [args.out]
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            arr = to_uint8(x)
            arr = arr[..., 0] if arr.shape[3] == 1 else arr
            atomic_save_npy(args.out, arr)
        elif suffix == ".png":
            save_image_grid(x, args.out)
        else:
            strip = args.out.with_name(f"{args.out.stem}_strip.png")
            save_trajectory_gif(result.trajectory, args.out)
            save_trajectory_strip(result.trajectory, strip)
            written.append(strip)
    except OSError as e:
        raise ScorelabError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(
        f"wrote {args.n} samples to {' and '.join(map(str, written))} "
        f"({result.nfe} NFE, {seconds:.2f}s)"
    )
    return 0


def _guidance(args: argparse.Namespace) -> dict:
    """Run.sample's class and guidance options from --class, --classifier/--scale, --cfg."""
    if args.class_ is None:
        return {}
    if args.cfg is not None and args.classifier is not None:
        raise ScorelabError("give --cfg or --classifier, not both")
    out = {"y": args.class_, "cfg": args.cfg}
    if args.classifier is not None:
        out.update(classifier=args.classifier, scale=args.scale)
    return out


def _sample_sweep(args: argparse.Namespace, run) -> int:
    """--sweep-classes: every class at each of --scales, one picture."""
    from scorelab.build import build_data
    from scorelab.evaluation.guidance import (
        guidance_sweep,
        save_sweep_images,
        save_sweep_scatter,
    )
    from scorelab.runs import is_image
    from scorelab.runs.classifier import load_classifier

    if args.out.suffix.lower() != ".png":
        raise ScorelabError(f"--sweep-classes writes a .png, got --out {args.out}")
    if args.class_ is not None or args.cfg is not None:
        raise ScorelabError("--sweep-classes takes --scales, not --class or --cfg")
    images = is_image(run.config)
    n = args.n or (8 if images else 200)
    classifier = load_classifier(args.classifier) if args.classifier is not None else None
    classes = classifier.num_classes if classifier is not None else run.num_classes
    if not classes:
        raise ScorelabError(
            f"{args.run_dir} is an unconditional run: --sweep-classes needs --classifier"
        )
    t0 = time.perf_counter()
    sweep = guidance_sweep(
        run,
        range(classes),
        args.scales,
        n,
        classifier=classifier,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        spacing=args.spacing,
        **_sampler_options(args),
    )
    what = "s" if classifier is not None else "w"
    try:
        if images:
            save_sweep_images(sweep, n, args.out)
        else:
            save_sweep_scatter(sweep, build_data(run.config)[:4000], args.out, what)
    except OSError as e:
        raise ScorelabError(f"cannot write {args.out}: {e.strerror or e}") from None
    print(
        f"wrote {classes} classes x {len(args.scales)} scales ({what} = "
        f"{','.join(f'{s:g}' for s in args.scales)}), {n} samples each, to {args.out} "
        f"({time.perf_counter() - t0:.1f}s)"
    )
    return 0


def _sampler_options(args: argparse.Namespace) -> dict:
    """The sampler options of --opt KEY=VALUE and of the shortcut flags (--eta, ...), typed
    and checked against the options the sampler registered (only those given: the rest keep
    the sampler's defaults)."""
    from scorelab.samplers import get_sampler, parse_options, validate_options

    spec = get_sampler(args.sampler)
    options = parse_options(args.sampler, getattr(args, "opt", None) or [])
    for dest, value in vars(args).items():
        if not dest.startswith(_OPTION_FLAG) or value is None:
            continue
        key = dest[len(_OPTION_FLAG) :]
        if key not in spec.options:
            raise ScorelabError(f"--{key} does not apply to sampler {args.sampler}")
        if key in options:
            raise ScorelabError(f"give --{key} or --opt {key}=VALUE, not both")
        options[key] = value
    validate_options(args.sampler, options)
    return options
