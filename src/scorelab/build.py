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
from scorelab.processes.ddpm import Variance, VarianceFn
from scorelab.processes.parameterization import split_learned_variance
from scorelab.typing import EpsFn, Prediction

MODELS = {"mlp": MLP}
# ModelConfig.variance -> the reverse variance of p_mean_variance ("learned": the network's)
MODEL_VARIANCES = {"fixed_small": "beta_tilde", "fixed_large": "beta", "learned": None}


def build_schedule(cfg: ScheduleConfig) -> DiscreteSchedule:
    return make_schedule(cfg.name, T=cfg.T)


def build_model(cfg: ModelConfig, schedule_T: int) -> nn.Module:
    if cfg.name not in MODELS:
        raise ScorelabError(f"unknown model {cfg.name!r}; choose one of: {', '.join(MODELS)}")
    check_variance(cfg.variance)
    out_dim = 2 * cfg.dim if cfg.variance == "learned" else cfg.dim
    # time_scale maps t in [0, T] onto the 0..1000 range the sinusoidal features are tuned for
    return MLP(cfg.dim, cfg.width, cfg.depth, time_scale=1000 / schedule_T, out_dim=out_dim)


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
    return load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed)


def build_eps_fn(model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule) -> EpsFn:
    """The trained network as an eps_fn(x, t) in the model's (normalized) units."""
    if cfg.model.variance == "learned":
        model, _ = split_learned_variance(model)
    return as_eps_fn(model, schedule, prediction_of(cfg.objective))


def build_eps_and_variance(
    model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule
) -> tuple[EpsFn, Variance | VarianceFn]:
    """The eps_fn and the reverse variance ("beta_tilde", "beta" or the learned VarianceFn),
    sharing one network call per (x, t) for a learned variance."""
    check_variance(cfg.model.variance)
    if cfg.model.variance != "learned":
        return build_eps_fn(model, cfg, schedule), MODEL_VARIANCES[cfg.model.variance]
    prediction_fn, variance_fn = split_learned_variance(model)
    return as_eps_fn(prediction_fn, schedule, prediction_of(cfg.objective)), variance_fn


def normalizer_of(cfg: RunConfig) -> Normalizer:
    if cfg.normalizer is None:
        raise ScorelabError("the run config has no data normalizer")
    return Normalizer.from_dict(cfg.normalizer)
