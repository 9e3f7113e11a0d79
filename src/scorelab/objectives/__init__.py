"""Losses: pure functions returning one value per example, shape (B,)."""

from scorelab.objectives.denoising import diffusion_loss, sample_timesteps
from scorelab.objectives.hybrid import LossSecondMomentSampler, hybrid_loss

# "hybrid": L_simple + lambda L_vlb for a learned-variance network predicting eps
OBJECTIVES: tuple[str, ...] = ("eps", "x0", "v", "hybrid")

__all__ = [
    "OBJECTIVES",
    "LossSecondMomentSampler",
    "diffusion_loss",
    "hybrid_loss",
    "sample_timesteps",
]
