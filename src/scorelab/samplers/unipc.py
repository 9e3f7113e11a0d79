"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and a corrector (UniC) that reuses
the network call at the predicted point, so the corrector costs no extra NFE.

In lambda = log(a / sigma) with the x0 prediction m (data prediction), a step s -> t of size
h = lambda_t - lambda_s is

  x_t = (sigma_t / sigma_s) x_s - a_t (e^{-h} - 1) m_s - a_t B(h) sum_k rho_k D_k,

with D_k = (m_{s_k} - m_s) / r_k the divided differences at the earlier points s_k
(r_k = (lambda_{s_k} - lambda_s) / h < 0) and B(h) = -h ("bh1") or e^{-h} - 1 ("bh2"). The
weights rho solve R rho = b, R_jk = r_k^j (j = 0..p-1), b_j = j! phi_{j+1}(h) / B(h) with
phi_1 = (e^{-h} - 1) / (-h) - 1, phi_{j+1} = phi_j / (-h) - 1 / (j + 1)!: the predictor of
order p uses the p - 1 earlier points (rho = 1/2 at p = 2); the corrector adds the point t
itself (r = 1, D = m_t - m_s, with m_t the network at the predicted x_t) and re-does the step
with p points, which raises the order by one (Zhao et al. 2023, Theorem 3.1). The corrected
x_t and m_t then start the next step. The last step to t = 0 returns the x0 prediction.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import batch_times
from scorelab.errors import ScorelabError
from scorelab.processes.parameterization import from_eps
from scorelab.samplers.registry import Option, register_sampler
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import Callback, EpsFn, Schedule

VARIANTS = ("bh1", "bh2")


def unipc_weights(
    rks: list[float], h: float, order: int, variant: str
) -> tuple[float, float, list[float]]:
    """(phi1 = e^{-h} - 1, B(h), rho) for a step of the given order; rks are the r of the
    points used besides s, the corrector's last one being 1. The predictor passes order - 1
    earlier points; the corrector order - 1 earlier points and 1.0."""
    hh = -h
    phi1 = math.expm1(hh)
    b_h = hh if variant == "bh1" else phi1
    phi_k = phi1 / hh - 1
    factorial = 1
    b = []
    for j in range(1, order + 1):
        b.append(phi_k * factorial / b_h)
        factorial *= j + 1
        phi_k = phi_k / hh - 1 / factorial
    n = len(rks)
    if n == 0:
        return phi1, b_h, []
    if n == 1:  # the second-order predictor and the first-order corrector: rho = 1/2
        return phi1, b_h, [0.5]
    R = torch.tensor([[r**j for r in rks] for j in range(n)], dtype=torch.float64)
    rho = torch.linalg.solve(R, torch.tensor(b[:n], dtype=torch.float64))
    return phi1, b_h, rho.tolist()


def _differences(
    ms: list[Tensor], lam: list[float], j: int, h: float, used: int
) -> tuple[list[float], list[Tensor]]:
    """r_k = (lambda_{j-k} - lambda_j) / h and D_k = (m_{j-k} - m_j) / r_k for k = 1..used-1,
    the earlier points of a step from grid point j (ms ends with m_j)."""
    rks = [(lam[j - k] - lam[j]) / h for k in range(1, used)]
    return rks, [(ms[-1 - k] - ms[-1]) / r for k, r in enumerate(rks, start=1)]


def _step(x, m_s, diffs, rho, phi1, b_h, ratio, a_t):
    """(sigma_t / sigma_s) x - a_t phi1 m_s - a_t B(h) sum rho_k D_k, as one weighted sum."""
    out = torch.add(ratio * x, m_s, alpha=-a_t * phi1)
    for r, d in zip(rho, diffs, strict=True):
        out = out.add_(d, alpha=-a_t * b_h * r)
    return out


@register_sampler(
    "unipc",
    summary="UniPC: multistep predictor-corrector in log-SNR, data prediction, order=1|2|3",
    paper="Zhao et al. 2023",
    nfe="1 per step (the corrector reuses the next step's call)",
    spacing="logsnr",
    options={
        "order": Option(int, 2, "predictor order (the corrector adds one)", choices=(1, 2, 3)),
        "variant": Option(str, "bh2", "B(h): bh1 = -h, bh2 = e^-h - 1", choices=VARIANTS),
        "corrector": Option(bool, True, "apply UniC (false: UniP alone)"),
    },
)
@torch.no_grad()
def sample_unipc(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    *,
    order: int = 2,
    variant: str = "bh2",
    corrector: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> Tensor:
    """UniPC-p (UniP-p with UniC) in data prediction, multistep; lower orders while the
    history is short (module docstring)."""
    if order not in (1, 2, 3):
        raise ScorelabError(f"order must be 1, 2 or 3, got {order}")
    if variant not in VARIANTS:
        raise ScorelabError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    g = grid_coefficients(schedule, timesteps)
    lam = (schedule.log_snr(timesteps[:-1].to(torch.float64)) / 2).tolist()
    ms: list[Tensor] = []  # x0 predictions at the grid points so far, oldest first
    x_prev, used = x, 0  # the step's start and the order the last predictor used
    for i in range(len(timesteps) - 1):
        t = batch_times(timesteps[i], x)
        m = from_eps(eps_fn(x, t), "x0", x, g.alpha_bar[i])
        if corrector and i > 0:  # re-do step i - 1 -> i with m at the predicted point
            h = lam[i] - lam[i - 1]
            rks, diffs = _differences(ms, lam, i - 1, h, used)
            phi1, b_h, rho = unipc_weights([*rks, 1.0], h, used, variant)
            diffs.append(m - ms[-1])
            ratio = g.sigma[i] / g.sigma[i - 1]
            x = _step(x_prev, ms[-1], diffs, rho, phi1, b_h, ratio, g.signal[i])
        ms = (ms + [m])[-order:]
        if timesteps[i + 1] == 0:
            x = m
        else:
            used = min(order, len(ms))
            h = lam[i + 1] - lam[i]
            rks, diffs = _differences(ms, lam, i, h, used)
            phi1, b_h, rho = unipc_weights(rks, h, used, variant)
            x_prev = x
            x = _step(
                x, ms[-1], diffs, rho, phi1, b_h, g.sigma[i + 1] / g.sigma[i], g.signal[i + 1]
            )
        if callback is not None:
            callback(i, batch_times(timesteps[i + 1], x), x, m)
    return x
