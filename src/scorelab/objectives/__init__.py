"""Losses: pure functions returning one value per example, shape (B,)."""

from scorelab.objectives.denoising import diffusion_loss, sample_timesteps

OBJECTIVES: tuple[str, ...] = ("eps", "x0", "v")

__all__ = ["OBJECTIVES", "diffusion_loss", "sample_timesteps"]
