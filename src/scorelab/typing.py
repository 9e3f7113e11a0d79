"""Protocols shared by samplers, objectives and adapters.

A sampler needs only a callable and a schedule: eps_fn(x, t) -> eps, with x of shape (B, *)
and t a float tensor of shape (B,) in the schedule's own time units.
"""

from __future__ import annotations

from typing import Literal, Protocol

from torch import Tensor

Prediction = Literal["eps", "x0", "v", "score"]
PREDICTIONS: tuple[str, ...] = ("eps", "x0", "v", "score")


class EpsFn(Protocol):
    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class ScoreFn(Protocol):
    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class ModelFn(Protocol):
    """A network's forward: a prediction of the kind its parameterization names."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class Schedule(Protocol):
    """A variance-preserving noise process: everything follows from alpha_bar(t).

    The samplers use these methods and nothing else; beta_rate is -d log alpha_bar / dt and
    time_at_log_snr inverts log_snr = log(alpha_bar / (1 - alpha_bar)). DiscreteSchedule and
    the SDEs of processes/sde.py (through their VP view) implement it.
    """

    @property
    def T(self) -> float: ...

    @property
    def t_min(self) -> float: ...

    def alpha_bar(self, t: Tensor) -> Tensor: ...

    def log_alpha_bar(self, t: Tensor) -> Tensor: ...

    def log_snr(self, t: Tensor) -> Tensor: ...

    def time_at_log_snr(self, log_snr: Tensor) -> Tensor: ...

    def beta_rate(self, t: Tensor) -> Tensor: ...

    def timesteps(self, steps: int | None = None) -> Tensor: ...

    def input_scale(self, t: Tensor) -> Tensor:
        """x~ = input_scale(t) x_t is the VP view samplers integrate (1 for a DDPM schedule)."""
        ...

    @property
    def default_steps(self) -> int: ...

    @property
    def sampling_t_min(self) -> float | None: ...

    @property
    def likelihood_t0(self) -> float:
        """Where the likelihood's probability-flow ODE starts by default."""
        ...


class ClassifierFn(Protocol):
    """A noise-aware classifier: logits of p(y | x_t, t), shape (B, n_classes)."""

    def __call__(self, x: Tensor, t: Tensor) -> Tensor: ...


class CondEpsFn(Protocol):
    """A class-conditional eps prediction eps(x, t, y); y is a (B,) long tensor of labels."""

    def __call__(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor: ...


class Callback(Protocol):
    """Receives each sampler step: index i, time t, current x_t and the predicted x0."""

    def __call__(self, i: int, t: Tensor, x: Tensor, x0: Tensor) -> None: ...
