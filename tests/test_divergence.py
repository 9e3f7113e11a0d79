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


_M = torch.tensor([[-1.0, 0.7], [-0.3, 2.0]], dtype=torch.float64)  # non-symmetric: tr = 1


def test_divergence_dispatch_passes_every_option_through():
    """divergence(method=...) of x -> x Mᵀ: "exact" (the default) gives tr M = 1; "hutchinson"
    gives the mean over the generator's probes of vᵀ M v (rademacher by default, gaussian when
    asked), or over given probes v; create_graph keeps the graph; an unknown method's message."""
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fn = lambda y: y @ _M.T  # noqa: E731
    out, div = divergence(fn, x)
    torch.testing.assert_close(out, x @ _M.T)
    torch.testing.assert_close(div, torch.ones(8, dtype=torch.float64))
    assert not div.requires_grad
    w0 = x.clone().requires_grad_(True)
    out, div = divergence(lambda y: y * w0, x)  # create_graph defaults to False
    assert not out.requires_grad and not div.requires_grad
    v1 = torch.randint(0, 2, (1, 8, 2), generator=torch.Generator().manual_seed(5)).double() * 2 - 1
    _, div = divergence(fn, x, method="hutchinson", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(div, torch.einsum("pbi,ij,pbj->b", v1, _M, v1), rtol=1e-12, atol=0)
    w = x.clone().requires_grad_(True)
    _, div_g = divergence(lambda y: y * w, x, create_graph=True)
    assert div_g.requires_grad
    quad = lambda v: torch.einsum("pbi,ij,pbj->b", v, _M, v) / v.shape[0]  # noqa: E731
    g = torch.Generator().manual_seed(3)
    v = torch.randint(0, 2, (3, 8, 2), generator=g).double() * 2 - 1
    _, div = divergence(
        fn, x, method="hutchinson", probes=3, generator=torch.Generator().manual_seed(3)
    )
    torch.testing.assert_close(div, quad(v), rtol=1e-12, atol=0)
    v = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    _, div = divergence(
        fn, x, method="hutchinson", probes=2, distribution="gaussian",
        generator=torch.Generator().manual_seed(4),
    )  # fmt: skip
    torch.testing.assert_close(div, quad(v), rtol=1e-12, atol=0)
    _, div = divergence(fn, x, method="hutchinson", v=v)
    torch.testing.assert_close(div, quad(v), rtol=1e-12, atol=0)
    _, div_g = divergence(lambda y: y * w, x, method="hutchinson", v=v, create_graph=True)
    assert div_g.requires_grad
    with pytest.raises(ValueError) as e:
        divergence(fn, x, method="Exact")
    assert str(e.value) == "unknown divergence method 'Exact'; choose 'exact' or 'hutchinson'"


def test_sample_probes_come_from_the_generator_in_the_asked_dtype_and_device():
    g = torch.Generator().manual_seed(1)
    r = torch.randint(0, 2, (2, 3), generator=g).double() * 2 - 1
    got = sample_probes((2, 3), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert got.dtype == torch.float64 and torch.equal(got, r)
    n = torch.randn(2, 3, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    got = sample_probes((2, 3), distribution="gaussian", generator=torch.Generator().manual_seed(2))
    assert torch.equal(got, n)
    for dist in ("rademacher", "gaussian"):
        m = sample_probes((2, 3), distribution=dist, device="meta")
        assert m.device.type == "meta"
        m = sample_probes(
            (2, 3), distribution=dist, generator=torch.Generator().manual_seed(0), device="meta"
        )
        assert m.device.type == "meta"


def test_hutchinson_refusals_and_graph_defaults():
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError) as e:
        divergence_hutchinson(lambda y: y, x, probes=0)
    assert str(e.value) == "probes must be at least 1, got 0"
    with pytest.raises(ValueError) as e:
        divergence_hutchinson(lambda y: y, x, v=torch.ones(1, 4, 3, dtype=torch.float64))
    assert str(e.value) == "v must have shape (probes, (4, 2)), got (1, 4, 3)"
    w = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    out, div = divergence_hutchinson(lambda y: y**2 * w, x)
    assert not out.requires_grad and not div.requires_grad
    from scorelab.numerics.divergence import vjp_probe

    xr = x.clone().requires_grad_(True)
    assert not vjp_probe(xr**2 * w, xr, torch.ones_like(x)).requires_grad


def test_exact_divergence_keeps_no_graph_by_default_and_the_outputs_dtype():
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    out, div = divergence_exact(lambda y: y**2 * w, x)
    assert not out.requires_grad and not div.requires_grad
    torch.testing.assert_close(div, 2 * x.sum(1))
    _, div = divergence_exact(lambda y: 3 * y, x.to(torch.bfloat16))
    assert div.dtype == torch.bfloat16 and torch.equal(div, torch.full((4,), 6.0).bfloat16())
