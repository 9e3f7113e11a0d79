"""Objectives with labels: label dropout for classifier-free guidance, and the cross-entropy of
a noise-aware classifier p_phi(y | x_t, t) on x_t from the forward process.

Label dropout (Ho & Salimans 2022): each label is replaced by the null class with probability
p, so one network learns eps(x_t, t, y) and eps(x_t, t, null) = the unconditional eps.
The classifier (Dhariwal & Nichol 2021) is trained on x_t = sqrt(alpha_bar_t) x_0 +
sqrt(1 - alpha_bar_t) eps with t uniform on {1, ..., T}, as the denoising loss draws it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab._tensor import randn_like
from scorelab.objectives.denoising import sample_timesteps
from scorelab.processes.ddpm import q_sample
from scorelab.typing import ClassifierFn, Schedule


def drop_labels(
    y: Tensor, p: float, null_label: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """y with each entry replaced by null_label with probability p, (B,)."""
    if p <= 0:
        return y
    gen_device = generator.device if generator is not None else y.device
    drop = torch.rand(y.shape, generator=generator, device=gen_device).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null_label), y)


def classifier_loss(
    classifier_fn: ClassifierFn,
    x0: Tensor,
    y: Tensor,
    *,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
) -> Tensor:
    """Cross-entropy -log p_phi(y | x_t, t) per example, (B,), x_t from q(x_t | x_0)."""
    if t is None:
        t = sample_timesteps(schedule, x0.shape[0], generator=generator, device=x0.device)
    x_t = q_sample(schedule, x0, t, randn_like(x0, generator))
    logits = classifier_fn(x_t, t)
    return torch.nn.functional.cross_entropy(logits.float(), y, reduction="none")


__all__ = ["classifier_loss", "drop_labels"]
