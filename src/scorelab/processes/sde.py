"""Continuous-time processes x_t = alpha_t x_0 + sigma_t eps: VP, sub-VP and VE (Song et al.
2021, appendix B), EDM (Karras et al. 2022) and flow matching (Lipman et al. 2023, Liu et al.
2023), each written as the linear SDE that has those marginals.

Each is linear, dx = f(t) x dt + g(t) dW, so its marginal is Gaussian:
  q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I),  d log alpha_t / dt = f(t),
  d sigma_t^2 / dt = 2 f(t) sigma_t^2 + g(t)^2.
  VP:     f = -beta(t)/2, g^2 = beta(t),                   alpha = e^{-B/2}, sigma^2 = 1 - e^{-B}
  sub-VP: f = -beta(t)/2, g^2 = beta(t) (1 - e^{-2B}),     alpha = e^{-B/2}, sigma = 1 - e^{-B}
  VE:     f = 0, g^2 = d sigma^2/dt, sigma_t^2 = sigma_min^2 ((sigma_max/sigma_min)^{2t} - 1)
  EDM:    f = 0, g^2 = 2t, alpha = 1, sigma = t: time is the noise level sigma in
          [sigma_min, sigma_max] (Karras et al. 2022, sigma(t) = t, s(t) = 1)
  flow:   alpha = 1 - t, sigma = sigma_min + (1 - sigma_min) t (the linear interpolant; t = 1 is
          noise), f = -1 / (1 - t), g^2 = 2 sigma (1 - sigma_min) + 2 sigma^2 / (1 - t)
with beta(t) = beta_min + t (beta_max - beta_min) and B(t) = int_0^t beta. VE's sigma_t is the
exact std of x_t - x_0 (it is 0 at t = 0), not score_sde's sigma_min (sigma_max/sigma_min)^t.
Reverse SDE: dx = [f x - g^2 score] dt + g dW-bar; PF-ODE: dx/dt = f x - g^2 score / 2.
The PF-ODE's drift is the velocity u = dx_t/dt = alpha'_t x_0 + sigma'_t eps in expectation
given x_t: u = f x_t + (g^2 / (2 sigma_t)) eps (velocity_coefficients), which is flow
matching's regression target for its process (docs/theory.md §30).

The VP-equivalent view. In x~ = x_t / sqrt(alpha_t^2 + sigma_t^2) every such process is a VP
process with alpha_bar_eq = alpha_t^2 / (alpha_t^2 + sigma_t^2): the same log-SNR
2 log(alpha_t / sigma_t), the same eps. So every SDE also offers the schedule interface the
samplers use (alpha_bar, log_alpha_bar, log_snr, time_at_log_snr, beta_rate, timesteps) and
input_scale(t) = 1 / sqrt(alpha_t^2 + sigma_t^2); `samplers.sample` maps x~ <-> x_t. For VP,
alpha^2 + sigma^2 = 1 and nothing changes. Float64 inside, cast to t's dtype at the end
(except alpha_bar and log_alpha_bar, which stay float64).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from scorelab._tensor import append_dims, flat_sum, rand, randn, randn_like
from scorelab.errors import ScorelabError
from scorelab.processes.ddpm import Gaussian


def _t64(t: Tensor | float) -> tuple[Tensor, torch.dtype]:
    t = torch.as_tensor(t)
    dtype = t.dtype if t.is_floating_point() else torch.float32
    return t.to(torch.float64), dtype


class SDE(ABC):
    """A linear SDE dx = f(t) x dt + g(t) dW on [0, T]. A subclass gives the five closed forms
    below (float64 tensors in, float64 out) and, if it has one, _time_at_log_snr; everything
    else (marginals, prior, reverse drift, the VP view and the schedule interface) follows."""

    T: float = 1.0
    t_min: float = 1e-3
    name: str = ""
    # what the "uniform" spacing means on this process: a grid uniform in t, unless its time is
    # a noise level (EDM: "karras", its sigma^(1/rho) grid; samplers/timesteps.py)
    own_spacing: str = "uniform"
    # the data's std in model units, for EDM's preconditioning (prediction "edm"); 1 for every
    # process but EDM, whose runs set it from the data
    sigma_data: float = 1.0
    # what the network predicts and how the loss weighs noise levels unless a run says otherwise
    native_prediction: str = "eps"
    native_weighting: str = "sigma2"

    # -- per-SDE closed forms ------------------------------------------------------------------
    @abstractmethod
    def _log_mean(self, t: Tensor) -> Tensor:
        """log alpha_t."""

    @abstractmethod
    def _var(self, t: Tensor) -> Tensor:
        """sigma_t^2."""

    @abstractmethod
    def _f(self, t: Tensor) -> Tensor:
        """The drift coefficient f(t) = d log alpha_t / dt."""

    @abstractmethod
    def _g2(self, t: Tensor) -> Tensor:
        """The squared diffusion g(t)^2."""

    @abstractmethod
    def _dvar(self, t: Tensor) -> Tensor:
        """d sigma_t^2 / dt."""

    def noise_label_range(self) -> tuple[float, float]:
        """The range of noise_label over [t_min, T], for the network's time embedding."""
        return (0.0, self.T)

    def noise_label(self, t: Tensor) -> Tensor:
        """The network's time input: t itself (VE overrides it with log sigma_t)."""
        return t

    def training_times(
        self, n: int, *, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """n training times, float64: uniform on [t_min, T] (EDM and flow override it)."""
        u = rand((n,), generator=generator, dtype=torch.float64, device=device)
        return self.t_min + u * (self.T - self.t_min)

    def velocity_coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """(f, g^2 / (2 sigma_t)) in float64: the velocity dx_t/dt = alpha' x_0 + sigma' eps has
        the conditional mean u(x, t) = f x + (g^2 / (2 sigma_t)) eps, the PF-ODE's drift."""
        t, _ = _t64(t)
        return self._f(t), self._g2(t) / (2 * self._var(t).sqrt())

    # -- the process -------------------------------------------------------------------------
    def mean_coeff(self, t: Tensor | float) -> Tensor:
        """alpha_t in x_t = alpha_t x_0 + sigma_t eps."""
        t, dtype = _t64(t)
        return self._log_mean(t).exp().to(dtype)

    def std(self, t: Tensor | float) -> Tensor:
        """sigma_t, the std of q(x_t | x_0)."""
        t, dtype = _t64(t)
        return self._var(t).sqrt().to(dtype)

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(t) x, the forward drift."""
        t, _ = _t64(t)
        return append_dims(self._f(t).to(x.dtype), x.ndim) * x

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t), the forward diffusion coefficient."""
        t, dtype = _t64(t)
        return self._g2(t).sqrt().to(dtype)

    def marginal(self, x0: Tensor, t: Tensor) -> Gaussian:
        """q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""
        a = append_dims(self.mean_coeff(t).to(x0.dtype), x0.ndim)
        var = append_dims((self.std(t) ** 2).to(x0.dtype), x0.ndim)
        return Gaussian(a * x0, var.expand_as(x0))

    def marginal_sample(
        self,
        x0: Tensor,
        t: Tensor,
        eps: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """x_t = alpha_t x_0 + sigma_t eps."""
        eps = randn_like(x0, generator) if eps is None else eps
        a = append_dims(self.mean_coeff(t).to(x0.dtype), x0.ndim)
        sigma = append_dims(self.std(t).to(x0.dtype), x0.ndim)
        return a * x0 + sigma * eps

    def prior_var(self) -> float:
        """Variance of the prior N(0, (alpha_T^2 + sigma_T^2) I): q(x_T) for unit-variance data."""
        t = torch.tensor(self.T, dtype=torch.float64)
        return float(self._log_mean(t).mul(2).exp() + self._var(t))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x_T from the prior."""
        z = randn(tuple(shape), generator=generator, dtype=dtype, device=device)
        return z * math.sqrt(self.prior_var())

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, prior_var I) per example, (B,)."""
        var = self.prior_var()
        d = x[0].numel()
        return -0.5 * flat_sum(x**2) / var - 0.5 * d * math.log(2 * math.pi * var)

    def reverse_drift(
        self, x: Tensor, t: Tensor, score: Tensor, *, probability_flow: bool = False
    ) -> Tensor:
        """f x - g^2 score (reverse SDE, run backwards in t) or f x - g^2 score / 2 (PF-ODE)."""
        t, _ = _t64(t)
        g2 = append_dims(self._g2(t).to(x.dtype), x.ndim)
        return self.drift(x, t) - (0.5 if probability_flow else 1.0) * g2 * score

    # -- the VP-equivalent view: the schedule interface of the samplers ------------------------
    def _log_scale2(self, t: Tensor) -> Tensor:
        return torch.log(torch.exp(2 * self._log_mean(t)) + self._var(t))

    def input_scale(self, t: Tensor | float) -> Tensor:
        """1 / sqrt(alpha_t^2 + sigma_t^2): x~ = input_scale x_t is a VP process."""
        t, dtype = _t64(t)
        return torch.exp(-0.5 * self._log_scale2(t)).to(dtype)

    def log_alpha_bar(self, t: Tensor | float) -> Tensor:
        """log alpha_bar_eq = log alpha_t^2 - log(alpha_t^2 + sigma_t^2), always float64:
        near t_min alpha_bar_eq is 1 - 2e-8 (VE), which float32 rounds to 1 (sigma = 0);
        the conversions in parameterization.py compute in the wider dtype and cast."""
        t, _ = _t64(t)
        return 2 * self._log_mean(t) - self._log_scale2(t)

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """alpha_bar_eq(t) of the VP-equivalent view."""
        return torch.exp(self.log_alpha_bar(t))

    def sigma(self, t: Tensor | float) -> Tensor:
        """sqrt(1 - alpha_bar_eq): the noise level of x~ (not sigma_t; see std)."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def log_snr(self, t: Tensor | float) -> Tensor:
        """2 log(alpha_t / sigma_t), strictly decreasing; the same in both coordinates."""
        t, dtype = _t64(t)
        return (2 * self._log_mean(t) - torch.log(self._var(t))).to(dtype)

    def beta_rate(self, t: Tensor | float) -> Tensor:
        """-d log alpha_bar_eq / dt = -2 f + (2 alpha^2 f + d sigma^2/dt) / (alpha^2 + sigma^2)."""
        t, dtype = _t64(t)
        f, a2 = self._f(t), torch.exp(2 * self._log_mean(t))
        out = -2 * f + (2 * a2 * f + self._dvar(t)) / (a2 + self._var(t))
        return out.to(dtype)

    def time_at_log_snr(self, log_snr: Tensor | float) -> Tensor:
        """The time in [0, T] with that log-SNR (float64): in closed form where the SDE has
        one (_time_at_log_snr), else by bisection to ~1e-15."""
        lam = torch.as_tensor(log_snr, dtype=torch.float64)
        closed = self._time_at_log_snr(lam)
        if closed is not None:
            return closed.clamp(0.0, self.T)
        lo, hi = torch.zeros_like(lam), torch.full_like(lam, self.T)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.log_snr(mid) > lam  # log-SNR decreases: the answer is later
            lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
        return (lo + hi) / 2

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        """t(lambda) in closed form, or None: time_at_log_snr then bisects."""
        return None

    def timesteps(self, steps: int | None = None) -> Tensor:
        """T = t_0 > ... > t_{K-1} = t_min, then t_K = 0 where samplers return x_0 (float64)."""
        steps = 1000 if steps is None else int(steps)
        if steps < 1:
            raise ScorelabError(f"steps must be >= 1, got {steps}")
        if steps == 1:
            return torch.tensor([self.T, 0.0], dtype=torch.float64)
        grid = torch.linspace(self.T, self.t_min, steps, dtype=torch.float64)
        return torch.cat([grid, grid.new_zeros(1)])

    @property
    def default_steps(self) -> int:
        return 1000

    @property
    def sampling_t_min(self) -> float:
        """The last positive time of a sampling grid (t = 0 is singular for the score)."""
        return self.t_min

    @property
    def likelihood_t0(self) -> float:
        """Where the likelihood's ODE starts by default: 1e-3 T (VP: sigma_t about 0.01)."""
        return 1e-3 * self.T

    def to_dict(self) -> dict:
        """The name and parameters that make_sde rebuilds this SDE from."""
        return {"name": self.name, **asdict(self)}  # type: ignore[call-overload]


def _check_positive(**values: float) -> None:
    for key, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ScorelabError(f"{key} must be a finite number > 0, got {value!r}")


@dataclass(frozen=True)
class VPSDE(SDE):
    """Variance preserving: the continuous limit of DDPM with beta_i = beta(t_i) / N."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    name = "vp"
    t_min = 1e-3

    def __post_init__(self) -> None:
        _check_positive(beta_min=self.beta_min, beta_max=self.beta_max)
        if self.beta_max < self.beta_min:
            raise ScorelabError("beta_max must be >= beta_min")

    def _beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _B(self, t: Tensor) -> Tensor:
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def _log_mean(self, t: Tensor) -> Tensor:
        return -0.5 * self._B(t)

    def _var(self, t: Tensor) -> Tensor:
        return -torch.expm1(-self._B(t))

    def _f(self, t: Tensor) -> Tensor:
        return -0.5 * self._beta(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self._beta(t)

    def _dvar(self, t: Tensor) -> Tensor:
        return self._beta(t) * torch.exp(-self._B(t))

    def _t_at_B(self, B: Tensor) -> Tensor:
        """The root t >= 0 of B(t) = beta_min t + (beta_max - beta_min) t^2 / 2, written
        2B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) to avoid cancellation."""
        slope = self.beta_max - self.beta_min
        return 2 * B / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * slope * B))

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        # lambda = -B - log(1 - e^-B), so e^B - 1 = e^-lambda: B = softplus(-lambda)
        return self._t_at_B(torch.nn.functional.softplus(-lam))


@dataclass(frozen=True)
class SubVPSDE(VPSDE):
    """sub-VP: the VP mean with a smaller variance, sigma_t = 1 - e^{-B} (Song et al. 2021)."""

    name = "subvp"

    def _var(self, t: Tensor) -> Tensor:
        return torch.expm1(-self._B(t)) ** 2

    def _g2(self, t: Tensor) -> Tensor:
        return self._beta(t) * -torch.expm1(-2 * self._B(t))

    def _dvar(self, t: Tensor) -> Tensor:
        B = self._B(t)
        return 2 * self._beta(t) * torch.exp(-B) * -torch.expm1(-B)

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        # lambda = log u - 2 log(1 - u), u = e^-B in (0, 1): r (1 - u)^2 = u with r = e^lambda,
        # whose root below 1 is u = 1 - (1 + s) / (2r + 1 + s), s = sqrt(4r + 1)
        r = torch.exp(lam)
        root = torch.sqrt(4 * r + 1)
        B = -torch.log1p(-(1 + root) / (2 * r + 1 + root))
        return self._t_at_B(B)


@dataclass(frozen=True)
class VESDE(SDE):
    """Variance exploding (NCSN's continuous limit): x_t = x_0 + sigma_t eps."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    name = "ve"
    t_min = 1e-5

    def __post_init__(self) -> None:
        _check_positive(sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ScorelabError("sigma_max must be > sigma_min")

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def _log_mean(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _var(self, t: Tensor) -> Tensor:
        return self.sigma_min**2 * torch.expm1(2 * t * self._log_ratio)

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return self._dvar(t)

    def _dvar(self, t: Tensor) -> Tensor:
        return self.sigma_min**2 * 2 * self._log_ratio * torch.exp(2 * t * self._log_ratio)

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        # lambda = -log sigma_t^2 = -log(sigma_min^2 (e^{2 t L} - 1)), L = log(sigma_max/sigma_min)
        shifted = -lam - 2 * math.log(self.sigma_min)
        return torch.nn.functional.softplus(shifted) / (2 * self._log_ratio)

    def noise_label_range(self) -> tuple[float, float]:
        t = torch.tensor([self.t_min, self.T], dtype=torch.float64)
        lo, hi = self.noise_label(t).tolist()
        return lo, hi

    def noise_label(self, t: Tensor) -> Tensor:
        """log sigma_t: the network sees the noise level, as NCSN and EDM do."""
        t, dtype = _t64(t)
        return (0.5 * torch.log(self._var(t))).to(dtype)


@dataclass(frozen=True)
class EDM(SDE):
    """EDM (Karras et al. 2022): x_t = x_0 + t eps, time = noise level sigma. Training draws
    log sigma ~ N(p_mean, p_std^2); the network is preconditioned with sigma_data (prediction
    "edm": D = c_skip x + c_out F(c_in x, c_noise), parameterization.py) and the loss weighs
    each level by lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (weighting
    "edm"), which is a unit weight on F. The default grid is its sigma^(1/rho) grid."""

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    p_mean: float = -1.2
    p_std: float = 1.2
    rho: float = 7.0

    name = "edm"
    native_prediction = "edm"
    native_weighting = "edm"
    # the grid "uniform" means here: time is the noise level, and uniform in sigma would spend
    # nearly every step at high noise; EDM's own is sigma^(1/rho) uniform (timesteps below)
    own_spacing = "karras"

    def __post_init__(self) -> None:
        _check_positive(
            sigma_min=self.sigma_min,
            sigma_max=self.sigma_max,
            sigma_data=self.sigma_data,
            p_std=self.p_std,
            rho=self.rho,
        )
        if self.sigma_max <= self.sigma_min:
            raise ScorelabError("sigma_max must be > sigma_min")
        if not math.isfinite(self.p_mean):
            raise ScorelabError(f"p_mean must be finite, got {self.p_mean!r}")

    @property
    def T(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def t_min(self) -> float:  # type: ignore[override]
        return self.sigma_min

    def _log_mean(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _var(self, t: Tensor) -> Tensor:
        return t**2

    def _f(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def _g2(self, t: Tensor) -> Tensor:
        return 2 * t

    def _dvar(self, t: Tensor) -> Tensor:
        return 2 * t

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        return torch.exp(-lam / 2)  # lambda = -2 log sigma

    def velocity_coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        t, _ = _t64(t)
        return torch.zeros_like(t), torch.ones_like(t)  # dx/dsigma = eps

    def training_times(
        self, n: int, *, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        """sigma = exp(p_mean + p_std z), z ~ N(0, 1) (EDM's log-normal; not clipped)."""
        z = randn((n,), generator=generator, dtype=torch.float64, device=device)
        return torch.exp(self.p_mean + self.p_std * z)

    def noise_label_range(self) -> tuple[float, float]:
        return math.log(self.sigma_min) / 4, math.log(self.sigma_max) / 4

    def noise_label(self, t: Tensor) -> Tensor:
        """c_noise = log(sigma) / 4 (EDM's Table 1)."""
        t, dtype = _t64(t)
        return (torch.log(t) / 4).to(dtype)

    def timesteps(self, steps: int | None = None) -> Tensor:
        """sigma_max = t_0 > ... > t_{K-1} = sigma_min with sigma^(1/rho) uniform, then 0."""
        steps = 18 if steps is None else int(steps)
        if steps < 1:
            raise ScorelabError(f"steps must be >= 1, got {steps}")
        if steps == 1:
            return torch.tensor([self.T, 0.0], dtype=torch.float64)
        w = torch.linspace(0, 1, steps, dtype=torch.float64)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        grid = (hi + w * (lo - hi)) ** self.rho
        grid[0], grid[-1] = self.sigma_max, self.sigma_min
        return torch.cat([grid, grid.new_zeros(1)])

    @property
    def default_steps(self) -> int:
        return 18  # EDM's CIFAR-10 setting: 35 network calls with Heun

    @property
    def likelihood_t0(self) -> float:
        """sigma = 0.01, the noise level of VP's and DDPM's default (not 1e-3 T = 0.08)."""
        return 0.01


@dataclass(frozen=True)
class Flow(SDE):
    """Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): x_t = (1 - t) x_0
    + (sigma_min + (1 - sigma_min) t) eps on t in [t_min, T], T = 1 - 1e-3 (at t = 1 the
    signal is gone and eps carries no information about the velocity). The network predicts
    the velocity (prediction "velocity"), regressed with unit weight (weighting "velocity") onto
    d x_t / dt = -x_0 + (1 - sigma_min) eps; training times are uniform, or logit-normal
    t = sigmoid(logit_mean + logit_std z) when logit_std > 0 (Esser et al. 2024)."""

    sigma_min: float = 0.0
    logit_mean: float = 0.0
    logit_std: float = 0.0

    name = "flow"
    T = 1.0 - 1e-3
    t_min = 1e-3
    native_prediction = "velocity"
    native_weighting = "velocity"

    def __post_init__(self) -> None:
        if not (isinstance(self.sigma_min, int | float) and 0 <= self.sigma_min < 1):
            raise ScorelabError(f"sigma_min must be in [0, 1), got {self.sigma_min!r}")
        if not (math.isfinite(self.logit_mean) and 0 <= self.logit_std < math.inf):
            raise ScorelabError("logit_mean must be finite and logit_std a finite number >= 0")

    def _sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min + (1 - self.sigma_min) * t

    def _log_mean(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)

    def _var(self, t: Tensor) -> Tensor:
        return self._sigma(t) ** 2

    def _f(self, t: Tensor) -> Tensor:
        return -1 / (1 - t)

    def _g2(self, t: Tensor) -> Tensor:
        s = self._sigma(t)
        return 2 * s * (1 - self.sigma_min) + 2 * s**2 / (1 - t)

    def _dvar(self, t: Tensor) -> Tensor:
        return 2 * self._sigma(t) * (1 - self.sigma_min)

    def _time_at_log_snr(self, lam: Tensor) -> Tensor | None:
        # (1 - t) / (sigma_min + (1 - sigma_min) t) = r = e^{lambda / 2}
        r = torch.exp(lam / 2)
        return (1 - r * self.sigma_min) / (1 + r * (1 - self.sigma_min))

    @property
    def likelihood_t0(self) -> float:
        """Where sigma_t / alpha_t = 0.01, the noise level of VP's and DDPM's default (t_min if
        sigma_min >= 0.01 keeps it above that everywhere)."""
        return max(float(self.time_at_log_snr(2 * math.log(100.0))), self.t_min)

    def velocity_coefficients(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        # g^2 / (2 sigma) = (1 - sigma_min) + sigma / (1 - t): no 0/0 at t = 0
        t, _ = _t64(t)
        return self._f(t), (1 - self.sigma_min) + self._sigma(t) / (1 - t)

    def training_times(
        self, n: int, *, generator: torch.Generator | None = None, device=None
    ) -> Tensor:
        if self.logit_std == 0:
            return super().training_times(n, generator=generator, device=device)
        z = randn((n,), generator=generator, dtype=torch.float64, device=device)
        return torch.sigmoid(self.logit_mean + self.logit_std * z).clamp(self.t_min, self.T)


SDES: dict[str, Callable[..., SDE]] = {
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "edm": EDM,
    "flow": Flow,
}


def make_sde(name: str = "vp", **params: float) -> SDE:
    """Build a named continuous-time process: make_sde('ve', sigma_max=50.0), make_sde('edm')."""
    if name not in SDES:
        raise ScorelabError(f"unknown process {name!r}; choose one of: {', '.join(SDES)}")
    try:
        return SDES[name](**params)
    except TypeError as e:
        raise ScorelabError(f"bad parameters for process {name!r}: {e}") from None


__all__ = ["EDM", "SDE", "SDES", "Flow", "SubVPSDE", "VESDE", "VPSDE", "make_sde"]
