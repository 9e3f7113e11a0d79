"""Numerical tools the maths core shares: ODE integration and divergences (exact, Hutchinson)."""

from scorelab.numerics.divergence import (
    PROBES,
    divergence,
    divergence_exact,
    divergence_hutchinson,
    sample_probes,
)
from scorelab.numerics.odeint import odeint_rk45

__all__ = [
    "PROBES",
    "divergence",
    "divergence_exact",
    "divergence_hutchinson",
    "odeint_rk45",
    "sample_probes",
]
