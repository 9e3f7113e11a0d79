"""The maths of the forward process q: schedules, marginals, posteriors, parameterizations."""

from scorelab.processes.ddpm import (
    VARIANCES,
    Gaussian,
    ReverseStep,
    p_mean_variance,
    posterior_variance,
    q_marginal,
    q_posterior,
    q_posterior_mean_eps,
    q_sample,
    q_step,
    score_step_coefficients,
)
from scorelab.processes.parameterization import (
    as_eps_fn,
    convert,
    denoiser_from_eps,
    from_denoiser,
    from_eps,
    from_score,
    score_from_eps,
    target,
    to_eps,
)
from scorelab.processes.schedules import SCHEDULES, DiscreteSchedule, make_schedule

__all__ = [
    "SCHEDULES",
    "VARIANCES",
    "DiscreteSchedule",
    "Gaussian",
    "ReverseStep",
    "as_eps_fn",
    "convert",
    "denoiser_from_eps",
    "from_denoiser",
    "from_eps",
    "from_score",
    "make_schedule",
    "p_mean_variance",
    "posterior_variance",
    "q_marginal",
    "q_posterior",
    "q_posterior_mean_eps",
    "q_sample",
    "q_step",
    "score_from_eps",
    "score_step_coefficients",
    "target",
    "to_eps",
]
