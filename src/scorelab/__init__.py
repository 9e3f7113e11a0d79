"""scorelab: diffusion generative models whose math is checked against exact answers."""

from scorelab import posterior
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


def load_diffusers(path):  # type: ignore[no-untyped-def]
    """A local diffusers DDPM pipeline folder (or a bare UNet2DModel folder with its
    scheduler config) as a scorelab run: the same eps_fn, schedule and sample(...) as a
    loaded scorelab run (scorelab.runs.diffusers.load_diffusers; needs diffusers)."""
    from scorelab.runs.diffusers import load_diffusers as load

    return load(path)


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
    "load_diffusers",
    "make_schedule",
    "posterior",
    "q_posterior",
    "q_sample",
    "ring_mixture",
    "sample",
    "score_from_eps",
]
