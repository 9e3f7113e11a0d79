"""scorelab: diffusion generative models whose math is checked against exact answers."""

from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.processes import (
    DiscreteSchedule,
    as_eps_fn,
    convert,
    from_denoiser,
    from_score,
    make_schedule,
    q_posterior,
    q_sample,
    score_from_eps,
)
from scorelab.samplers import SAMPLERS, SampleResult, sample

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "DiscreteSchedule",
    "GaussianMixture",
    "SampleResult",
    "__version__",
    "as_eps_fn",
    "convert",
    "from_denoiser",
    "from_score",
    "make_schedule",
    "q_posterior",
    "q_sample",
    "ring_mixture",
    "sample",
    "score_from_eps",
]
