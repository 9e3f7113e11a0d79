"""Posterior sampling without gradients through the network: DDNM, RePaint, SDEdit.

Each replaces part of the sample by what the observation says instead of approximating
grad log p_t(y | x_t): DDNM in x_0 (range-null space decomposition with the SVD), RePaint in
x_t (the observed pixels forward-noised), SDEdit only at the start (the noised A^+ y). All run
in the VP view (a_t^2 + sigma_t^2 = 1) on the sampler grid (docs/theory.md §31).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import batch_times, randn_like
from scorelab.operators import LinearOperator, Mask
from scorelab.posterior.guided import ETA, ddim_step
from scorelab.posterior.registry import register_method
from scorelab.processes.parameterization import from_eps
from scorelab.samplers.ddim import sample_ddim
from scorelab.samplers.registry import Option, at_least, between, positive
from scorelab.samplers.timesteps import grid_coefficients
from scorelab.typing import EpsFn, Schedule


@register_method(
    "ddnm",
    summary="x0_hat -> x0_hat - Lambda A^+ (A x0_hat - y), then the DDPM posterior step (DDNM+)",
    paper="Wang, Yu & Zhang 2023 (Denoising Diffusion Null-Space Model)",
    nfe="1 per step",
    operator="svd",
)
@torch.no_grad()
def sample_ddnm(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DDNM (Wang et al. 2023, Algorithm 1) with DDNM+'s noise handling (their eqs. 17-19).

    With A = U diag(s) V^T and the DDPM posterior q(x_s | x_t, x_0) = N(c0 x_0 + ct x_t, v I) on
    the grid, x0_hat is corrected per spectral coordinate, x0c = x0_hat - V diag(lambda)
    (V^T x0_hat - U^T y / s), with lambda_i = min(1, sqrt(v) s_i / (c0 sigma_y)): the noise
    c0 lambda sigma_y / s_i that A^+ y carries into x_s never exceeds the step's own, and the
    step adds only the rest, variance v - (c0 lambda_i sigma_y / s_i)^2 along V (v elsewhere).
    sigma_y = 0 gives lambda = 1: x0c = A^+ y + (I - A^+ A) x0_hat, the plain DDNM, whose
    samples satisfy A x = y exactly. Not an approximation of grad log p_t(y | x_t): it is exact
    when the null-space part of x_0 is independent of the observed part (a Mask on data with
    independent coordinates, sigma_y = 0), and biased otherwise (the null space is filled from
    x0_hat without conditioning on y).
    """
    svd = operator.svd()
    s = svd.s.to(x.device)
    observed = s > 0
    target = svd.ut(y) / torch.where(observed, s, 1.0).to(y.dtype)  # (1, r): U^T y / s
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        ab_t, ab_s = g.alpha_bar[i], g.alpha_bar[i + 1]
        c0 = math.sqrt(ab_s) * (1 - ab_t / ab_s) / (1 - ab_t)
        ct = math.sqrt(ab_t / ab_s) * (1 - ab_s) / (1 - ab_t)
        var = max((1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s), 0.0)
        y_noise = c0 * sigma_y / torch.where(observed, s, 1.0)  # std that A^+ y brings, (r,)
        lam = torch.where(y_noise <= math.sqrt(var), 1.0, math.sqrt(var) / y_noise)
        lam = torch.where(observed, lam, 0.0)
        x0 = from_eps(eps_fn(x, batch_times(timesteps[i], x)), "x0", x, ab_t)
        x0 = x0 - svd.v((lam.to(x.dtype)) * (svd.vt(x0) - target))
        mean = c0 * x0 + ct * x
        if var == 0:
            x = mean
            continue
        z = randn_like(x, generator)
        gamma = (var - (lam * y_noise) ** 2).clamp_min(0)  # clamp: rounding at lambda < 1
        extra = (gamma.sqrt() - math.sqrt(var)).to(x.dtype)
        x = mean + math.sqrt(var) * z + svd.v(extra * svd.vt(z))
    return x


@register_method(
    "diffpir",
    summary="x0_hat -> argmin ||y - A z||^2 + rho_t ||z - x0_hat||^2, re-noised (zeta)",
    paper="Zhu et al. 2023 (Denoising Diffusion Models for Plug-and-Play Image Restoration)",
    nfe="1 per step",
    operator="svd",
    spacing="quadratic",
    options={
        "lam": Option(
            float, 7.0, "lambda in rho_t = lambda sigma_y^2 / sigmabar_t^2", check=positive
        ),
        "zeta": Option(float, 0.3, "share of fresh noise in the re-noising", check=between(0, 1)),
    },
)
@torch.no_grad()
def sample_diffpir(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float,
    *,
    lam: float = 7.0,
    zeta: float = 0.3,
    generator: torch.Generator | None = None,
) -> Tensor:
    """DiffPIR (Zhu et al. 2023, Algorithm 1): half-quadratic splitting with the diffusion
    model as the denoiser. At each step x0_hat is replaced by the proximal point

        z = argmin_z ||y - A z||^2 + rho_t ||z - x0_hat||^2,   rho_t = lam sigma_y^2 / sigmabar_t^2,

    sigmabar_t^2 = (1 - abar_t) / abar_t, solved per spectral coordinate with A = U diag(s) V^T:
    V^T z = (s U^T y + rho V^T x0_hat) / (s^2 + rho) (the null space keeps x0_hat's), and the
    next sample is a_s z + sigma_s (sqrt(1 - zeta) eps_hat + sqrt(zeta) n), eps_hat the noise
    that x_t implies for z. sigma_y = 0 gives rho = 0: A z = y exactly (DDNM's projection).
    Like DDNM it does not approximate grad log p_t(y | x_t): the prox is the MAP of a Gaussian
    p(x_0 | x_t) of variance sigmabar_t^2 / lam around x0_hat, biased where that is not the
    posterior's spread. Its own grid is quadratic (steps dense near t = 0).
    """
    svd = operator.svd()
    s = svd.s.to(x.device)
    observed = s > 0
    y_bar = svd.ut(y).to(torch.float64)  # (1, r)
    g = grid_coefficients(schedule, timesteps)
    for i in range(len(timesteps) - 1):
        ab_t = g.alpha_bar[i]
        x0 = from_eps(eps_fn(x, batch_times(timesteps[i], x)), "x0", x, ab_t)
        rho = lam * sigma_y**2 * ab_t / (1 - ab_t)
        u = svd.vt(x0).to(torch.float64)
        denom = torch.where(observed, s**2 + rho, 1.0)
        z = torch.where(observed, (s * y_bar + rho * u) / denom, u)
        x0 = x0 + svd.v((z - u).to(x.dtype))
        if timesteps[i + 1] == 0:
            x = x0
            continue
        eps_hat = (x - g.signal[i] * x0) / g.sigma[i]
        noise = math.sqrt(1 - zeta) * eps_hat + math.sqrt(zeta) * randn_like(x, generator)
        x = g.signal[i + 1] * x0 + g.sigma[i + 1] * noise
    return x


def repaint_path(steps: int, jump_length: int, resample: int) -> list[int]:
    """Grid indices visited: down one index per step; at every jump_length-th index (before
    the last) go back up jump_length indices, resample - 1 times (Lugmayr et al. 2022, §4.2)."""
    jumps = dict.fromkeys(range(jump_length, steps, jump_length), resample - 1)
    path, i = [0], 0
    while i < steps:
        i += 1
        path.append(i)
        if jumps.get(i, 0) > 0:
            jumps[i] -= 1
            for _ in range(jump_length):
                i -= 1
                path.append(i)
    return path


@register_method(
    "repaint",
    summary="observed pixels from the forward-noised y, the rest from ancestral steps; resampling",
    paper="Lugmayr et al. 2022 (RePaint)",
    nfe="K + (resample - 1) jump_length floor((K - 1) / jump_length)",
    operator="mask",
    options={
        "jump_length": Option(int, 5, "grid steps of each jump back up", check=at_least(1)),
        "resample": Option(
            int, 2, "visits of each jump point (1: no resampling)", check=at_least(1)
        ),
    },
)
@torch.no_grad()
def sample_repaint(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    operator: Mask,
    y: Tensor,
    sigma_y: float,
    *,
    jump_length: int = 5,
    resample: int = 2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1): x_s = m * (a_s A^T y + sigma_s z) +
    (1 - m) * (ancestral step from x_t), and jumps back up by the forward kernel
    x_t = sqrt(abar_t / abar_s) x_s + sqrt(1 - abar_t / abar_s) z.

    No approximation of grad log p_t(y | x_t): the unobserved part evolves under the prior's
    reverse process next to a noised copy of y. Exact for data whose observed and unobserved
    coordinates are independent; otherwise the two parts are harmonized only approximately
    (resampling helps). It treats y as noiseless: with sigma_y = 0 the observed entries of the
    result are exactly y; for sigma_y > 0 they are the noisy y.
    """
    mask = operator.mask.to(x.device)
    known = operator.transpose(y)  # (1, *shape), zero where unobserved
    g = grid_coefficients(schedule, timesteps)
    path = repaint_path(len(timesteps) - 1, jump_length, resample)
    for i, j in zip(path, path[1:], strict=False):
        if j > i:  # down: the reverse step for the unknown part, noised y for the known
            eps = eps_fn(x, batch_times(timesteps[i], x))
            unknown = ddim_step(eps, x, schedule, timesteps[i : j + 1], 1.0, generator)
            noisy_y = g.signal[j] * known + g.sigma[j] * randn_like(x, generator)
            x = torch.where(mask, noisy_y, unknown)
        else:  # up: forward-noise from the lower time t_i to t_j
            ratio = g.alpha_bar[j] / g.alpha_bar[i]
            x = math.sqrt(ratio) * x + math.sqrt(1 - ratio) * randn_like(x, generator)
    return x


@register_method(
    "sdedit",
    summary="A^+ y noised to t0 T, then DDIM (eta) from there to 0",
    paper="Meng et al. 2022 (SDEdit)",
    nfe="1 per step",
    options={
        "t0": Option(float, 0.5, "start time as a fraction of T", check=between(1e-6, 1)),
        "eta": ETA,
    },
)
@torch.no_grad()
def sample_sdedit(
    eps_fn: EpsFn,
    x: Tensor,
    schedule: Schedule,
    timesteps: Tensor,
    operator: LinearOperator,
    y: Tensor,
    sigma_y: float,
    *,
    t0: float = 0.5,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """SDEdit (Meng et al. 2022): x_{t0} = a_{t0} A^+ y + sigma_{t0} z (z is the prior draw x),
    then DDIM on the grid scaled by t0 (the same K steps between t0 T and 0).

    No likelihood term at all: grad log p_t(y | x_t) is taken as 0 after the start, which is
    what makes it an editor (realism vs faithfulness set by t0) rather than a posterior sampler.
    t0 -> 0 returns ~ A^+ y; t0 = 1 forgets y. Measurement consistency is not enforced.
    """
    grid = timesteps * t0
    ab = float(schedule.alpha_bar(grid[:1].to(torch.float64)))
    start = math.sqrt(ab) * operator.pinv(y) + math.sqrt(1 - ab) * x
    return sample_ddim(eps_fn, start, schedule, grid, eta=eta, generator=generator)
