"""Shared fixtures: seeded generators, float64 defaults for identities, exact mixtures."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from scorelab.oracle import GaussianMixture

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def mixture_2d() -> GaussianMixture:
    """Three well-separated components of unequal weights and different spreads."""
    return GaussianMixture(
        weights=torch.tensor([0.5, 0.3, 0.2]),
        means=torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]),
        variances=torch.tensor([[0.09, 0.25], [0.16, 0.16], [0.04, 0.09]]),
    )
