"""The command line: parse, load config, call library functions; no maths here."""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scorelab.errors import ScorelabError
from scorelab.presets import config_file_overrides, image_defaults, preset_names


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit status 2
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _number(kind: type, ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: text parsed as kind (int or float), then checked by ok."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, ">= 1")
_nonneg_int = _number(int, lambda v: v >= 0, ">= 0")
_positive_float = _number(float, lambda v: 0 < v < math.inf, "a finite number > 0")
_nonneg_float = _number(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
_fraction = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")


# flag -> (config key, type, default, help); defaults come from the config dataclasses
def _train_flags() -> list[tuple[str, str, object, str]]:
    from scorelab.config import RunConfig

    d = RunConfig()
    t, m, sc = d.train, d.model, d.score
    return [
        (
            "--data",
            "data",
            str,
            "built-in dataset name (ring, swissroll, moons, checkerboard; digits: images), "
            "a path to an (N, d) float .npy file, a folder of images or a uint8 image .npy",
        ),
        (
            "--n-data",
            "n_data",
            _positive_int,
            f"points drawn from a built-in dataset (default: {d.n_data})",
        ),
        (
            "--objective",
            "objective",
            str,
            "eps, x0 or v: what the network predicts and regresses on the discrete "
            "--schedule (L_simple, Algorithm 1; x0 is the denoiser of seed 002); hybrid: eps "
            "with L_simple + lambda L_vlb, for --variance learned. Score "
            "matching on an --sde (VP unless given): dsm (denoising, weighted by --weighting), "
            "ism (implicit, Hyvarinen 2005: exact divergence by autograd, one backward pass "
            "per dimension, so for low dimension only), ssm (sliced: --probes random "
            "projections, variance-reduced), tsm (target score matching: needs --target, the "
            "known clean score) (default: eps)",
        ),
        (
            "--sde",
            "sde.name",
            str,
            "train in continuous time t in [0, 1] on this SDE: vp (beta 0.1..20), subvp, "
            "ve (sigma 0.01..50); needs a score objective (default with one: vp; ve for tsm)",
        ),
        (
            "--prediction",
            "score.prediction",
            str,
            f"score objectives: what the network outputs, converted exactly to the score "
            f"(default: {sc.prediction})",
        ),
        (
            "--weighting",
            "score.weighting",
            str,
            "score objectives: lambda(t), sigma2 (sigma_t^2), likelihood (g(t)^2) or none "
            f"(default: {sc.weighting})",
        ),
        (
            "--probes",
            "score.probes",
            _positive_int,
            f"ssm: random projections per example (default: {sc.probes})",
        ),
        (
            "--probe",
            "score.probe",
            str,
            f"ssm: projection distribution (default: {sc.probe})",
        ),
        (
            "--target",
            "score.target",
            str,
            "tsm: module:function on the Python path, taking (n, d) points and returning "
            "grad log p_0 there, e.g. scorelab.examples.double_well:score. Without --data the "
            "training samples are first drawn by unadjusted Langevin dynamics on that score "
            "and the run reports how well the chains mixed; Langevin alone can get the "
            "weights of well-separated modes wrong (chains rarely cross between modes: the "
            "motivation of annealed Langevin)",
        ),
        (
            "--tsm-blend",
            "score.tsm_blend",
            str,
            "tsm: its target's blend with dsm's by noise level: snr (w_t = alpha_t^2 s^2 / "
            "(alpha_t^2 s^2 + sigma_t^2): the clean score at low noise, dsm at high noise; "
            "exact for Gaussian data), switch (the clean score where alpha_t s > sigma_t, "
            "dsm elsewhere) or none (the clean score at every noise level) "
            f"(default: {sc.tsm_blend})",
        ),
        (
            "--tsm-scale",
            "score.tsm_scale",
            _positive_float,
            "tsm: the blend's data scale s in normalized units (default: estimated from the "
            "data as sqrt(d / E|grad log p_0|^2), about the modes' width, and recorded in "
            "config.json)",
        ),
        (
            "--langevin-steps",
            "score.langevin_steps",
            _positive_int,
            f"tsm without --data: Langevin steps per chain (default: {sc.langevin_steps})",
        ),
        (
            "--langevin-step-size",
            "score.langevin_step_size",
            _positive_float,
            f"tsm without --data: Langevin step size (default: {sc.langevin_step_size})",
        ),
        (
            "--dim",
            "model.dim",
            _positive_int,
            "tsm without --data: dimension of the target's samples (otherwise the data's; "
            f"default: {m.dim})",
        ),
        (
            "--variance",
            "model.variance",
            str,
            "reverse variance: fixed_small (beta_tilde), fixed_large (beta) or learned "
            "(improved DDPM; needs --objective hybrid) (default: fixed_small)",
        ),
        (
            "--vlb-weight",
            "train.vlb_weight",
            _nonneg_float,
            f"hybrid objective: the weight lambda of L_vlb (default: {t.vlb_weight})",
        ),
        (
            "--t-sampling",
            "train.t_sampling",
            str,
            "how t is drawn: uniform, or second-moment (importance sampling by the "
            "loss' second moment, improved DDPM) (default: uniform)",
        ),
        (
            "--schedule",
            "schedule.name",
            str,
            "beta schedule: linear (DDPM, 1e-4..0.02), cosine, "
            "quadratic or sigmoid (default: linear)",
        ),
        (
            "--T",
            "schedule.T",
            _positive_int,
            f"number of diffusion steps (default: {d.schedule.T})",
        ),
        (
            "--steps",
            "train.steps",
            _positive_int,
            f"total optimizer steps of the run; with "
            f"--resume, train until this total (default: {t.steps})",
        ),
        (
            "--max-seconds",
            "train.max_seconds",
            _nonneg_float,
            "stop after this many seconds of training even before --steps (0: no cap); the "
            "cosine decay then follows the elapsed time, so a capped run is not bit-for-bit "
            f"reproducible (default: {t.max_seconds:g})",
        ),
        (
            "--batch-size",
            "train.batch_size",
            _positive_int,
            f"batch size (default: {t.batch_size})",
        ),
        ("--lr", "train.lr", _positive_float, f"peak Adam learning rate (default: {t.lr})"),
        (
            "--warmup",
            "train.warmup",
            _nonneg_int,
            f"linear warm-up steps before cosine decay (default: {t.warmup})",
        ),
        (
            "--grad-clip",
            "train.grad_clip",
            _positive_float,
            f"max gradient norm (default: {t.grad_clip})",
        ),
        (
            "--ema-decay",
            "train.ema_decay",
            _fraction,
            f"EMA decay of the weights used for sampling (default: {t.ema_decay})",
        ),
        (
            "--seed",
            "train.seed",
            _nonneg_int,
            f"seed of the data, weights, batches and noise (default: {t.seed})",
        ),
        (
            "--ckpt-every",
            "train.ckpt_every",
            _positive_int,
            f"steps between checkpoints (default: {t.ckpt_every})",
        ),
        (
            "--log-every",
            "train.log_every",
            _positive_int,
            f"steps between rows of metrics.csv (default: {t.log_every})",
        ),
        ("--width", "model.width", _positive_int, f"MLP width (default: {m.width})"),
        ("--depth", "model.depth", _positive_int, f"MLP residual blocks (default: {m.depth})"),
    ] + _image_train_flags() + _conditional_train_flags()


def _conditional_train_flags() -> list[tuple[str, str, object, str]]:
    """Flags of class-conditional training (issue 7)."""
    return [
        (
            "--labels",
            "labels",
            str,
            "integer class labels (N,) in a .npy beside an .npy --data (ring, digits and "
            "folders with class sub-folders carry their own)",
        ),
        (
            "--cond-drop",
            "train.cond_drop",
            _fraction,
            "label dropout: replace each label by the null class with this probability, so "
            "the model can do classifier-free guidance (--cfg); implies --conditional "
            "(default: 0)",
        ),
    ]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2,2, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _int_list_or_none(text: str) -> list[int]:
    return [] if text.strip().lower() in ("", "none") else _int_list(text)


def _image_train_flags() -> list[tuple[str, str, object, str]]:
    """Flags of image models, speed and scale-out (issue 6)."""
    from scorelab.config import RunConfig

    d = RunConfig()
    t, m = d.train, d.model
    return [
        (
            "--model",
            "model.name",
            str,
            "network: mlp (vectors), unet (images; default for them) or vae (the VAE "
            "baseline: MLP for vectors, convolutional for images; trained on the ELBO)",
        ),
        (
            "--latent-dim",
            "model.latent_dim",
            _positive_int,
            "vae: latent size (default: 2 for vectors, 16 for images)",
        ),
        (
            "--decoder",
            "model.decoder",
            str,
            "vae: decoder likelihood p(x|z), gaussian, logistic (discretized, 8-bit images) or "
            "bernoulli (binary images) (default: gaussian for vectors, logistic for images)",
        ),
        (
            "--beta",
            "model.beta",
            _positive_float,
            f"vae: weight of the KL term of the ELBO, beta-VAE (default: {m.beta})",
        ),
        ("--image-size", "image_size", _positive_int, "resize and centre-crop images to this side"),
        (
            "--channels",
            "model.channels",
            _positive_int,
            f"U-Net base width (default: {m.channels})",
        ),
        (
            "--channel-mult",
            "model.channel_mult",
            _int_list,
            "U-Net width multiplier per level, e.g. 1,2,2; the image side must be divisible "
            f"by 2^(levels - 1) (default: {','.join(map(str, m.channel_mult))})",
        ),
        (
            "--res-blocks",
            "model.res_blocks",
            _positive_int,
            f"U-Net residual blocks per level (default: {m.res_blocks})",
        ),
        (
            "--attn-res",
            "model.attn_resolutions",
            _int_list_or_none,
            "U-Net resolutions with self-attention, e.g. 4 or 16,8, or none "
            f"(default: {','.join(map(str, m.attn_resolutions))})",
        ),
        ("--dropout", "model.dropout", _fraction, f"U-Net dropout (default: {m.dropout})"),
        (
            "--micro-batches",
            "train.micro_batches",
            _positive_int,
            "split each batch into this many micro-batches per process, gradients accumulated "
            f"(default: {t.micro_batches})",
        ),
        ("--device", "train.device", str, f"cpu, cuda or cuda:N (default: {t.device})"),
        (
            "--precision",
            "train.precision",
            str,
            f"fp32, bf16 (autocast; CPU or GPU) or fp16 (GPU) (default: {t.precision})",
        ),
        (
            "--sample-every",
            "train.sample_every",
            _nonneg_int,
            "image runs: steps between sample grids (samples.png); 0: only at the end "
            f"(default: {t.sample_every})",
        ),
    ]


# switches: flag -> (config key, help)
_SWITCHES = {
    "--hflip": ("hflip", "images: random horizontal flips (off by default; leave off for digits)"),
    "--compile": ("train.compile", "torch.compile the network (pays off only on long runs)"),
    "--channels-last": ("train.channels_last", "channels-last memory format for images"),
    "--deterministic": (
        "train.deterministic",
        "PyTorch's deterministic algorithms (torch.use_deterministic_algorithms): the same "
        "run gives the same bits on a GPU too, at some speed; an op without a deterministic "
        "version then fails with PyTorch's message",
    ),
    "--conditional": (
        "conditional",
        "class-conditional model eps(x, t, y) on the data's labels (a null class too)",
    ),
}


def _switch_overrides(args: argparse.Namespace) -> dict[str, object]:
    return {key: True for key, _ in _SWITCHES.values() if getattr(args, key, None)}


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a diffusion model into a run directory",
        description="Train a DDPM (Algorithm 1 of Ho et al. 2020) on a dataset, or a "
        "continuous-time score model on an --sde with a score-matching --objective. The run "
        "directory gets config.json, checkpoints (safetensors), metrics.csv and loss.png.",
    )
    for flag, key, typ, help_ in _train_flags():
        p.add_argument(flag, dest=key, type=typ, default=None, help=help_)
    for flag, (key, help_) in _SWITCHES.items():
        p.add_argument(flag, dest=key, action="store_const", const=True, default=None, help=help_)
    p.add_argument("--out", required=True, type=Path, help="run directory to create or resume")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out exactly "
        "where its last checkpoint stopped (flags other than --steps, --max-seconds and the "
        "speed flags must match)",
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE|PRESET",
        help="a JSON file shaped like a run's config.json, whole or in part (e.g. "
        '{"train": {"lr": 0.003}, "data": "moons"}), or the name of a preset shipped with '
        f"scorelab ({', '.join(preset_names())}; the files are in the repository's configs/); "
        "flags given here override it. Its 'normalizer' is ignored: a new run fits its data's "
        "normalization. Image runs start from the 'images' preset's settings",
    )
    p.add_argument(
        "--ssm-plain",
        action="store_true",
        help="ssm: the plain form ½(vᵀs)² + vᵀ(∂s/∂x)v instead of the variance-reduced "
        "½‖s‖² + vᵀ(∂s/∂x)v",
    )
    p.add_argument(
        "--sde-param",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an SDE parameter, repeatable: beta_min, beta_max (vp, subvp), sigma_min, "
        "sigma_max (ve)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_sample(sub) -> None:
    from scorelab.samplers import REGISTRY, SAMPLERS, SPACINGS

    p = sub.add_parser(
        "sample",
        help="draw samples from a trained run",
        description="Sample from a run's EMA weights; .npy gets the samples in the data's own "
        "units, .png a scatter plot of samples against the data.",
    )
    p.add_argument("run_dir", type=Path, help="run directory written by `scorelab train`")
    p.add_argument(
        "--n", type=_positive_int, default=None, help="number of samples (default: 2000)"
    )
    p.add_argument("--out", type=Path, required=True, help="FILE.npy or FILE.png")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the noise (default: 0)")
    p.add_argument(
        "--sampler",
        default="ddpm",
        choices=list(SAMPLERS),
        help="sampler (default: ddpm; `scorelab samplers` lists them)",
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="sampling steps, i.e. grid intervals (default: T; fewer respace the grid)",
    )
    p.add_argument(
        "--spacing",
        default=None,
        choices=list(SPACINGS),
        help="time grid (default: the sampler's own, see `scorelab samplers`)",
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
        help=f"{', '.join(takers)}: {first.help} (default: {_show(first.default)}); "
        f"the same as --opt {key}=VALUE",
    )


def _show(value: object) -> str:
    """A default as the command line writes it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0,1,3, got {text!r}") from None
    if not values or any(not 0 <= v < float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers >= 0, got {text!r}")
    return values


def _add_guidance_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--class",
        dest="class_",
        type=_nonneg_int,
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
        type=_nonneg_float,
        default=1.0,
        help="classifier guidance scale s: score + s grad log p(y | x_t) (default: 1)",
    )
    p.add_argument(
        "--cfg",
        type=_nonneg_float,
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
        type=_float_list,
        default=[0.0, 1.0, 3.0],
        help="the scales of --sweep-classes (default: 0,1,3)",
    )


def _add_train_classifier(sub) -> None:
    from scorelab.runs.classifier import ClassifierConfig

    d = ClassifierConfig()
    p = sub.add_parser(
        "train-classifier",
        help="train a noise-aware classifier p(y | x_t, t) for classifier guidance",
        description="Train p_phi(y | x_t, t) on x_t drawn from the forward process (t uniform "
        "on 1..T), an MLP for vectors and a U-Net encoder for images, and report its accuracy "
        "per noise level (printed and written to OUT/accuracy.md). Use the same --data (and "
        "--n-data, --seed, --schedule, --T) as the run it will guide.",
    )
    p.add_argument("--data", required=True, help="labelled data: ring, digits, a folder, .npy")
    p.add_argument("--labels", default=None, help="labels .npy beside an .npy --data")
    p.add_argument(
        "--n-data", type=_positive_int, default=d.n_data, help=f"points (default: {d.n_data})"
    )
    p.add_argument("--image-size", type=_positive_int, default=None, help="resize images")
    p.add_argument("--out", type=Path, required=True, help="classifier directory to create")
    p.add_argument("--schedule", default=d.schedule.name, help="beta schedule (default: linear)")
    p.add_argument("--T", type=_positive_int, default=d.schedule.T, help="steps (default: 1000)")
    t = d.train
    p.add_argument("--steps", type=_positive_int, default=t.steps, help=f"(default: {t.steps})")
    p.add_argument(
        "--batch-size", type=_positive_int, default=t.batch_size, help=f"(default: {t.batch_size})"
    )
    p.add_argument("--lr", type=_positive_float, default=t.lr, help=f"(default: {t.lr})")
    p.add_argument("--seed", type=_nonneg_int, default=t.seed, help="seed (default: 0)")
    p.add_argument("--width", type=_positive_int, default=128, help="MLP width (default: 128)")
    p.add_argument("--depth", type=_positive_int, default=3, help="MLP blocks (default: 3)")
    p.add_argument(
        "--channels", type=_positive_int, default=32, help="encoder base width (default: 32)"
    )
    p.add_argument(
        "--channel-mult", type=_int_list, default=[1, 2], help="encoder levels (default: 1,2)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_eval(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a run: likelihood (--nll vlb|ode) or sample-quality metrics (--metrics)",
        description="--nll: the NLL in nats per example and bits per dimension, mean with its "
        "standard error, in the data's own units (the run's normalization is accounted for). "
        "vlb: the variational bound over all T steps (Ho et al. 2020), and a plot of its "
        "per-step terms; ode: the exact likelihood through the probability-flow ODE (Song et "
        "al. 2021), at the stated solver tolerances, with its NFE. Without --nll: draw --n "
        "samples and compare them with the run's data: fd/kid/pr in the features of a "
        "classifier trained on the data (images with labels; cached in the run dir), "
        "swd/energy/mmd in data space, fid with user-supplied Inception weights; each metric "
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
        "--k", type=_positive_int, default=64, help="iwae: importance samples (default: 64)"
    )
    p.add_argument(
        "--divergence",
        choices=["exact", "hutchinson"],
        default="exact",
        help="ode: exact trace (autograd, low dimension) or Hutchinson (default: exact)",
    )
    p.add_argument(
        "--probes",
        type=_positive_int,
        default=1,
        help="ode, hutchinson: Rademacher probes per trajectory (default: 1)",
    )
    p.add_argument("--rtol", type=_positive_float, default=1e-5, help="ode: rtol (default: 1e-5)")
    p.add_argument("--atol", type=_positive_float, default=1e-5, help="ode: atol (default: 1e-5)")
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


def _add_demo(sub) -> None:
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
        "--steps", type=_positive_int, default=3000, help="training steps (default: 3000)"
    )
    p.add_argument(
        "--n", type=_positive_int, default=4000, help="samples to draw and compare (default: 4000)"
    )
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default: 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_eval_metrics_args(p: argparse.ArgumentParser) -> None:
    from scorelab.evaluation.report import DEFAULT_METRICS, METRICS
    from scorelab.samplers import SAMPLERS

    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated, from {', '.join(METRICS)} (pr gives precision and recall) "
        f"(default without --nll: {','.join(DEFAULT_METRICS)})",
    )
    p.add_argument(
        "--n",
        type=_positive_int,
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
        type=_nonneg_int,
        default=None,
        help="seed of the samples' noise (metrics, default 0), or of the data drawn by name, "
        "the VLB's x_t and the probes (--nll, default 1)",
    )
    p.add_argument(
        "--sampler", default="ddim", choices=list(SAMPLERS), help="sampler (default: ddim)"
    )
    p.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="metrics: sampling steps (default: 100, or the run's T if smaller)",
    )
    p.add_argument(
        "--inception-weights",
        type=Path,
        default=None,
        help="fid: a local Inception-v3 weights file for torch-fidelity (never downloaded)",
    )


def _run_eval_metrics(args: argparse.Namespace) -> int:
    from scorelab.data import load_images, load_npy
    from scorelab.evaluation.report import (
        DEFAULT_METRICS,
        evaluate_metrics,
        format_report,
        parse_metrics,
    )
    from scorelab.runs import is_image, load_run

    metrics = parse_metrics(args.metrics or ",".join(DEFAULT_METRICS))
    args.n = 1000 if args.n is None else args.n
    args.seed = 0 if args.seed is None else args.seed
    run = load_run(args.run_dir, weights=args.weights)
    if args.steps is None:  # a diffusion run's DDIM steps (a VAE decodes in one: None)
        args.steps = run.preview(100)[0].get("steps")
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
    )
    if args.format == "json":
        print(json.dumps(results))
    else:
        print(format_report(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scorelab",
        description="Diffusion generative models, checked against exact answers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train(sub)
    _add_sample(sub)
    _add_train_classifier(sub)
    _add_eval(sub)
    _add_compare(sub)
    _add_demo(sub)
    p = sub.add_parser(
        "samplers", help="list the samplers with their papers, NFE per step and options"
    )
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p = sub.add_parser("env", help="print versions and devices, for bug reports")
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    return parser


# -- commands ------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    overrides = {
        key: getattr(args, key) for _, key, _, _ in _train_flags() if getattr(args, key) is not None
    }
    overrides.update(_switch_overrides(args))
    _sde_overrides(args, overrides)
    if overrides.get("train.cond_drop", 0) > 0:
        overrides["conditional"] = True
    if args.ssm_plain:
        overrides["score.variance_reduced"] = False
    flag_keys = set(overrides)
    if args.config is not None:  # the file first, the flags over it
        if args.resume:
            raise ScorelabError("--config starts a new run; --resume reads the run's own config")
        overrides = {**config_file_overrides(args.config), **overrides}
    from scorelab.runs import KINDS

    vae = overrides.get("model.name") in KINDS["vae"].models
    vae_flags = flag_keys & {"model.latent_dim", "model.decoder", "model.beta"}
    if vae_flags and not args.resume and not vae:
        raise ScorelabError("--latent-dim, --decoder and --beta apply to --model vae only")
    if overrides.get("data") and not args.resume:
        from scorelab.data import is_image_source

        if is_image_source(overrides["data"]) and not vae:
            # an image run: the measured image defaults (presets/images.json), then the
            # config file, then the flags
            overrides = {**image_defaults(), **overrides}
    from scorelab.training.distributed import init_from_env, shutdown

    rank, _ = init_from_env(str(overrides.get("train.device", "cpu")))
    try:
        return _train_and_report(args, overrides, rank)
    finally:
        shutdown()


def _train_and_report(args: argparse.Namespace, overrides: dict, rank: int) -> int:
    from scorelab.config import RunConfig, apply_overrides
    from scorelab.evaluation import loss_curve
    from scorelab.runs import resume, train

    log = print if rank == 0 else (lambda message: None)
    if args.resume:
        result = resume(args.out, overrides, progress=not args.no_progress, log=log)
    else:
        if "data" not in overrides:
            if overrides.get("objective") != "tsm":
                raise ScorelabError("--data is required for a new run")
            overrides["data"] = None  # tsm: Langevin samples of the --target score
        cfg = apply_overrides(RunConfig(), overrides)
        result = train(cfg, args.out, progress=not args.no_progress, log=log)
    if rank != 0:
        return 0
    loss_curve(args.out / "metrics.csv", args.out / "loss.png")
    print(
        f"trained to step {result.step} in {result.seconds:.1f}s, final loss "
        f"{result.final_loss:.4f}, {result.bad_steps} skipped steps; checkpoint "
        f"{result.checkpoint}"
    )
    return 0


def _sde_overrides(args: argparse.Namespace, overrides: dict) -> None:
    """--sde and --sde-param KEY=VALUE become the config's sde = {name, params}."""
    name = overrides.pop("sde.name", None)
    if args.sde_param and name is None:
        raise ScorelabError("--sde-param needs --sde")
    if name is None:
        return
    params = {}
    for item in args.sde_param or []:
        key, sep, value = item.partition("=")
        try:
            params[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ScorelabError(f"--sde-param must look like KEY=NUMBER, got {item!r}")
    overrides["sde"] = {"name": name, "params": params}


def cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from scorelab.build import build_data
    from scorelab.evaluation import scatter_vs_data
    from scorelab.runs import VAERun, is_image, load_run

    suffix = args.out.suffix.lower()
    run = load_run(args.run_dir, weights=args.weights)
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
            tmp = args.out.with_name(f".{args.out.name}.tmp.npy")
            np.save(tmp, x.numpy())
            tmp.replace(args.out)
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
    import numpy as np

    from scorelab.data.images import to_uint8
    from scorelab.evaluation.images import (
        save_image_grid,
        save_trajectory_gif,
        save_trajectory_strip,
    )

    suffix = args.out.suffix.lower()
    if suffix not in (".npy", ".png", ".gif"):
        raise ScorelabError(
            f"--out must end in .npy, .png or .gif for an image run, got {args.out}"
        )
    t0 = time.perf_counter()
    x, result = run.sample(
        args.n,
        seed=args.seed,
        sampler=args.sampler,
        steps=args.steps,
        spacing=args.spacing,
        record_trajectory=suffix == ".gif",
        **_guidance(args),
        **_sampler_options(args),
        **args.vae_options,
    )
    seconds = time.perf_counter() - t0
    written = [args.out]
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            arr = to_uint8(x)
            arr = arr[..., 0] if arr.shape[3] == 1 else arr
            tmp = args.out.with_name(f".{args.out.name}.tmp.npy")
            np.save(tmp, arr)
            tmp.replace(args.out)
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


def cmd_eval(args: argparse.Namespace) -> int:
    """--nll: the likelihood; otherwise the sample-quality metrics."""
    if args.nll is None:
        return _run_eval_metrics(args)
    if args.metrics is not None:
        raise ScorelabError("give --nll or --metrics, not both (run eval once for each)")
    return _run_eval_nll(args)


def _run_eval_nll(args: argparse.Namespace) -> int:
    from scorelab.data import DATASETS, check_array, load_dataset, load_images
    from scorelab.evaluation import vlb_breakdown
    from scorelab.runs import is_image, kind_of, load_run

    args.seed = 1 if args.seed is None else args.seed
    run = load_run(args.run_dir, weights=args.weights)
    name = run.config.data if args.data is None else args.data
    if is_image(run.config):
        data = load_images(name, run.config.model.image_size).x
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


def cmd_train_classifier(args: argparse.Namespace) -> int:
    import dataclasses

    from scorelab.runs.classifier import ClassifierConfig, train_classifier

    d = ClassifierConfig()
    cfg = ClassifierConfig(
        data=args.data,
        n_data=args.n_data,
        labels=args.labels,
        image_size=args.image_size,
        model=dataclasses.replace(
            d.model,
            width=args.width,
            depth=args.depth,
            channels=args.channels,
            channel_mult=tuple(args.channel_mult),
            res_blocks=1,
        ),
        schedule=dataclasses.replace(d.schedule, name=args.schedule, T=args.T),
        train=dataclasses.replace(
            d.train,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            warmup=min(d.train.warmup, args.steps // 10),
            ckpt_every=args.steps,
            device=args.device,
        ),
    )
    result, _ = train_classifier(cfg, args.out, progress=not args.no_progress)
    print(
        f"trained the classifier to step {result.step} in {result.seconds:.1f}s, final loss "
        f"{result.final_loss:.4f}; wrote {args.out / 'accuracy.md'} and {result.checkpoint}"
    )
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


def cmd_compare(args: argparse.Namespace) -> int:
    from scorelab.evaluation.compare import compare_runs

    paths = compare_runs(
        args.run_dirs,
        args.out,
        n=args.n,
        n_nll=args.n_nll,
        steps=args.steps,
        k=args.k,
        seed=args.seed,
        log=print,
    )
    print(f"wrote {' and '.join(map(str, paths))}")
    return 0


def _add_compare(sub) -> None:
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
        "--n", type=_positive_int, default=500, help="samples per run for metrics (default: 500)"
    )
    p.add_argument(
        "--n-nll",
        type=_nonneg_int,
        default=100,
        help="examples for the NLL bounds; 0 skips them (default: 100)",
    )
    p.add_argument(
        "--steps", type=_positive_int, default=50, help="diffusion: DDIM steps (default: 50)"
    )
    p.add_argument("--k", type=_positive_int, default=16, help="vae: IWAE samples (default: 16)")
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed (default: 0)")


def cmd_demo(args: argparse.Namespace) -> int:
    from scorelab.demo import run_demo

    run_demo(args.out, steps=args.steps, n=args.n, seed=args.seed, progress=not args.no_progress)
    return 0


def cmd_samplers(args: argparse.Namespace) -> int:
    """Every registered sampler: summary, NFE, grid, paper and its options (type, default)."""
    from scorelab.samplers import REGISTRY
    from scorelab.samplers.registry import describe

    if getattr(args, "format", "text") == "json":
        print(json.dumps([describe(spec) for spec in REGISTRY.values()], indent=1))
        return 0
    width = max(map(len, REGISTRY))
    for name, spec in REGISTRY.items():
        print(
            f"{name:<{width}}  {spec.summary}. NFE: {spec.nfe}. Grid: {spec.spacing}. "
            f"[{spec.paper}]"
        )
        key_width = max(map(len, spec.options), default=0)
        for key, opt in spec.options.items():
            print(
                f"{'':<{width}}    {key:<{key_width}}  {opt.describe()}, default "
                f"{_show(opt.default)}: {opt.help}"
            )
    print("set an option with `scorelab sample RUN --sampler NAME --opt KEY=VALUE`")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    import numpy
    import torch

    import scorelab

    info = {
        "scorelab": scorelab.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "devices": ["cpu"]
        + [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if args.format == "json":
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:<10} {value}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "train-classifier": cmd_train_classifier,
    "eval": cmd_eval,
    "compare": cmd_compare,
    "demo": cmd_demo,
    "samplers": cmd_samplers,
    "env": cmd_env,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ScorelabError as e:
        # Preempted (training/preemption.py): a signal stopped training after a step; 75 or 130
        status = getattr(e, "exit_status", None)
        if status is None:
            print(f"scorelab {args.command}: error: {e}", file=sys.stderr)
            return 2
        if e.rank == 0:
            note, step = str(e), e.step
            if e.checkpoint is None:  # the save failed: say what is on disk
                from scorelab.training.checkpoint import describe_last_checkpoint

                words, step = describe_last_checkpoint(args.out)
                note = f"{note}; {words}"
            resume = step is not None and hasattr(args, "resume")
            print(
                f"scorelab {args.command}: {note}" + ("; continue with --resume" if resume else ""),
                file=sys.stderr,
            )
        return status
    except KeyboardInterrupt:  # outside Trainer.fit, or Ctrl-C twice: check what is on disk
        note = ""
        if args.command == "train":
            from scorelab.training.checkpoint import describe_last_checkpoint

            words, step = describe_last_checkpoint(args.out)
            note = f"; {words}" + ("; continue with --resume" if step is not None else "")
        print(f"\nscorelab {args.command}: interrupted{note}", file=sys.stderr)
        return 130
