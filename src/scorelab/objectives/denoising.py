"""Denoising objectives of the discrete process: one loss, the parameterization is data.

L_simple (Algorithm 1 of Ho et al. 2020): E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2;
the x_0 regression (docs/theory.md §7): E || x_0 - D_theta(x_t, t) ||^2; likewise for v or the
score.
t is uniform on {1, ..., T}; x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.
Returns one value per example, shape (B,): the mean squared error over the other dims.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab._tensor import flat_mean, randn_like
from scorelab.processes.ddpm import q_sample
from scorelab.processes.parameterization import check_prediction, target
from scorelab.typing import ModelFn, Prediction, Schedule


def sample_timesteps(
    schedule: Schedule, n: int, *, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """n integer times uniform on {1, ..., T}, as floats (Algorithm 1, line 3)."""
    gen_device = generator.device if generator is not None else device
    t = torch.randint(1, int(schedule.T) + 1, (n,), generator=generator, device=gen_device)
    return t.to(device=device, dtype=torch.float32)


def diffusion_loss(
    model_fn: ModelFn,
    x0: Tensor,
    *,
    schedule: Schedule,
    prediction: Prediction = "eps",
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """|| target - model(x_t, t) ||^2 averaged over dims, (B,); target = eps, x0, v or score."""
    check_prediction(prediction)
    if t is None:
        t = sample_timesteps(schedule, x0.shape[0], generator=generator, device=x0.device)
    eps = randn_like(x0, generator)
    x_t = q_sample(schedule, x0, t, eps)
    pred = model_fn(x_t, t)
    if pred.shape != x0.shape:
        raise ValueError(f"model output shape {tuple(pred.shape)} != data shape {tuple(x0.shape)}")
    return flat_mean((pred - target(prediction, x0, eps, schedule.alpha_bar(t))) ** 2)
