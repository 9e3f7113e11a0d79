"""Sliced Wasserstein: zero on identical sets, exact on shifts, the sorted-sample formula in 1-D
and a loop over directions in 3-D."""

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


def test_one_dimensional_equal_sizes_is_the_sorted_sample_formula(generator):
    """In 1-D every direction is +-1 and W_2 between two empirical distributions of n points is
    sqrt(mean_i (x_(i) - y_(i))^2) over the sorted samples: 7 points against 7 of another
    scale, with the formula summed here by hand. Catches a projection left unsorted (a shift,
    the old test, cannot see it), W_1 for W_2, and an off-by-one in the quantile positions."""
    x = torch.randn(7, 1, generator=generator, dtype=torch.float64)
    y = 3 * torch.randn(7, 1, generator=generator, dtype=torch.float64) + 0.5
    xs, ys = sorted(x[:, 0].tolist()), sorted(y[:, 0].tolist())
    expected = (sum((a - b) ** 2 for a, b in zip(xs, ys, strict=True)) / 7) ** 0.5
    assert abs(sliced_wasserstein(x, y, n_projections=3) - expected) < 1e-12


def test_sliced_wasserstein_in_three_dimensions_against_a_loop_over_directions(generator):
    """SW_2^2 = mean over the directions theta of W_2^2 of the projections (not the mean of
    W_2): 10 points against 10 in 3-D, each direction's projections sorted and paired in a
    Python loop, the directions the seeded ones the metric draws (unit Gaussian vectors).
    Catches the mean of W_2 over directions in place of the root of the mean of W_2^2."""
    x = torch.randn(10, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(10, 3, generator=generator, dtype=torch.float64) * torch.tensor([2.0, 0.5, 1])
    theta = torch.randn(3, 16, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    per_direction = []
    for j in range(16):
        px = sorted((x @ theta[:, j]).tolist())
        py = sorted((y @ theta[:, j]).tolist())
        per_direction.append(sum((a - b) ** 2 for a, b in zip(px, py, strict=True)) / 10)
    expected = (sum(per_direction) / 16) ** 0.5
    got = sliced_wasserstein(x, y, n_projections=16, generator=torch.Generator().manual_seed(5))
    assert abs(got - expected) < 1e-12
