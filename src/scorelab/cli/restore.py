"""scorelab restore: posterior sampling for an inverse problem y = A x + sigma_y n with a trained
run as the prior (inpainting, super-resolution, deblurring, denoising, compressed sensing).

The operator acts in the data's units; the run's normalizer x_model = (x - shift) / scale turns
the problem into y' = A x_model + (sigma_y / scale) n with y' = (y - A shift) / scale."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from scorelab.cli.args import nonneg_float, nonneg_int, positive_float, positive_int
from scorelab.errors import ScorelabError

TASKS = ("inpaint", "sr", "deblur", "denoise", "cs")


def int_box(text: str) -> tuple[int, int, int, int]:
    try:
        box = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,HEIGHT,WIDTH, got {text!r}") from None
    if len(box) != 4:
        raise argparse.ArgumentTypeError(f"expected TOP,LEFT,HEIGHT,WIDTH, got {text!r}")
    return box  # type: ignore[return-value]


def register(sub) -> None:
    from scorelab.posterior import METHODS
    from scorelab.samplers.timesteps import SPACINGS

    p = sub.add_parser(
        "restore",
        help="solve an inverse problem with a trained run as the prior",
        description="Degrade --input with the task's operator and sigma_y (or take it as the "
        "observation with --observed) and draw --n samples of the posterior p(x | y). Image runs "
        "write a .png grid (A^+ y, the samples, their mean and per-pixel std) or an .npy of the "
        "samples; vector runs an .npy of the samples.",
    )
    p.add_argument("run_dir", type=Path, help="run directory written by `scorelab train`")
    p.add_argument("--task", required=True, choices=TASKS, help="the operator A")
    p.add_argument("--box", type=int_box, default=None, help="inpaint: hide TOP,LEFT,H,W")
    p.add_argument(
        "--fraction",
        type=positive_float,
        default=None,
        help="inpaint: observe this fraction of the entries, at random (default: 0.5)",
    )
    p.add_argument("--factor", type=positive_int, default=2, help="sr: pooling factor (default: 2)")
    p.add_argument(
        "--blur-sigma", type=positive_float, default=1.0, help="deblur: kernel std (default: 1)"
    )
    p.add_argument(
        "--measurements", type=positive_int, default=None, help="cs: rows of A (default: d / 2)"
    )
    p.add_argument("--input", type=Path, required=True, help="a clean .png or .npy signal")
    p.add_argument(
        "--observed", action="store_true", help="--input is the observation y itself (.npy/.png)"
    )
    p.add_argument(
        "--sigma-y", type=nonneg_float, default=0.05, help="observation noise std (default: 0.05)"
    )
    p.add_argument(
        "--method",
        default="ddnm",
        choices=list(METHODS),
        help="posterior method (default: ddnm, which needs no gradient through the network)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, repeatable: "
        + "; ".join(f"{n}: {', '.join(s.options) or '-'}" for n, s in METHODS.items()),
    )
    p.add_argument("--steps", type=positive_int, default=100, help="grid intervals (default: 100)")
    p.add_argument(
        "--spacing",
        choices=SPACINGS,
        default=None,
        help="the time grid (default: the method's own: quadratic for diffpir, else uniform)",
    )
    p.add_argument("--n", type=positive_int, default=8, help="posterior samples (default: 8)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed (default: 0)")
    p.add_argument("--out", type=Path, required=True, help="FILE.png (image runs) or FILE.npy")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(handler=run)


def build_operator(args: argparse.Namespace, shape: tuple[int, ...], image: bool):
    """The task's operator on signals of the run's shape (one example, no batch)."""
    import math

    import torch

    from scorelab import operators

    if args.task in ("sr", "deblur") and not image:
        raise ScorelabError(f"--task {args.task} needs an image run")
    if args.task == "cs" and image:
        raise ScorelabError("--task cs needs a vector run")
    if args.box is not None and (args.task != "inpaint" or not image):
        raise ScorelabError("--box applies to --task inpaint on an image run")
    if args.task == "inpaint":
        if args.box is not None:
            return operators.Mask.box(shape, *args.box)
        g = torch.Generator().manual_seed(args.seed)
        return operators.Mask.random(shape, args.fraction or 0.5, generator=g)
    if args.task == "sr":
        return operators.AvgPool(args.factor, shape)
    if args.task == "deblur":
        size = min(2 * math.ceil(2 * args.blur_sigma) + 1, min(shape[-2:]) // 2 * 2 - 1)
        return operators.GaussianBlur(args.blur_sigma, max(size, 1), shape)
    if args.task == "denoise":
        return operators.Identity(shape)
    d = math.prod(shape)
    g = torch.Generator().manual_seed(args.seed)
    return operators.RandomProjection(args.measurements or max(1, d // 2), d, generator=g)


def read_input(path: Path, shape: tuple[int, ...]):
    """A .npy array, or a .png as (C, H, W) in [-1, 1] (grey or RGB as the run has C = 1, 3)."""
    import numpy as np
    import torch

    if not path.is_file():
        raise ScorelabError(f"--input {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise ScorelabError(f"--input {path}: not a numeric .npy ({e})") from None
        x = torch.as_tensor(arr, dtype=torch.float32)
        return (x / 127.5 - 1) if arr.dtype == np.uint8 else x
    if path.suffix.lower() != ".png":
        raise ScorelabError(f"--input must be a .png or .npy, got {path}")
    from PIL import Image

    img = Image.open(path).convert("L" if len(shape) == 3 and shape[0] == 1 else "RGB")
    arr = np.asarray(img, dtype=np.float32)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return torch.as_tensor(arr) / 127.5 - 1


def fit_shape(x, shape: tuple[int, ...], what: str):
    """x as (1, *shape), accepting a batch of 1 or a missing channel axis of size 1."""
    n = 1
    for s in shape:
        n *= s
    if x.numel() != n:
        raise ScorelabError(f"{what} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    return x.reshape(1, *shape)


def run(args: argparse.Namespace) -> int:
    import torch

    from scorelab import posterior
    from scorelab.runs import is_image, load_run

    suffix = args.out.suffix.lower()
    run_ = load_run(args.run_dir)
    if not hasattr(run_, "eps_fn") or not hasattr(run_, "schedule"):
        raise ScorelabError(f"{args.run_dir} is not a diffusion run")
    image = is_image(run_.config)
    if suffix not in ((".png", ".npy") if image else (".npy",)):
        allowed = ".png or .npy" if image else ".npy (vector run)"
        raise ScorelabError(f"--out must end in {allowed}, got {args.out}")
    options = posterior.parse_options(args.method, args.opt)
    shape = tuple(run_.shape)
    operator = build_operator(args, shape, image)
    posterior.get_method(args.method).check_operator(operator)
    raw = read_input(args.input, shape)
    g = torch.Generator().manual_seed(args.seed)
    if args.observed:
        y = fit_shape(raw, operator.out_shape, "the observation (--observed)")
    else:
        x = fit_shape(raw, shape, "--input")
        noise = torch.randn(x.shape[:1] + operator.out_shape, generator=g)
        y = operator.forward(x) + args.sigma_y * noise
    # the problem in model units: x_model = (x - shift) / scale
    norm = run_.normalizer
    shift = norm.decode(torch.zeros(1, *shape))
    y_model = (y - operator.forward(shift)) / norm.scale
    t0 = time.perf_counter()
    result = posterior.sample(
        run_.eps_fn, run_.schedule, operator, y_model, args.sigma_y / norm.scale, args.method,
        args.steps, spacing=args.spacing, n=args.n, generator=g, **options,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    samples = norm.decode(result.x).detach()
    if image:
        samples = samples.clamp(-1, 1)
    residual = posterior.residual(operator, samples, y)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            from scorelab.files import atomic_save_npy

            atomic_save_npy(args.out, samples.numpy())
        else:
            write_grid(operator, y, samples, args.out)
    except OSError as e:
        raise ScorelabError(f"cannot write {args.out}: {e.strerror or e}") from None
    m = 1
    for s in operator.out_shape:
        m *= s
    report = {
        "task": args.task, "method": args.method, "n": args.n, "steps": args.steps,
        "spacing": args.spacing or posterior.METHODS[args.method].spacing,
        "nfe": result.nfe, "seconds": round(seconds, 3), "sigma_y": args.sigma_y,
        "residual": [round(float(r), 6) for r in residual],
        "expected_residual": args.sigma_y * m**0.5, "out": str(args.out),
    }  # fmt: skip
    if args.format == "json":
        print(json.dumps(report))
    else:
        print(
            f"wrote {args.n} posterior samples to {args.out} ({args.method}, {result.nfe} NFE, "
            f"{seconds:.2f}s; mean ||A x - y|| {float(residual.mean()):.4g}, "
            f"sigma_y sqrt(m) {report['expected_residual']:.4g})"
        )
    return 0


def write_grid(operator, y, samples, path: Path) -> None:
    """One row: A^+ y, the samples, their mean and their per-pixel std (scaled to [-1, 1])."""
    import torch

    from scorelab.evaluation.images import save_image_grid

    std = samples.std(dim=0, keepdim=True) if samples.shape[0] > 1 else samples[:1] * 0
    std = std / std.max().clamp_min(1e-12) * 2 - 1
    pictures = [operator.pinv(y).clamp(-1, 1), samples, samples.mean(0, keepdim=True), std]
    grid = torch.cat(pictures)
    save_image_grid(grid, path, nrow=grid.shape[0])
