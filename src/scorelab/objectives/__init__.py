"""Losses: pure functions returning one value per example, shape (B,)."""

from scorelab.objectives.conditional import classifier_loss, drop_labels
from scorelab.objectives.denoising import diffusion_loss, sample_timesteps
from scorelab.objectives.hybrid import LossSecondMomentSampler, hybrid_loss
from scorelab.objectives.score_matching import (
    SCORE_OBJECTIVES,
    TSM_BLENDS,
    WEIGHTINGS,
    esm_loss,
    fisher_scale,
    ism_loss,
    score_matching_loss,
    ssm_loss,
    tsm_target,
    tsm_weight,
)

# eps, x0, v: the discrete schedule's denoising loss (diffusion_loss), named by what the
# network predicts; hybrid: L_simple + lambda L_vlb for a learned-variance network predicting
# eps; dsm, ism, ssm, tsm: score matching on an SDE (score_matching_loss).
DENOISING_OBJECTIVES: tuple[str, ...] = ("eps", "x0", "v")
OBJECTIVES: tuple[str, ...] = DENOISING_OBJECTIVES + ("hybrid",) + SCORE_OBJECTIVES

__all__ = [
    "DENOISING_OBJECTIVES",
    "OBJECTIVES",
    "LossSecondMomentSampler",
    "SCORE_OBJECTIVES",
    "TSM_BLENDS",
    "WEIGHTINGS",
    "classifier_loss",
    "diffusion_loss",
    "drop_labels",
    "esm_loss",
    "fisher_scale",
    "hybrid_loss",
    "ism_loss",
    "sample_timesteps",
    "score_matching_loss",
    "ssm_loss",
    "tsm_target",
    "tsm_weight",
]
