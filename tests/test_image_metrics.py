"""Metric sanity against closed forms: FD of Gaussians, KID's unbiasedness, precision/recall."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.errors import ScorelabError
from scorelab.evaluation.metrics import (
    energy_distance,
    frechet_distance,
    gaussian_frechet,
    kernel_inception_distance,
    mmd_rbf,
    precision_recall,
)
from scorelab.reports.metrics import parse_metrics


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_fd_of_data_with_itself_is_zero_and_a_shift_adds_its_squared_norm():
    x = torch.randn(500, 6, generator=_gen(), dtype=torch.float64) @ torch.randn(
        6, 6, generator=_gen(1), dtype=torch.float64
    )
    assert abs(frechet_distance(x, x)) < 1e-8
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    # same covariance, means apart by shift: FD = |shift|^2 exactly
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_gaussian_frechet_matches_the_closed_form_for_commuting_covariances():
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 1.0])
    mu = torch.tensor([1.0, 0.0, -1.0])
    expected = float(mu @ mu) + float(((a.sqrt() - b.sqrt()) ** 2).sum())  # W_2^2 of Gaussians
    assert gaussian_frechet(mu, torch.diag(a), torch.zeros(3), torch.diag(b)) == pytest.approx(
        expected, rel=1e-10
    )
    # and a rotated pair (same answer: W_2 is rotation invariant)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=_gen(), dtype=torch.float64))
    got = gaussian_frechet(
        q @ mu.double(),
        q @ torch.diag(a).double() @ q.T,
        torch.zeros(3),
        q @ torch.diag(b).double() @ q.T,
    )
    assert got == pytest.approx(expected, rel=1e-8)


def test_fd_of_samples_approaches_the_gaussian_value():
    n, d = 20_000, 4
    x = torch.randn(n, d, generator=_gen(0), dtype=torch.float64)
    y = 2 * torch.randn(n, d, generator=_gen(1), dtype=torch.float64) + 1
    expected = d * 1.0 + d * (2 - 1) ** 2  # |mu|^2 + sum (sqrt 4 - sqrt 1)^2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=0.03)


def test_kid_is_unbiased_on_equal_distributions_and_positive_on_different_ones():
    values = []
    for seed in range(30):
        x = torch.randn(100, 5, generator=_gen(2 * seed))
        y = torch.randn(100, 5, generator=_gen(2 * seed + 1))
        values.append(kernel_inception_distance(x, y, subsets=1, subset_size=100)[0])
    v = torch.tensor(values)
    se = float(v.std()) / math.sqrt(len(values))
    assert abs(float(v.mean())) < 3 * se  # mean 0 within sampling error, and some are < 0
    assert (v < 0).any()
    z = torch.randn(100, 5, generator=_gen(99)) + 1
    assert kernel_inception_distance(torch.randn(100, 5, generator=_gen(7)), z)[0] > 10 * se


def test_mmd_and_energy_zero_in_expectation_and_positive_for_a_shift():
    x, y = torch.randn(400, 3, generator=_gen(0)), torch.randn(400, 3, generator=_gen(1))
    assert abs(mmd_rbf(x, y)) < 0.01 and abs(energy_distance(x, y)) < 0.03
    assert mmd_rbf(x, y + 1) > 0.1 and energy_distance(x, y + 1) > 0.5


def test_precision_recall_same_and_disjoint_and_collapsed():
    real = torch.randn(500, 2, generator=_gen(0))
    fake = torch.randn(500, 2, generator=_gen(1))
    p, r = precision_recall(real, fake)
    assert p > 0.9 and r > 0.9
    assert precision_recall(real, fake + 100) == (0.0, 0.0)
    # mode collapse onto a small region near the centre: precise but with low recall
    p, r = precision_recall(real, 0.05 * fake)
    assert p > 0.95 and r < 0.3


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ScorelabError, match="unknown metric 'fud'; choose from: fd, kid"):
        parse_metrics("fd,fud")
    assert parse_metrics("fd, kid,pr") == ["fd", "kid", "pr"]
