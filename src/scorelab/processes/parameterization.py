"""Exact conversions between what a network may predict at x_t = a x_0 + sigma eps.

With a = sqrt(alpha_bar_t) and sigma = sqrt(1 - alpha_bar_t) (so a^2 + sigma^2 = 1):
  x0    = (x_t - sigma eps) / a            (denoiser D_t(x) = E[x_0 | x_t = x]; docs/theory.md §6)
  eps   = (x_t - a x0) / sigma
  v     = a eps - sigma x0                 (Salimans & Ho 2022)
  score = -eps / sigma                     (grad log p_t; Tweedie, docs/theory.md §6)
An SDE's x_t = alpha_t x_0 + sigma_t eps (processes/sde.py) is converted in its VP view
x~ = c x_t, c = input_scale(t) = 1 / sqrt(alpha_t^2 + sigma_t^2); there a = sqrt(alpha_bar_eq),
eps and x0 are unchanged and grad_x log p_t = c grad_x~ log p~_t = -eps / sigma_t.
Every conversion goes through eps; adapters turn any of these functions into an eps_fn.
alpha_bar is a (B,) tensor, or a Python float when one time holds for the whole batch.

Two more predictions need the process itself, not only alpha_bar (docs/theory.md §30); each is
linear in (x_t, prediction), eps = A x_t + B pred (eps_coefficients):
  velocity  u = dx_t/dt = f x_t + (g^2 / (2 sigma_t)) eps   (flow matching; the PF-ODE drift)
  edm       F with D = c_skip x^ + c_out F(c_in x^, c_noise) (Karras et al. 2022, Table 1), in
            the VE view x^ = x_t / alpha_t, s = sigma_t / alpha_t: c_skip = sd^2 / (s^2 + sd^2),
            c_out = s sd / sqrt(s^2 + sd^2), c_in = 1 / sqrt(s^2 + sd^2), sd = sigma_data;
            eps = (x^ - D) / s = s x^ / (s^2 + sd^2) - sd F / sqrt(s^2 + sd^2)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import append_dims, is_broadcast
from scorelab.errors import ScorelabError
from scorelab.typing import PREDICTIONS, EpsFn, ModelFn, Prediction, Schedule, ScoreFn

# predictions whose conversion needs the process (its drift, diffusion and sigma_data)
PROCESS_PREDICTIONS: tuple[str, ...] = ("velocity", "edm")


def check_prediction(kind: str, known: tuple[str, ...] = PREDICTIONS) -> None:
    """kind is one of known: the alpha_bar-only predictions by default; as_eps_fn also takes
    PROCESS_PREDICTIONS."""
    if kind not in known:
        raise ScorelabError(f"unknown prediction {kind!r}; choose one of: {', '.join(known)}")


def eps_coefficients(schedule: Schedule, kind: str, t: Tensor) -> tuple[Tensor, Tensor]:
    """(A, B) with eps = A x_t + B pred for a velocity or edm prediction, float64, shape of t."""
    if kind not in PROCESS_PREDICTIONS:
        raise ScorelabError(f"{kind!r} is not a process prediction (velocity, edm)")
    if not hasattr(schedule, "mean_coeff" if kind == "edm" else "velocity_coefficients"):
        raise ScorelabError(
            f"prediction {kind!r} needs a process with alpha_t and sigma_t (vp, subvp, ve, edm "
            "or flow), not a discrete schedule"
        )
    t = _wide(t)
    if kind == "velocity":
        f, b = schedule.velocity_coefficients(t)  # type: ignore[attr-defined]
        return -f / b, 1 / b
    alpha, sigma = schedule.mean_coeff(t), schedule.std(t)  # type: ignore[attr-defined]
    s, sd = sigma / alpha, float(schedule.sigma_data)  # type: ignore[attr-defined]
    r2 = s**2 + sd**2
    return s / r2 / alpha, -sd / r2.sqrt()


def _linear_eps(schedule: Schedule, kind: str, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    a, b = eps_coefficients(schedule, kind, t)
    return append_dims(a.to(x.dtype), x.ndim), append_dims(b.to(x.dtype), x.ndim)


def process_to_eps(pred: Tensor, kind: str, x_t: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """The eps that a velocity or edm prediction implies at (x_t, t) on the process."""
    a, b = _linear_eps(schedule, kind, t, x_t)
    return a * x_t + b * pred


def process_from_eps(eps: Tensor, kind: str, x_t: Tensor, t: Tensor, schedule: Schedule) -> Tensor:
    """The velocity or edm prediction that an eps implies at (x_t, t) on the process."""
    a, b = _linear_eps(schedule, kind, t, x_t)
    return (eps - a * x_t) / b


def _a_sigma(alpha_bar: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor] | tuple[float, float]:
    if isinstance(alpha_bar, float):  # one time for the whole batch, as samplers step
        return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)
    # in the wider of the two dtypes, then cast: an SDE's alpha_bar near t = 0 is 1 - 2e-8,
    # which float32 would round to 1 (sigma = 0)
    alpha_bar = append_dims(alpha_bar.to(torch.promote_types(alpha_bar.dtype, x.dtype)), x.ndim)
    return alpha_bar.sqrt().to(x.dtype), (1 - alpha_bar).sqrt().to(x.dtype)


def to_eps(pred: Tensor, kind: Prediction, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The eps that a prediction of the given kind implies at x_t."""
    check_prediction(kind)
    a, sigma = _a_sigma(alpha_bar, x_t)
    if kind == "eps":
        return pred
    if kind == "x0":
        return (x_t - a * pred) / sigma
    if kind == "v":
        return sigma * x_t + a * pred
    return -sigma * pred


def from_eps(eps: Tensor, kind: Prediction, x_t: Tensor, alpha_bar: Tensor | float) -> Tensor:
    """The prediction of the given kind that an eps implies at x_t."""
    check_prediction(kind)
    a, sigma = _a_sigma(alpha_bar, x_t)
    if kind == "eps":
        return eps
    if kind == "x0":
        return (x_t - sigma * eps) / a
    if kind == "v":
        return (eps - sigma * x_t) / a
    return -eps / sigma


def convert(
    pred: Tensor, src: Prediction, dst: Prediction, x_t: Tensor, alpha_bar: Tensor | float
) -> Tensor:
    """Convert a prediction of kind src at x_t into kind dst, exactly."""
    return from_eps(to_eps(pred, src, x_t, alpha_bar), dst, x_t, alpha_bar)


def target(kind: Prediction, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """The regression target for kind, given the clean x0 and the noise eps that made x_t."""
    check_prediction(kind)
    a, sigma = _a_sigma(alpha_bar, x0)
    return from_eps(eps, kind, a * x0 + sigma * eps, alpha_bar)


def _scale(schedule: Schedule, t: Tensor, x: Tensor) -> Tensor:
    """c = input_scale(t): x~ = c x_t is the VP view of an SDE's x_t (1 for a DDPM schedule)."""
    return append_dims(schedule.input_scale(t).to(x.dtype), x.ndim)


def _wide(t: Tensor) -> Tensor:
    """t in float64 where the device has it (not Apple's MPS); one time expanded over the
    batch stays one, which the schedules compute once."""
    t = torch.as_tensor(t)
    if t.device.type == "mps":
        return t
    if is_broadcast(t):
        return t[:1].to(torch.float64).expand(t.shape)
    return t.to(torch.float64)


def as_eps_fn(model_fn: ModelFn, schedule: Schedule, prediction: Prediction = "eps") -> EpsFn:
    """Wrap a function predicting eps, x0, v or the score as an eps_fn(x, t).

    For an SDE the conversion runs in the VP view x~ = c x (eps and x0 are the same there, v is
    defined there); a score prediction is grad_x log p_t, which is c grad_x~ log p~_t.
    """
    check_prediction(prediction, PREDICTIONS + PROCESS_PREDICTIONS)
    if prediction == "eps":
        return model_fn
    if prediction in PROCESS_PREDICTIONS:
        eps_coefficients(schedule, prediction, torch.full((1,), 0.5))  # a discrete one: now

        def process_eps_fn(x: Tensor, t: Tensor) -> Tensor:
            return process_to_eps(model_fn(x, t), prediction, x, t, schedule)

        return process_eps_fn

    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        # alpha_bar in float64: in float32 it is 1 - 1e-4 +- 6e-8 at DDPM's t = 1, which puts
        # an error of 3e-4 into sigma, and x0 prediction divides by sigma
        pred, alpha_bar = model_fn(x, t), schedule.alpha_bar(_wide(t))
        if prediction == "score":
            c = _scale(schedule, t, x)
            return to_eps(pred / c, prediction, c * x, alpha_bar)
        return to_eps(pred, prediction, _scale(schedule, t, x) * x, alpha_bar)

    return eps_fn


def net_input_scale(schedule: Schedule, t: Tensor, x: Tensor) -> Tensor:
    """c_in = 1 / sqrt(sigma_t^2 + alpha_t^2 sigma_data^2): EDM's input scale in x_t's units; with
    sigma_data = 1 (every process but EDM) it is input_scale(t), the VP view."""
    sigma_data = float(getattr(schedule, "sigma_data", 1.0))
    if sigma_data == 1.0:
        return _scale(schedule, t, x)
    t = _wide(t)
    alpha, sigma = schedule.mean_coeff(t), schedule.std(t)  # type: ignore[attr-defined]
    c = torch.rsqrt(sigma**2 + (alpha * sigma_data) ** 2)
    return append_dims(c.to(x.dtype), x.ndim)


def preconditioned(net: ModelFn, schedule: Schedule) -> ModelFn:
    """The network fed c_in(t) x and noise_label(t) (t; log sigma_t for VE; log(sigma) / 4
    for EDM): well-scaled inputs on every process (EDM's c_in and c_noise; net_input_scale)."""

    def model_fn(x: Tensor, t: Tensor) -> Tensor:
        return net(net_input_scale(schedule, t, x) * x, schedule.noise_label(t).to(t.dtype))

    return model_fn


def clip_x0(eps_fn: EpsFn, schedule: Schedule, low: float = -1.0, high: float = 1.0) -> EpsFn:
    """eps_fn whose implied x0 is clipped to [low, high] (DDPM's sampler, diffusers'
    clip_sample): eps is recomputed from the clipped x0 at the same x_t."""
    denoiser = denoiser_from_eps(eps_fn, schedule)
    return from_denoiser(lambda x, t: denoiser(x, t).clamp(low, high), schedule)


def split_learned_variance(model_fn: ModelFn) -> tuple[ModelFn, ModelFn]:
    """Split a network that outputs 2C channels along dim 1 into (prediction_fn, variance_fn).

    The first C channels are the prediction (eps, x0, v or score: wrap them with as_eps_fn);
    the last C are r in roughly [-1, 1], returned as the interpolation weight v = (r + 1) / 2
    of log Sigma = v log beta + (1 - v) log beta_tilde (improved DDPM's convention). The two
    functions share one network call when given the same x and t objects in a row, as
    p_mean_variance and the VLB do.
    """
    cache: dict[str, object] = {}

    def both(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        key = (x, t, x._version, t._version)
        last = cache.get("key")
        if (
            last is None
            or any(a is not b for a, b in zip(last[:2], key[:2], strict=True))
            or (last[2:] != key[2:])
        ):
            out = model_fn(x, t)
            if out.shape[1] % 2:
                raise ScorelabError(
                    f"a learned-variance network must output 2C channels, got {out.shape[1]}"
                )
            cache["key"], cache["out"] = key, out.chunk(2, dim=1)
        return cache["out"]  # type: ignore[return-value]

    def prediction_fn(x: Tensor, t: Tensor) -> Tensor:
        return both(x, t)[0]

    def variance_fn(x: Tensor, t: Tensor) -> Tensor:
        return (both(x, t)[1] + 1) / 2

    return prediction_fn, variance_fn


def from_score(score_fn: ScoreFn, schedule: Schedule) -> EpsFn:
    """eps_fn from a score function: eps = -sigma_t * score."""
    return as_eps_fn(score_fn, schedule, "score")


def from_denoiser(denoiser: ModelFn, schedule: Schedule) -> EpsFn:
    """eps_fn from a denoiser D_t(x) = E[x_0 | x_t = x]."""
    return as_eps_fn(denoiser, schedule, "x0")


def score_from_eps(eps_fn: EpsFn, schedule: Schedule) -> ScoreFn:
    """score_fn from an eps_fn: score = -eps / sigma_t."""

    def score_fn(x: Tensor, t: Tensor) -> Tensor:
        c = _scale(schedule, t, x)  # grad_x = c grad_x~ (1 for a DDPM schedule)
        return c * from_eps(eps_fn(x, t), "score", c * x, schedule.alpha_bar(t))

    return score_fn


def denoiser_from_eps(eps_fn: EpsFn, schedule: Schedule) -> ModelFn:
    """D_t from an eps_fn: x0 = (x - sigma_t eps) / sqrt(alpha_bar_t)."""

    def denoiser(x: Tensor, t: Tensor) -> Tensor:
        return from_eps(eps_fn(x, t), "x0", _scale(schedule, t, x) * x, schedule.alpha_bar(t))

    return denoiser


__all__ = [
    "PROCESS_PREDICTIONS",
    "as_eps_fn",
    "eps_coefficients",
    "net_input_scale",
    "process_from_eps",
    "process_to_eps",
    "clip_x0",
    "convert",
    "denoiser_from_eps",
    "from_denoiser",
    "from_eps",
    "from_score",
    "preconditioned",
    "score_from_eps",
    "split_learned_variance",
    "target",
    "to_eps",
]
