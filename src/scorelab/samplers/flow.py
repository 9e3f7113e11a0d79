"""Flow-native ODE solvers: Euler, midpoint and Heun on dx_t/dt = u(x_t, t) in the process's own
coordinates (Lipman et al. 2023; Liu et al. 2023).

u is the velocity, the probability-flow ODE's drift, u = f(t) x + (g(t)^2 / (2 sigma_t)) eps
(velocity_coefficients; processes/sde.py). For flow matching's x_t = (1 - t) x_0 + t eps it is
the network's own output and these are the solvers of its papers: Euler in t is rectified
flow's sampler. They run on every process (on a DDPM schedule, in its VP-SDE), which
samplers.sample hands over in the VP view x~ = c_t x_t: each step maps to x_t = x~ / c_t,
steps there and maps back. The last step, to t = 0, returns the x0 prediction, as every
sampler does; on the flow process that is exactly Euler's step x - t u.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab._tensor import batch_times
from scorelab.processes.parameterization import from_eps
from scorelab.samplers.registry import register_sampler
from scorelab.typing import Callback, EpsFn, Schedule


def _coefficients(schedule: Schedule, t: float) -> tuple[float, float, float, float]:
    """(c_t, f, b, alpha_bar) at one time as floats: x~ = c_t x, u = f x + b eps."""
    tt = torch.tensor([t], dtype=torch.float64)
    f, b = schedule.velocity_coefficients(tt)  # type: ignore[attr-defined]
    c = float(schedule.input_scale(tt).to(torch.float64))
    return c, float(f), float(b), float(schedule.alpha_bar(tt).to(torch.float64))


def _flow_ode(eps_fn, x, schedule, timesteps, *, method, callback):
    times = timesteps.tolist()
    cache: dict[float, tuple[float, float, float, float]] = {}  # each time's floats, once

    def coefficients(t: float) -> tuple[float, float, float, float]:
        if t not in cache:
            cache[t] = _coefficients(schedule, t)
        return cache[t]

    def _velocity(x: Tensor, t: float, x0: bool = False) -> tuple[Tensor, Tensor | None]:
        """u(x, t) in native coordinates x = x_t, and (x0=True) the x0 prediction there."""
        c, f, b, alpha_bar = coefficients(t)
        xt = c * x  # the VP view the eps_fn takes
        eps = eps_fn(xt, batch_times(t, x))
        pred = from_eps(eps, "x0", xt, alpha_bar) if x0 else None
        return torch.add(f * x, eps, alpha=b), pred

    x = x / coefficients(times[0])[0]  # native x_t
    for i in range(len(times) - 1):
        t, t_next = times[i], times[i + 1]
        u, x0 = _velocity(x, t, x0=t_next == 0 or callback is not None)
        if t_next == 0:
            x = x0
        elif method == "euler":
            x = x + (t_next - t) * u
        elif method == "midpoint":
            h = t_next - t
            u_mid, _ = _velocity(x + (h / 2) * u, t + h / 2)
            x = x + h * u_mid
        else:  # heun
            h = t_next - t
            x_pred = x + h * u
            u_next, _ = _velocity(x_pred, t_next)
            x = x + (h / 2) * (u + u_next)
        if callback is not None:
            c_next = coefficients(t_next)[0] if t_next > 0 else 1.0
            callback(i, batch_times(t_next, x), c_next * x, x0)
    return x  # t = 0: c = 1, native and VP view agree


@register_sampler(
    "flow-euler",
    summary="Euler on dx_t/dt = u(x_t, t) in the process's own t (rectified flow's sampler)",
    paper="Liu et al. 2023; Lipman et al. 2023",
    nfe="1 per step",
)
@torch.no_grad()
def sample_flow_euler(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler steps x <- x + (t' - t) u(x, t) in native coordinates."""
    return _flow_ode(eps_fn, x, schedule, timesteps, method="euler", callback=callback)


@register_sampler(
    "flow-midpoint",
    summary="explicit midpoint (2nd order) on dx_t/dt = u(x_t, t) in the process's own t",
    paper="Lipman et al. 2023 (flow_matching's midpoint solver)",
    nfe="2 per step, 1 on the last",
)
@torch.no_grad()
def sample_flow_midpoint(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Midpoint steps x <- x + h u(x + h/2 u(x, t), t + h/2), h = t' - t."""
    return _flow_ode(eps_fn, x, schedule, timesteps, method="midpoint", callback=callback)


@register_sampler(
    "flow-heun",
    summary="Heun (trapezoidal, 2nd order) on dx_t/dt = u(x_t, t) in the process's own t",
    paper="Lipman et al. 2023; Karras et al. 2022",
    nfe="2 per step, 1 on the last",
)
@torch.no_grad()
def sample_flow_heun(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """Heun steps x <- x + h/2 (u(x, t) + u(x + h u, t')), h = t' - t."""
    return _flow_ode(eps_fn, x, schedule, timesteps, method="heun", callback=callback)
