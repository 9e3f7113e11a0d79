"""Exact and Hutchinson divergence against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from scorelab.numerics.divergence import (
    divergence,
    divergence_exact,
    divergence_hutchinson,
    sample_probes,
)


def _linear(A: torch.Tensor):
    return lambda x: x @ A.T


def test_exact_divergence_of_linear_map_is_trace(generator):
    A = torch.randn(5, 5, generator=generator, dtype=torch.float64)
    x = torch.randn(7, 5, generator=generator, dtype=torch.float64)
    out, div = divergence_exact(_linear(A), x)
    torch.testing.assert_close(out, x @ A.T)
    torch.testing.assert_close(div, torch.full((7,), A.trace().item(), dtype=torch.float64))


def test_exact_divergence_of_nonlinear_field(generator):
    # f(x) = tanh(x) * |x|^2 elementwise-ish: div = sum_i [(1 - tanh^2 x_i)|x|^2 + 2 x_i tanh x_i]
    x = torch.randn(6, 3, 2, generator=generator, dtype=torch.float64)

    def fn(z):
        return torch.tanh(z) * (z**2).sum(dim=(1, 2), keepdim=True)

    _, div = divergence_exact(fn, x)
    r2 = (x**2).sum(dim=(1, 2), keepdim=True)
    expected = ((1 - torch.tanh(x) ** 2) * r2 + 2 * x * torch.tanh(x)).sum(dim=(1, 2))
    torch.testing.assert_close(div, expected)


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_predicted_variance(generator, distribution):
    d, n = 6, 4000
    A = torch.randn(d, d, generator=generator, dtype=torch.float64)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    _, est = divergence_hutchinson(_linear(A), x, distribution=distribution, generator=generator)
    sym = ((A + A.T) / 2) ** 2
    # Var[v^T A v] = 2 sum_{i!=j} S_ij^2 (Rademacher), 2 ||S||_F^2 (Gaussian), S = (A + A^T)/2
    var = 2 * (sym.sum() - sym.diag().sum()) if distribution == "rademacher" else 2 * sym.sum()
    se = math.sqrt(var.item() / n)
    assert abs(est.mean().item() - A.trace().item()) < 4 * se
    assert est.var().item() == pytest.approx(var.item(), rel=0.15)


def test_more_probes_shrink_the_error(generator):
    A = torch.randn(8, 8, generator=generator, dtype=torch.float64)
    x = torch.randn(2000, 8, generator=generator, dtype=torch.float64)
    _, one = divergence_hutchinson(_linear(A), x, probes=1, generator=generator)
    _, many = divergence_hutchinson(_linear(A), x, probes=8, generator=generator)
    assert many.var() < one.var() / 4


def test_fixed_probes_are_deterministic(generator):
    A = torch.randn(3, 3, generator=generator)
    x = torch.randn(4, 3, generator=generator)
    v = sample_probes((2, 4, 3), generator=generator)
    _, a = divergence(_linear(A), x, method="hutchinson", v=v)
    _, b = divergence(_linear(A), x, method="hutchinson", v=v)
    torch.testing.assert_close(a, b)


def test_create_graph_allows_training_through_the_divergence(generator):
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.randn(5, 3, generator=generator)
    _, div = divergence_exact(lambda z: w * z**2, x, create_graph=True)
    div.sum().backward()  # d/dw sum_b sum_i 2 w x_i = 2 sum x
    torch.testing.assert_close(w.grad, 2 * x.sum())


def test_bad_input_is_rejected(generator):
    with pytest.raises(ValueError, match="shape"):
        divergence_exact(lambda z: z.sum(dim=1), torch.randn(3, 2))
    with pytest.raises(ValueError, match="probe distribution"):
        sample_probes((2, 2), distribution="uniform")
    with pytest.raises(ValueError, match="method"):
        divergence(lambda z: z, torch.randn(3, 2), method="trace")
    with pytest.raises(ValueError, match="at least 2 dims"):
        divergence_exact(lambda z: z, torch.randn(3))
