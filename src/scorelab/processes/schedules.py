"""Noise schedules of the discrete variance-preserving process (DDPM).

beta_t for t = 1..T; alpha_t = 1 - beta_t; alpha_bar_t = prod_{s<=t} alpha_s, alpha_bar_0 = 1.
alpha_bar(t) is defined for every real t in [0, T] by interpolating log alpha_bar linearly
between integer steps, so samplers may ask for any time. log-SNR = log(alpha_bar / (1 - alpha_bar)).
Tables are built in float64 and cast at use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from scorelab._tensor import is_broadcast
from scorelab.errors import ScorelabError


@dataclass(frozen=True, eq=False)
class DiscreteSchedule:
    """A DDPM schedule given by its betas (T,), float64; time runs over [0, T]."""

    betas: Tensor
    name: str = "custom"
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = torch.as_tensor(self.betas, dtype=torch.float64).flatten()
        if b.numel() == 0 or not torch.isfinite(b).all() or (b <= 0).any() or (b >= 1).any():
            raise ScorelabError("betas must be a non-empty sequence of numbers in (0, 1)")
        object.__setattr__(self, "betas", b)
        log_alpha_bar = torch.cat([b.new_zeros(1), torch.cumsum(torch.log1p(-b), 0)])
        object.__setattr__(self, "_log_alpha_bar", log_alpha_bar)

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def t_min(self) -> float:
        """The smallest positive training time, the default last positive time of a grid."""
        return 1.0

    @property
    def alphas(self) -> Tensor:
        """alpha_t = 1 - beta_t for t = 1..T, shape (T,)."""
        return 1.0 - self.betas

    @property
    def alpha_bar_table(self) -> Tensor:
        """alpha_bar_t for t = 0..T, shape (T + 1,), float64, alpha_bar_0 = 1."""
        return torch.exp(self._log_alpha_bar)

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        """log alpha_bar(t) for real t in [0, T]: linear interpolation of the float64 table."""
        t = torch.as_tensor(t)
        if is_broadcast(t):  # one time repeated over the batch: compute it once
            return self.log_alpha_bar(t[:1]).expand(t.shape)
        table = self._log_alpha_bar.to(t.device)
        tt = t.to(torch.float64).clamp(0, self.T)
        i = tt.floor().clamp(max=self.T - 1).long()
        frac = tt - i
        out = table[i] * (1 - frac) + table[i + 1] * frac
        return out.to(t.dtype if t.is_floating_point() else torch.float32)

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) for real t in [0, T], same shape as t."""
        return torch.exp(self.log_alpha_bar(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        """sqrt(1 - alpha_bar(t)): the noise level of q(x_t | x_0)."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def log_snr(self, t: Tensor | float) -> Tensor:
        """log(alpha_bar / (1 - alpha_bar)), strictly decreasing in t."""
        la = self.log_alpha_bar(t)
        return la - torch.log(-torch.expm1(la))

    def beta_rate(self, t: Tensor | float) -> Tensor:
        """beta(t) = -d log alpha_bar / dt of the continuous-time VP-SDE this schedule defines.

        Constant on each segment [i, i + 1) (log alpha_bar is linear there): -log(1 - beta_i);
        at an integer t the segment below it is used, the one a reverse step crosses.
        """
        t = torch.as_tensor(t)
        if is_broadcast(t):
            return self.beta_rate(t[:1]).expand(t.shape)
        table = self._log_alpha_bar.to(t.device)
        i = (torch.ceil(t.to(torch.float64)) - 1).clamp(0, self.T - 1).long()
        out = table[i] - table[i + 1]
        return out.to(t.dtype if t.is_floating_point() else torch.float32)

    def velocity_coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(-beta(t) / 2, beta(t) / (2 sigma_t)) in float64: the PF-ODE drift of the VP-SDE this
        schedule defines is u(x, t) = -beta/2 x + beta / (2 sigma_t) eps (sde.py's velocity)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        beta = self.beta_rate(t).to(torch.float64)
        return -beta / 2, beta / (2 * self.sigma(t).to(torch.float64))

    def time_at_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """The inverse of log_snr(t) on [0, T] (float64): the time with that log-SNR."""
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        # alpha_bar = sigmoid(lambda), so log alpha_bar = -softplus(-lambda)
        target = -torch.nn.functional.softplus(-lam)
        table = -self._log_alpha_bar.to(lam.device)  # increasing in t
        value = (-target).clamp(float(table[0]), float(table[-1]))
        i = (torch.searchsorted(table, value.contiguous()) - 1).clamp(0, self.T - 1)
        lo, hi = table[i], table[i + 1]
        return i.to(torch.float64) + (value - lo) / (hi - lo)

    def beta(self, t: Tensor | int) -> Tensor:
        """beta_t for integer t in 1..T (float64)."""
        t = torch.as_tensor(t)
        return self.betas.to(t.device)[t.long() - 1]

    def timesteps(self, steps: int | None = None) -> Tensor:
        """A decreasing grid T = t_0 > ... > t_K = 0 of integer times, evenly spaced, float64."""
        steps = self.T if steps is None else int(steps)
        if not 1 <= steps <= self.T:
            raise ScorelabError(f"steps must be in 1..{self.T}, got {steps}")
        return torch.linspace(self.T, 0, steps + 1, dtype=torch.float64).round()

    def to_dict(self) -> dict:
        """The name and parameters that make_schedule rebuilds this schedule from."""
        return {"name": self.name, **self.params}

    # -- what samplers.sample asks of every process (the SDEs of processes/sde.py too) --------
    def input_scale(self, t: Tensor | float) -> Tensor:
        """1 / sqrt(a_t^2 + sigma_t^2) = 1: a VP process needs no rescaling (see sde.py)."""
        t = torch.as_tensor(t)
        return torch.ones_like(t, dtype=t.dtype if t.is_floating_point() else torch.float32)

    @property
    def default_steps(self) -> int:
        """Sampling grid intervals when none are given: every step."""
        return self.T

    @property
    def sampling_t_min(self) -> float | None:
        """The last positive grid time when none is given (None: each spacing's own default)."""
        return None

    @property
    def likelihood_t0(self) -> float:
        """Where the likelihood's ODE starts by default: 1e-3 T (t = 1 at T = 1000, where the
        linear schedule's sigma is 0.01)."""
        return 1e-3 * self.T


def _linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """DDPM (Ho et al. 2020): beta linear from 1e-4 to 0.02 at T = 1000, rescaled for other T."""
    scale = 1000 / T
    return torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)


def _quadratic(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """sqrt(beta) linear (the 'quadratic' schedule of the DDPM code release)."""
    scale = 1000 / T
    lo, hi = math.sqrt(beta_start * scale), math.sqrt(beta_end * scale)
    return torch.linspace(lo, hi, T, dtype=torch.float64) ** 2


def _cosine(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved DDPM (Nichol & Dhariwal 2021): alpha_bar = cos^2((t/T + s)/(1 + s) pi/2)."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    # clip: the last betas approach 1 and would make alpha_bar_T exactly 0.
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-8, max=max_beta)


def _sigmoid(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """beta following a sigmoid between beta_start and beta_end (GeoDiff)."""
    x = torch.linspace(-6, 6, T, dtype=torch.float64)
    scale = 1000 / T
    return (torch.sigmoid(x) * (beta_end - beta_start) + beta_start) * scale


SCHEDULES: dict[str, Callable[..., Tensor]] = {
    "linear": _linear,
    "cosine": _cosine,
    "quadratic": _quadratic,
    "sigmoid": _sigmoid,
}


def make_schedule(name: str = "linear", T: int = 1000, **params: float) -> DiscreteSchedule:
    """Build a named schedule: make_schedule('linear') is DDPM's (1e-4..0.02, T = 1000)."""
    if name not in SCHEDULES:
        raise ScorelabError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    if int(T) != T or T < 1:
        raise ScorelabError(f"T must be a positive integer, got {T}")
    try:
        betas = SCHEDULES[name](int(T), **params)
    except TypeError as e:
        raise ScorelabError(f"bad parameters for schedule {name!r}: {e}") from None
    # clip: rescaled to small T, linear-type schedules would pass beta = 1 (alpha_bar = 0)
    betas = betas.clamp(max=0.999)
    return DiscreteSchedule(betas, name=name, params={"T": int(T), **params})
