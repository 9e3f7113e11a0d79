"""The one place where names in a config become objects."""

from __future__ import annotations

import torch
from torch import nn

from scorelab.config import ModelConfig, RunConfig, ScheduleConfig, SDEConfig
from scorelab.data import Normalizer, load_dataset
from scorelab.errors import ScorelabError
from scorelab.nn import MLP
from scorelab.objectives import OBJECTIVES, SCORE_OBJECTIVES
from scorelab.processes import (
    SDE,
    DiscreteSchedule,
    as_eps_fn,
    make_schedule,
    make_sde,
    preconditioned,
    score_from_eps,
)
from scorelab.targets import TargetScore, checked, load_target
from scorelab.typing import EpsFn, ScoreFn

MODELS = {"mlp": MLP}


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
    span = schedule_T if time_span is None else time_span
    return MLP(cfg.dim, cfg.width, cfg.depth, time_scale=1000 / span)


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
    check_objective(cfg.objective)
    if cfg.objective in SCORE_OBJECTIVES:
        cfg.score.validate()
        if cfg.objective == "tsm" and not cfg.score.target:
            raise ScorelabError("--objective tsm needs --target module:function")
        if cfg.objective != "tsm" and cfg.score.target:
            raise ScorelabError("--target is used only by --objective tsm")
        if cfg.sde is not None:
            build_sde(cfg.sde)  # an unknown name or bad parameter fails here, before any work
            return cfg
        return cfg.replace(sde=SDEConfig("ve" if cfg.objective == "tsm" else "vp"))
    if cfg.sde is not None:
        raise ScorelabError(
            f"--sde trains with a score objective (dsm, ism, ssm or tsm), not {cfg.objective!r}; "
            "eps, x0 and v train the discrete --schedule"
        )
    if cfg.score.target:
        raise ScorelabError("--target is used only by --objective tsm")
    return cfg


def build_target(cfg: RunConfig) -> TargetScore:
    """The known clean score grad log p_0 of --target, checked on every call."""
    if not cfg.score.target:
        raise ScorelabError("the run has no --target")
    return checked(load_target(cfg.score.target), f"--target {cfg.score.target}")


def check_objective(name: str) -> None:
    if name not in OBJECTIVES:
        raise ScorelabError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")


def build_data(cfg: RunConfig) -> torch.Tensor:
    """The training data in its own units, (N, d)."""
    return load_dataset(cfg.data, cfg.n_data, seed=cfg.train.seed)


def build_eps_fn(model: nn.Module, cfg: RunConfig, schedule: DiscreteSchedule | SDE) -> EpsFn:
    """The trained network as an eps_fn(x, t) in the model's (normalized) units."""
    if cfg.sde is None:
        return as_eps_fn(model, schedule, cfg.objective)
    return as_eps_fn(preconditioned(model, schedule), schedule, cfg.score.prediction)


def build_score_fn(model: nn.Module, cfg: RunConfig, sde: SDE) -> ScoreFn:
    """The network on an SDE as a score_fn(x, t) = grad log p_t(x) (normalized units)."""
    return score_from_eps(build_eps_fn(model, cfg, sde), sde)


def normalizer_of(cfg: RunConfig) -> Normalizer:
    if cfg.normalizer is None:
        raise ScorelabError("the run config has no data normalizer")
    return Normalizer.from_dict(cfg.normalizer)
