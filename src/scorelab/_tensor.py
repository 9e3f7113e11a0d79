"""The few shape and noise helpers: the only broadcasting code in scorelab."""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims to a (B,) tensor so it broadcasts against (B, *)."""
    if v.ndim > ndim:
        raise ValueError(f"cannot broadcast a {v.ndim}-d tensor to {ndim} dims")
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def is_broadcast(t: Tensor) -> bool:
    """A (B,) tensor that is one value expanded over the batch (stride 0), as samplers pass."""
    return t.ndim == 1 and t.shape[0] > 1 and t.stride(0) == 0


def batch_times(t: Tensor | float, x: Tensor) -> Tensor:
    """A time as a (B,) float tensor on x's device: scalars are repeated over the batch."""
    t = torch.as_tensor(t, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    t = t.to(x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def randn_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise shaped like x, drawn on the generator's device, then moved to x's."""
    device = generator.device if generator is not None else x.device
    z = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return z.to(x.device)


def _draw(fill, shape, generator, dtype, device) -> Tensor:
    """fill(shape) drawn on the generator's device (CPU by default), then moved to device."""
    gen_device = generator.device if generator is not None else device
    z = fill(shape, generator=generator, device=gen_device, dtype=dtype)
    return z.to(device) if device is not None else z


def rand(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform numbers in [0, 1) of a given shape from an explicit generator (CPU by default)."""
    return _draw(torch.rand, shape, generator, dtype, device)


def randn(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    """Standard normal noise of a given shape from an explicit generator (CPU by default)."""
    return _draw(torch.randn, shape, generator, dtype, device)


def flat_sum(x: Tensor) -> Tensor:
    """Sum over all but the batch dimension: (B, *) -> (B,)."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def flat_mean(x: Tensor) -> Tensor:
    """Mean over all but the batch dimension: (B, *) -> (B,)."""
    return x.reshape(x.shape[0], -1).mean(dim=1)
