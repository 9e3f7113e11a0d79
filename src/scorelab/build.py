"""The one place where names in a config become objects."""

from __future__ import annotations

import torch
from torch import nn

from scorelab.config import ModelConfig, RunConfig, ScheduleConfig
from scorelab.data import Normalizer, load_dataset
from scorelab.errors import ScorelabError
from scorelab.nn import MLP
from scorelab.objectives import OBJECTIVES
from scorelab.processes import DiscreteSchedule, as_eps_fn, make_schedule
from scorelab.typing import EpsFn

MODELS = {"mlp": MLP}


def build_schedule(cfg: ScheduleConfig) -> DiscreteSchedule:
    return make_schedule(cfg.name, T=cfg.T)


def build_model(cfg: ModelConfig, schedule_T: int) -> nn.Module:
    if cfg.name not in MODELS:
        raise ScorelabError(f"unknown model {cfg.name!r}; choose one of: {', '.join(MODELS)}")
    # time_scale maps t in [0, T] onto the 0..1000 range the sinusoidal features are tuned for
    return MLP(cfg.dim, cfg.width, cfg.depth, time_scale=1000 / schedule_T)


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise ScorelabError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")


def build_data(cfg: RunConfig) -> torch.Tensor:
    """The training data in its own units, (N, d)."""
    return load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed)


def build_eps_fn(model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule) -> EpsFn:
    """The trained network as an eps_fn(x, t) in the model's (normalized) units."""
    return as_eps_fn(model, schedule, cfg.objective)


def normalizer_of(cfg: RunConfig) -> Normalizer:
    if cfg.normalizer is None:
        raise ScorelabError("the run config has no data normalizer")
    return Normalizer.from_dict(cfg.normalizer)
