"""The hybrid objective of improved DDPM (Nichol & Dhariwal 2021, section 3.1).

A network with a learned variance outputs 2C channels: eps (first C) and r (last C), with
v = (r + 1) / 2 and log Sigma_theta = v log beta_t + (1 - v) log beta_tilde_t. It is trained
with  L_hybrid = L_simple + lambda L_vlb,  L_vlb = sum_t L_t estimated by T L_t at the sampled
t, in bits per dimension; in L_vlb the mean's gradient is stopped (eps is detached), so L_simple
alone trains the mean and L_vlb the variance. lambda = 0.001 in the paper.

Optional importance sampling of t (their eq. 18): p_t proportional to sqrt(E[L_t^2]) over the
last 10 losses seen at each t, uniform until every t has 10, with the loss weighted by
1 / (T p_t) so its expectation is unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from scorelab._tensor import flat_mean, randn_like
from scorelab.objectives.denoising import sample_timesteps
from scorelab.processes.ddpm import q_sample, reverse_log_variance, vlb_term
from scorelab.typing import ModelFn, Schedule


def hybrid_loss(
    model_fn: ModelFn,
    x0: Tensor,
    *,
    schedule: Schedule,
    vlb_weight: float = 1e-3,
    generator: torch.Generator | None = None,
    t: Tensor | None = None,
    decoder: str = "gaussian",
) -> Tensor:
    """L_simple + vlb_weight * T * L_t (bits/dim) per example, (B,), for a learned variance."""
    if t is None:
        t = sample_timesteps(schedule, x0.shape[0], generator=generator, device=x0.device)
    eps = randn_like(x0, generator)
    x_t = q_sample(schedule, x0, t, eps)
    out = model_fn(x_t, t)
    if out.shape[1] != 2 * x0.shape[1] or out.shape[2:] != x0.shape[2:]:
        raise ValueError(
            f"a learned-variance model must output {2 * x0.shape[1]} channels, "
            f"got shape {tuple(out.shape)}"
        )
    eps_pred, r = out.chunk(2, dim=1)
    simple = flat_mean((eps_pred - eps) ** 2)
    log_var = reverse_log_variance(schedule, t, v=(r + 1) / 2)
    term = vlb_term(eps_pred.detach(), x0, x_t, t, schedule, log_var=log_var, decoder=decoder)
    vlb_bpd = term / (x0[0].numel() * math.log(2.0))
    return simple + vlb_weight * float(schedule.T) * vlb_bpd


class LossSecondMomentSampler:
    """Importance sampling of t in 1..T by the loss' second moment (improved DDPM, eq. 18)."""

    def __init__(self, T: int, *, history: int = 10, uniform_prob: float = 1e-3) -> None:
        self.T, self.history, self.uniform_prob = int(T), int(history), float(uniform_prob)
        self.losses = torch.zeros(self.T, self.history, dtype=torch.float64)
        self.counts = torch.zeros(self.T, dtype=torch.long)

    @property
    def warmed_up(self) -> bool:
        return bool((self.counts >= self.history).all())

    def probabilities(self) -> Tensor:
        """p_t for t = 1..T, (T,): uniform until every t has `history` losses."""
        if not self.warmed_up:
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        p = self.losses.pow(2).mean(dim=1).sqrt()
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, device=None
    ) -> tuple[Tensor, Tensor]:
        """n times (float, (n,)) and their loss weights 1 / (T p_t), (n,)."""
        p = self.probabilities()
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        weights = 1.0 / (self.T * p[idx])
        return (idx + 1).to(device=device, dtype=torch.float32), weights.to(
            device=device, dtype=torch.float32
        )

    def update(self, t: Tensor, losses: Tensor) -> None:
        """Record per-example losses at their times (oldest dropped per t)."""
        for ti, li in zip(
            t.detach().long().cpu().tolist(), losses.detach().cpu().tolist(), strict=True
        ):
            i = ti - 1
            if self.counts[i] >= self.history:
                self.losses[i] = torch.roll(self.losses[i], -1)
                self.losses[i, -1] = li
            else:
                self.losses[i, self.counts[i]] = li
            self.counts[i] += 1
