"""Divergence of a vector field: exact (autograd) and Hutchinson–Skilling estimates.

One home for div f(x) = tr(∂f/∂x), shared by implicit and sliced score matching and by the
probability-flow ODE log-likelihood. ``fn`` maps x of shape (B, *) to a tensor of the same
shape, acting on each example independently (no mixing across the batch); every function
returns ``(fn(x), div)`` with ``div`` of shape (B,).

- ``divergence_exact``: one backward pass per dimension, so its cost grows linearly with d:
  use it in low dimension (toy data, tests), never for images.
- ``divergence_hutchinson``: tr(J) = E_v[vᵀ J v] for probes with E[v vᵀ] = I (Rademacher or
  Gaussian; Hutchinson 1990, Skilling 1989). One vector–Jacobian product per probe, unbiased.
  Rademacher has the smaller variance, 2 Σ_{i≠j} J_ij² against Gaussian's 2‖J‖_F².

``create_graph=True`` keeps the graph so the result can be differentiated again (training
with ISM/SSM); the default detaches, for evaluation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PROBES = ("rademacher", "gaussian")


def sample_probes(
    shape: tuple[int, ...],
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Probe vectors v with E[v] = 0 and E[v vᵀ] = I, drawn from an explicit generator."""
    gen_device = generator.device if generator is not None else device
    if distribution == "rademacher":
        v = torch.randint(0, 2, shape, generator=generator, device=gen_device).to(dtype) * 2 - 1
    elif distribution == "gaussian":
        v = torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)
    else:
        raise ValueError(f"unknown probe distribution {distribution!r}; choose from {PROBES}")
    return v.to(device) if device is not None else v


def _prepare(x: Tensor) -> Tensor:
    if x.ndim < 2:
        raise ValueError(f"x must be (batch, ...) with at least 2 dims, got {tuple(x.shape)}")
    return x if x.requires_grad else x.detach().requires_grad_(True)


def _call(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    out = fn(x)
    if out.shape != x.shape:
        raise ValueError(f"fn must return x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
    return out


def vjp_probe(out: Tensor, x: Tensor, v: Tensor, *, create_graph: bool = False) -> Tensor:
    """vᵀ (∂out/∂x) v per example, shape (B,): one vector–Jacobian product."""
    (vjp,) = torch.autograd.grad(out, x, v, create_graph=create_graph, retain_graph=True)
    return (vjp * v).reshape(x.shape[0], -1).sum(dim=1)


def divergence_exact(
    fn: Callable[[Tensor], Tensor], x: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """(fn(x), tr ∂fn/∂x) with one backward pass per dimension of an example."""
    with torch.enable_grad():
        x = _prepare(x)
        out = _call(fn, x)
        flat_out = out.reshape(x.shape[0], -1)
        d = flat_out.shape[1]
        div = torch.zeros(x.shape[0], dtype=out.dtype, device=out.device)
        for i in range(d):
            (grad,) = torch.autograd.grad(
                flat_out[:, i].sum(), x, create_graph=create_graph, retain_graph=True
            )
            div = div + grad.reshape(x.shape[0], -1)[:, i]
    if not create_graph:
        return out.detach(), div.detach()
    return out, div


def divergence_hutchinson(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    probes: int = 1,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    v: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """(fn(x), mean over probes of vᵀ (∂fn/∂x) v): an unbiased estimate of the divergence.

    ``v`` of shape (probes, *x.shape) fixes the probes (as the PF-ODE likelihood must, holding
    them constant along one trajectory); otherwise ``probes`` are drawn from ``generator``.
    """
    if v is None:
        if probes < 1:
            raise ValueError(f"probes must be at least 1, got {probes}")
        v = sample_probes(
            (probes, *x.shape),
            distribution=distribution,
            generator=generator,
            dtype=x.dtype,
            device=x.device,
        )
    elif v.shape[1:] != x.shape:
        raise ValueError(f"v must have shape (probes, {tuple(x.shape)}), got {tuple(v.shape)}")
    with torch.enable_grad():
        x = _prepare(x)
        out = _call(fn, x)
        div = sum(vjp_probe(out, x, vk, create_graph=create_graph) for vk in v) / v.shape[0]
    if not create_graph:
        return out.detach(), div.detach()
    return out, div


def divergence(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    method: str = "exact",
    probes: int = 1,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
    v: Tensor | None = None,
    create_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """Dispatch on ``method``: "exact" or "hutchinson" (see the two functions above)."""
    if method == "exact":
        return divergence_exact(fn, x, create_graph=create_graph)
    if method == "hutchinson":
        return divergence_hutchinson(
            fn,
            x,
            probes=probes,
            distribution=distribution,
            generator=generator,
            v=v,
            create_graph=create_graph,
        )
    raise ValueError(f"unknown divergence method {method!r}; choose 'exact' or 'hutchinson'")
