"""The one place where names in a config become objects."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from scorelab.config import ModelConfig, RunConfig, ScheduleConfig
from scorelab.data import Normalizer, load_dataset
from scorelab.data.images import ImageSet, load_images
from scorelab.errors import DataError, ScorelabError
from scorelab.nn import MLP, UNet
from scorelab.objectives import OBJECTIVES
from scorelab.processes import DiscreteSchedule, as_eps_fn, make_schedule
from scorelab.processes.parameterization import denoiser_from_eps, from_denoiser
from scorelab.typing import EpsFn

MODELS = {"mlp": MLP, "unet": UNet}


def build_schedule(cfg: ScheduleConfig) -> DiscreteSchedule:
    return make_schedule(cfg.name, T=cfg.T)


def build_model(cfg: ModelConfig, schedule_T: int) -> nn.Module:
    if cfg.name not in MODELS:
        raise ScorelabError(f"unknown model {cfg.name!r}; choose one of: {', '.join(MODELS)}")
    # time_scale maps t in [0, T] onto the 0..1000 range the sinusoidal features are tuned for
    if cfg.name == "unet":
        return UNet(
            cfg.in_channels,
            cfg.image_size,
            cfg.channels,
            tuple(cfg.channel_mult),
            cfg.res_blocks,
            tuple(cfg.attn_resolutions),
            cfg.dropout,
            time_scale=1000 / schedule_T,
        )
    return MLP(cfg.dim, cfg.width, cfg.depth, time_scale=1000 / schedule_T)


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise ScorelabError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")


def build_data(cfg: RunConfig) -> torch.Tensor:
    """The training data in its own units, (N, d)."""
    return load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed)


def build_eps_fn(model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule) -> EpsFn:
    """The trained network as an eps_fn(x, t) in the model's (normalized) units.

    Image models see data in [-1, 1], so their implied x0 is clipped to that range, as
    DDPM's sampler and diffusers' clip_sample do; eps is recomputed from the clipped x0.
    """
    eps_fn = as_eps_fn(model, schedule, cfg.objective)
    if cfg.model.name != "unet":
        return eps_fn
    denoiser = denoiser_from_eps(eps_fn, schedule)
    return from_denoiser(lambda x, t: denoiser(x, t).clamp(-1.0, 1.0), schedule)


def normalizer_of(cfg: RunConfig) -> Normalizer:
    if cfg.normalizer is None:
        raise ScorelabError("the run config has no data normalizer")
    return Normalizer.from_dict(cfg.normalizer)


def sample_shape(cfg: ModelConfig, n: int) -> tuple[int, ...]:
    """The shape of n samples of the model's data: (n, C, S, S) for images, else (n, dim)."""
    if cfg.name == "unet":
        return (n, cfg.in_channels, cfg.image_size, cfg.image_size)
    return (n, cfg.dim)


def build_image_data(cfg: RunConfig) -> ImageSet:
    """The training images (N, C, S, S) in [-1, 1] with their labels, if any."""
    return load_images(cfg.data, cfg.image_size)


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
