"""The one place where names in a config become objects."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from scorelab.config import ModelConfig, RunConfig, ScheduleConfig, SDEConfig
from scorelab.data import Normalizer, load_dataset
from scorelab.data.images import ImageSet, load_images
from scorelab.errors import DataError, ScorelabError
from scorelab.nn import MLP, UNet
from scorelab.nn.vae import DECODERS, VAE, conv_vae, mlp_vae
from scorelab.objectives import OBJECTIVES, SCORE_OBJECTIVES
from scorelab.processes import (
    SDE,
    DiscreteSchedule,
    as_eps_fn,
    clip_x0,
    make_schedule,
    make_sde,
    preconditioned,
    score_from_eps,
)
from scorelab.processes.ddpm import Variance, VarianceFn
from scorelab.processes.parameterization import split_learned_variance
from scorelab.targets import TargetScore, checked, load_target
from scorelab.typing import EpsFn, Prediction, ScoreFn

MODELS = {"mlp": MLP, "unet": UNet}  # diffusion networks; the VAE's is build_vae
# ModelConfig.variance -> the reverse variance of p_mean_variance ("learned": the network's)
MODEL_VARIANCES = {"fixed_small": "beta_tilde", "fixed_large": "beta", "learned": None}


def build_schedule(cfg: ScheduleConfig) -> DiscreteSchedule:
    return make_schedule(cfg.name, T=cfg.T)


def build_sde(cfg: SDEConfig) -> SDE:
    return make_sde(cfg.name, **cfg.params)


def build_process(cfg: RunConfig) -> DiscreteSchedule | SDE:
    """The run's forward process: its SDE if it has one, else the discrete schedule."""
    return build_sde(cfg.sde) if cfg.sde is not None else build_schedule(cfg.schedule)


def build_model(cfg: ModelConfig, schedule_T: int, *, time_span: float | None = None) -> nn.Module:
    if cfg.name not in MODELS:
        raise ScorelabError(f"unknown model {cfg.name!r}; choose one of: {', '.join(MODELS)}")
    # time_scale maps t in [0, T] (or an SDE's noise label, spanning time_span) onto the
    # 0..1000 range the sinusoidal features are tuned for
    check_variance(cfg.variance)
    learned = cfg.variance == "learned"  # the network also outputs the variance's v
    span = schedule_T if time_span is None else time_span
    if cfg.name == "unet":
        return _unet(
            cfg.in_channels,
            cfg.image_size,
            cfg.channels,
            tuple(cfg.channel_mult),
            cfg.res_blocks,
            tuple(cfg.attn_resolutions),
            cfg.dropout,
            time_scale=1000 / span,
            out_channels=2 * cfg.in_channels if learned else None,
            num_classes=cfg.num_classes,
            norm_group_size=cfg.norm_group_size,
            norm_groups=cfg.norm_groups,
        )
    out_dim = 2 * cfg.dim if learned else cfg.dim
    return MLP(
        cfg.dim,
        cfg.width,
        cfg.depth,
        time_scale=1000 / span,
        out_dim=out_dim,
        num_classes=cfg.num_classes,
    )


def _unet(*args, **kwargs) -> UNet:
    try:
        return UNet(*args, **kwargs)
    except ValueError as e:  # a width the groups do not divide, ...: the message says which
        raise ScorelabError(f"U-Net: {e}") from None


def build_vae(cfg: ModelConfig) -> VAE:
    """The VAE baseline: a conv VAE for images (image_size > 0), an MLP VAE for vectors."""
    if cfg.decoder not in DECODERS:
        raise ScorelabError(
            f"unknown decoder {cfg.decoder!r}; choose one of: {', '.join(DECODERS)}"
        )
    if cfg.latent_dim < 1:
        raise ScorelabError(f"--latent-dim must be >= 1, got {cfg.latent_dim}")
    if cfg.image_size > 0:
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        return conv_vae(shape, cfg.latent_dim, cfg.channels, cfg.decoder)
    return mlp_vae(cfg.dim, cfg.latent_dim, cfg.width, cfg.depth, cfg.decoder)


def build_model_for(cfg: RunConfig, process: DiscreteSchedule | SDE) -> nn.Module:
    """The network of a run on its process: an SDE's net sees its noise label (log sigma, VE)."""
    if cfg.sde is None:
        return build_model(cfg.model, process.T)
    lo, hi = process.noise_label_range()
    return build_model(cfg.model, 1, time_span=hi - lo)


def resolve_objective(cfg: RunConfig) -> RunConfig:
    """Check the objective against the process: score objectives run on an SDE (VP by
    default, VE for tsm, whose target needs no rescaling there); eps, x0 and v train the
    discrete schedule."""
    check_objective(cfg.objective, cfg.model.variance)
    if cfg.objective in SCORE_OBJECTIVES:
        cfg.score.validate()
        if cfg.objective == "tsm" and not cfg.score.target:
            raise ScorelabError("--objective tsm needs --target module:function")
        if cfg.objective != "tsm" and cfg.score.target:
            raise ScorelabError("--target is used only by --objective tsm")
        if cfg.sde is None:
            cfg = cfg.replace(sde=SDEConfig("ve" if cfg.objective == "tsm" else "vp"))
        process = build_sde(cfg.sde)  # an unknown name or bad parameter fails here
        prediction, weighting = score_options(cfg, process)
        return cfg.replace(
            score=dataclasses.replace(cfg.score, prediction=prediction, weighting=weighting)
        )
    if cfg.sde is not None:
        raise ScorelabError(
            f"--process {cfg.sde.name} trains with a score objective (dsm, ism, ssm or tsm), not "
            f"{cfg.objective!r}; eps, x0 and v train the discrete --process ddpm"
        )
    if cfg.score.target:
        raise ScorelabError("--target is used only by --objective tsm")
    # layouts before 4 stored eps and sigma2 in every run; other values would be ignored here
    if cfg.score.prediction not in (None, "eps") or cfg.score.weighting not in (None, "sigma2"):
        raise ScorelabError(
            "--prediction and --weighting set a continuous process's loss; on --process ddpm "
            "the --objective (eps, x0, v) names the prediction"
        )
    return cfg


def score_options(cfg: RunConfig, process: SDE) -> tuple[str, str]:
    """The prediction and loss weighting of a run on a continuous-time process: its own
    settings, or the process's (eps and sigma2 on vp/subvp/ve, edm on edm, velocity on flow)."""
    return (
        cfg.score.prediction or process.native_prediction,
        cfg.score.weighting or process.native_weighting,
    )


def build_target(cfg: RunConfig) -> TargetScore:
    """The known clean score grad log p_0 of --target, checked on every call."""
    if not cfg.score.target:
        raise ScorelabError("the run has no --target")
    return checked(load_target(cfg.score.target), f"--target {cfg.score.target}")


def check_variance(name: str) -> None:
    if name not in MODEL_VARIANCES:
        raise ScorelabError(
            f"unknown variance {name!r}; choose one of: {', '.join(MODEL_VARIANCES)}"
        )


def check_objective(name: str, variance: str = "fixed_small") -> None:
    if name not in OBJECTIVES:
        raise ScorelabError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    check_variance(variance)
    if (name == "hybrid") != (variance == "learned"):
        raise ScorelabError(
            "--objective hybrid and --variance learned go together (the hybrid loss trains "
            "the variance; a learned variance needs the hybrid loss)"
        )


def prediction_of(objective: str) -> Prediction:
    """What the network's (first) output predicts: the hybrid objective predicts eps."""
    return "eps" if objective == "hybrid" else objective  # type: ignore[return-value]


def build_data(cfg: RunConfig) -> torch.Tensor:
    """The training data in its own units, (N, d)."""
    check_has_data(cfg)
    return load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed)


def check_has_data(cfg: RunConfig) -> None:
    """A run's own data is named in its config; a model opened from elsewhere (diffusers)
    records none, and commands that need data ask for --data."""
    if cfg.data is None:
        raise ScorelabError(
            "this model records no training data (it was not trained by scorelab): pass --data"
        )


def build_eps_fn(model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule | SDE) -> EpsFn:
    """The trained network as an eps_fn(x, t) in the model's (normalized) units."""
    if cfg.sde is not None:
        prediction = score_options(cfg, schedule)[0]  # type: ignore[arg-type]
        return as_eps_fn(preconditioned(model, schedule), schedule, prediction)
    if cfg.model.variance == "learned":
        model, _ = split_learned_variance(model)
    return as_eps_fn(model, schedule, prediction_of(cfg.objective))


def build_score_fn(model: nn.Module, cfg: RunConfig, sde: SDE) -> ScoreFn:
    """The network on an SDE as a score_fn(x, t) = grad log p_t(x) (normalized units)."""
    return score_from_eps(build_eps_fn(model, cfg, sde), sde)


def build_eps_and_variance(
    model: nn.Module,
    cfg: RunConfig,
    schedule: DiscreteSchedule | SDE,
    *,
    clip: float | None | str = "images",
) -> tuple[EpsFn, Variance | VarianceFn]:
    """The eps_fn to sample and evaluate with, and the reverse variance ("beta_tilde", "beta"
    or the learned VarianceFn, sharing one network call per (x, t)). clip: clip the implied
    x0 to [-clip, clip] (None: never); "images": to [-1, 1] for U-Net runs only."""
    check_variance(cfg.model.variance)
    if cfg.model.variance != "learned":
        eps_fn, variance = build_eps_fn(model, cfg, schedule), MODEL_VARIANCES[cfg.model.variance]
    else:
        prediction_fn, variance = split_learned_variance(model)
        eps_fn = as_eps_fn(prediction_fn, schedule, prediction_of(cfg.objective))
    if clip == "images":
        # images live in [-1, 1]: clip the implied x0 when sampling, as DDPM's sampler and
        # diffusers' clip_sample do (training uses the raw network)
        clip = 1.0 if cfg.model.name == "unet" else None
    if clip is not None:
        eps_fn = clip_x0(eps_fn, schedule, -float(clip), float(clip))
    return eps_fn, variance


def normalizer_of(cfg: RunConfig) -> Normalizer:
    if cfg.normalizer is None:
        raise ScorelabError("the run config has no data normalizer")
    return Normalizer.from_dict(cfg.normalizer)


def sample_shape(cfg: ModelConfig, n: int) -> tuple[int, ...]:
    """The shape of n samples of a diffusion network's data: (n, C, S, S) for the U-Net, else
    (n, dim)."""
    if cfg.name == "unet":
        return (n, cfg.in_channels, cfg.image_size, cfg.image_size)
    return (n, cfg.dim)


def build_image_data(cfg: RunConfig) -> ImageSet:
    """The training images (N, C, S, S) in [-1, 1] with their labels, if any (a named data
    set with official splits: its train split)."""
    check_has_data(cfg)
    return load_images(cfg.data, cfg.image_size, data_dir=cfg.data_dir)


def check_image_model(cfg: ModelConfig, image_shape: tuple[int, int, int]) -> ModelConfig:
    """The model config fitted to the images, or a DataError saying why they do not fit."""
    c, h, w = image_shape
    if cfg.name != "unet":
        raise DataError(f"image data needs --model unet, not {cfg.name!r}")
    levels = len(cfg.channel_mult)
    if h % 2 ** (levels - 1):
        raise DataError(
            f"image size {h} is not divisible by 2^{levels - 1} = {2 ** (levels - 1)}, which "
            f"the U-Net's {levels} levels (--channel-mult {','.join(map(str, cfg.channel_mult))})"
            " need; choose another --image-size or fewer levels"
        )
    return dataclasses.replace(cfg, in_channels=c, image_size=h)
