"""Sliced Wasserstein: zero on identical sets, exact on shifts."""

import torch

from scorelab.evaluation import sliced_wasserstein


def test_identical_sets_have_zero_distance(generator):
    x = torch.randn(500, 3, generator=generator)
    assert sliced_wasserstein(x, x) == 0


def test_one_dimensional_shift_is_exact(generator):
    x = torch.randn(1000, 1, generator=generator, dtype=torch.float64)
    assert abs(sliced_wasserstein(x, x + 0.7) - 0.7) < 1e-9


def test_shift_in_d_dimensions_averages_the_projections(generator):
    """SW_2 of a shift m is sqrt(mean_theta (theta . m)^2) for the directions used."""
    x = torch.randn(2000, 4, generator=generator, dtype=torch.float64)
    m = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(11)
    got = sliced_wasserstein(x, x + m, n_projections=64, generator=g)
    theta = torch.randn(4, 64, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    assert abs(got - float(((m @ theta) ** 2).mean().sqrt())) < 1e-9


def test_unequal_sizes_and_scale(generator):
    x = torch.randn(3000, 2, generator=generator, dtype=torch.float64)
    y = 2 * torch.randn(1000, 2, generator=generator, dtype=torch.float64)
    # W_2 between N(0, 1) and N(0, 4) in 1-D is |2 - 1| = 1 on every projection
    assert abs(sliced_wasserstein(x, y) - 1.0) < 0.1
