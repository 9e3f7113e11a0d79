"""Linear observation operators y = A x for inverse problems, on batches x of shape (B, *shape).

Each operator knows its signal shape (without the batch) and gives forward (A x), transpose
(the adjoint A^T y), pinv (the Moore-Penrose pseudo-inverse A^+ y), matrix(d) (A as a dense
(m, d) float64 matrix, for small problems and tests) and out_shape. Where it is cheap, svd()
gives a thin SVD A = U diag(s) V^T as an `SVD`: s (r,) float64 (zeros allowed) and four maps
between the signal, the observation and the (B, r) spectral coordinates. Operators compute in
the input's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import InitVar, dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

from scorelab.errors import ScorelabError


class SVD(NamedTuple):
    """A = U diag(s) V^T, U (m, r) and V (d, r) with orthonormal columns; spectral coordinates
    are (B, r): vt(x) = V^T x, ut(y) = U^T y, v(z) = V z, u(z) = U z."""

    s: Tensor
    vt: Callable[[Tensor], Tensor]
    ut: Callable[[Tensor], Tensor]
    v: Callable[[Tensor], Tensor]
    u: Callable[[Tensor], Tensor]


def _check(x: Tensor, shape: tuple[int, ...], op: object, what: str) -> None:
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise ScorelabError(
            f"{type(op).__name__}.{what}: expected (B, {', '.join(map(str, shape))}), "
            f"got {tuple(x.shape)}"
        )


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _image_shape(shape: tuple[int, ...], op: str) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ScorelabError(f"{op} acts on images: shape (..., H, W), got {shape}")
    return shape


class LinearOperator:
    """The shared contract: subclasses give shape, out_shape, forward, transpose (and svd)."""

    shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    has_svd = False
    forward: Callable[[Tensor], Tensor]
    transpose: Callable[[Tensor], Tensor]

    def svd(self) -> SVD:
        raise ScorelabError(f"{type(self).__name__} has no cheap SVD")

    def pinv(self, y: Tensor) -> Tensor:
        """A^+ y = V diag(1/s) U^T y over s > max(m, d) eps max(s) (torch.linalg.pinv's cut)."""
        _check(y, self.out_shape, self, "pinv")
        s, _, ut, v, _ = self.svd()
        d, m = math.prod(self.shape), math.prod(self.out_shape)
        keep = s > max(m, d) * torch.finfo(torch.float64).eps * s.max()
        inv = torch.where(keep, 1 / torch.where(keep, s, torch.ones_like(s)), 0.0)
        return v(ut(y) * inv.to(y.device, y.dtype))

    def matrix(self, d: int) -> Tensor:
        """A as a dense (m, d) float64 matrix: column j is A e_j."""
        if d != math.prod(self.shape):
            raise ScorelabError(
                f"{type(self).__name__} acts on {self.shape} ({math.prod(self.shape)}"
                f" features), not on {d}"
            )
        basis = torch.eye(d, dtype=torch.float64).reshape(d, *self.shape)
        return self.forward(basis).reshape(d, -1).T.contiguous()


@dataclass(frozen=True)
class Identity(LinearOperator):
    """A = I (denoising)."""

    shape: tuple[int, ...]
    has_svd = True

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(self.shape)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.shape, self, "forward")
        return x

    def transpose(self, y: Tensor) -> Tensor:
        _check(y, self.shape, self, "transpose")
        return y

    def pinv(self, y: Tensor) -> Tensor:
        _check(y, self.shape, self, "pinv")
        return y

    def svd(self) -> SVD:
        def unflat(z: Tensor) -> Tensor:
            return z.reshape(z.shape[0], *self.shape)

        s = torch.ones(math.prod(self.shape), dtype=torch.float64)
        return SVD(s, _flat, _flat, unflat, unflat)


@dataclass(frozen=True, eq=False)
class Mask(LinearOperator):
    """Inpainting: A x = the observed entries x[mask == 1] as a (B, m) vector (row-major order).

    Its rows are distinct unit vectors, so A A^T = I: A^T y zero-fills the unobserved entries and
    A^+ = A^T; the SVD has s = 1, U = I and V^T = A.
    """

    mask: Tensor
    has_svd = True
    index: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mask = torch.as_tensor(self.mask)
        if mask.ndim < 1 or not ((mask == 0) | (mask == 1)).all():
            raise ScorelabError("a mask must be a tensor of 0s and 1s (1 = observed)")
        if not (mask == 1).any():
            raise ScorelabError("a mask must observe at least one entry")
        object.__setattr__(self, "mask", mask == 1)
        object.__setattr__(self, "index", (mask == 1).reshape(-1).nonzero()[:, 0])

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return tuple(self.mask.shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (int(self.index.numel()),)

    @staticmethod
    def box(shape: tuple[int, ...], top: int, left: int, h: int, w: int) -> Mask:
        """Everything observed but the box [top, top + h) x [left, left + w) of every channel."""
        shape = _image_shape(shape, "Mask.box")
        if min(top, left) < 0 or min(h, w) < 1:
            raise ScorelabError("Mask.box: top, left >= 0 and h, w > 0 are required")
        if top + h > shape[-2] or left + w > shape[-1]:
            raise ScorelabError(f"Mask.box: the box {h}x{w} at ({top}, {left}) leaves {shape}")
        mask = torch.ones(shape, dtype=torch.bool)
        mask[..., top : top + h, left : left + w] = False
        return Mask(mask)

    @staticmethod
    def random(
        shape: tuple[int, ...], fraction: float, generator: torch.Generator | None = None
    ) -> Mask:
        """round(fraction * numel) entries observed, chosen uniformly at random."""
        n = math.prod(shape)
        m = round(fraction * n)
        if not 0 < m <= n:
            raise ScorelabError(f"Mask.random: fraction {fraction} observes {m} of {n} entries")
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[:m]] = True
        return Mask(mask.reshape(shape))

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.shape, self, "forward")
        return x.reshape(x.shape[0], -1)[:, self.index.to(x.device)]

    def transpose(self, y: Tensor) -> Tensor:
        _check(y, self.out_shape, self, "transpose")
        x = y.new_zeros(y.shape[0], self.mask.numel())
        x[:, self.index.to(y.device)] = y
        return x.reshape(y.shape[0], *self.shape)

    def pinv(self, y: Tensor) -> Tensor:
        return self.transpose(y)

    def svd(self) -> SVD:
        def same(y: Tensor) -> Tensor:
            _check(y, self.out_shape, self, "svd")
            return y

        ones = torch.ones(self.out_shape[0], dtype=torch.float64)
        return SVD(ones, self.forward, same, self.transpose, same)


@dataclass(frozen=True)
class AvgPool(LinearOperator):
    """Down-sampling: the mean of each factor x factor block of the last two dims (H, W).

    A A^T = I / factor^2, so A^+ y = factor^2 A^T y repeats each value over its block, and the
    SVD has s = 1 / factor, U = I, V^T = factor A.
    """

    factor: int
    shape: tuple[int, ...]
    has_svd = True

    def __post_init__(self) -> None:
        shape = _image_shape(self.shape, "AvgPool")
        f = int(self.factor)
        if f < 1 or shape[-2] % f or shape[-1] % f:
            raise ScorelabError(f"AvgPool: H and W of {shape} must be divisible by factor {f}")
        object.__setattr__(self, "shape", shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        f = self.factor
        return (*self.shape[:-2], self.shape[-2] // f, self.shape[-1] // f)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.shape, self, "forward")
        f, (h, w) = self.factor, self.out_shape[-2:]
        return x.reshape(*x.shape[:-2], h, f, w, f).mean(dim=(-3, -1))

    def transpose(self, y: Tensor) -> Tensor:
        _check(y, self.out_shape, self, "transpose")
        f = self.factor
        return y.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1) / f**2

    def pinv(self, y: Tensor) -> Tensor:
        _check(y, self.out_shape, self, "pinv")
        return y.repeat_interleave(self.factor, dim=-2).repeat_interleave(self.factor, dim=-1)

    def svd(self) -> SVD:
        f, m = self.factor, math.prod(self.out_shape)

        def vt(x: Tensor) -> Tensor:
            return f * _flat(self.forward(x))

        def ut(y: Tensor) -> Tensor:
            _check(y, self.out_shape, self, "svd")
            return _flat(y)

        def v(z: Tensor) -> Tensor:
            return f * self.transpose(z.reshape(z.shape[0], *self.out_shape))

        def u(z: Tensor) -> Tensor:
            return z.reshape(z.shape[0], *self.out_shape)

        return SVD(torch.full((m,), 1 / f, dtype=torch.float64), vt, ut, v, u)


@dataclass(frozen=True)
class GaussianBlur(LinearOperator):
    """Blur of the last two dims (H, W) by a size x size Gaussian of std sigma (normalized to
    sum 1), with circular (periodic) boundary: A is a symmetric circulant, diagonalized by the
    real orthonormal 2-D Hartley transform H x = Re F x - Im F x (F the unitary DFT, H = H^T =
    H^-1): A = H diag(k) H with k the DFT of the even kernel (real). So s = |k|, V = H and
    U = H diag(sign k)."""

    sigma: float
    size: int
    shape: tuple[int, ...]
    has_svd = True

    def __post_init__(self) -> None:
        shape = _image_shape(self.shape, "GaussianBlur")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise ScorelabError(f"GaussianBlur: sigma must be positive, got {self.sigma}")
        if self.size < 1 or self.size % 2 == 0 or self.size > min(shape[-2:]):
            raise ScorelabError(
                f"GaussianBlur: size must be odd and at most H, W of {shape}, got {self.size}"
            )
        object.__setattr__(self, "shape", shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.shape

    def spectrum(self) -> Tensor:
        """The kernel's DFT k (H, W), float64, real since the kernel is even."""
        r = self.size // 2
        g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / self.sigma) ** 2)
        g = g / g.sum()
        h, w = self.shape[-2:]
        kernel = torch.zeros(h, w, dtype=torch.float64)
        kernel[: 2 * r + 1, : 2 * r + 1] = g[:, None] * g[None, :]
        return torch.fft.fft2(kernel.roll((-r, -r), dims=(0, 1))).real

    def _hartley(self, x: Tensor) -> Tensor:
        z = torch.fft.fft2(x, norm="ortho")
        return z.real - z.imag

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.shape, self, "forward")
        k = self.spectrum().to(x.device, x.dtype)
        return torch.fft.ifft2(torch.fft.fft2(x) * k).real

    def transpose(self, y: Tensor) -> Tensor:  # the kernel is even: A^T = A
        _check(y, self.shape, self, "transpose")
        return self.forward(y)

    def svd(self) -> SVD:
        k = self.spectrum().expand(self.shape)
        sign = torch.where(k < 0, -1.0, 1.0).to(torch.float64)

        def vt(x: Tensor) -> Tensor:
            _check(x, self.shape, self, "svd")
            return _flat(self._hartley(x))

        def ut(y: Tensor) -> Tensor:
            _check(y, self.shape, self, "svd")
            return _flat(self._hartley(y) * sign.to(y.device, y.dtype))

        def v(z: Tensor) -> Tensor:
            return self._hartley(z.reshape(z.shape[0], *self.shape))

        def u(z: Tensor) -> Tensor:
            z = z.reshape(z.shape[0], *self.shape)
            return self._hartley(z * sign.to(z.device, z.dtype))

        return SVD(k.abs().reshape(-1), vt, ut, v, u)


@dataclass(frozen=True, eq=False)
class RandomProjection(LinearOperator):
    """Compressed sensing: A (m, d) with i.i.d. N(0, 1/m) entries; SVD by torch.linalg.svd."""

    m: int
    d: int
    generator: InitVar[torch.Generator | None] = None
    weight: Tensor = field(init=False, repr=False)
    has_svd = True

    def __post_init__(self, generator: torch.Generator | None) -> None:
        if self.m < 1 or self.d < 1:
            raise ScorelabError(
                f"RandomProjection: m and d must be positive, got {self.m}, {self.d}"
            )
        w = torch.randn(self.m, self.d, generator=generator, dtype=torch.float64)
        object.__setattr__(self, "weight", w / math.sqrt(self.m))

    @property
    def shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (self.d,)

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (self.m,)

    def forward(self, x: Tensor) -> Tensor:
        _check(x, self.shape, self, "forward")
        return x @ self.weight.to(x.device, x.dtype).T

    def transpose(self, y: Tensor) -> Tensor:
        _check(y, self.out_shape, self, "transpose")
        return y @ self.weight.to(y.device, y.dtype)

    def svd(self) -> SVD:
        u, s, vh = torch.linalg.svd(self.weight, full_matrices=False)

        def vt(x: Tensor) -> Tensor:
            _check(x, self.shape, self, "svd")
            return x @ vh.to(x.device, x.dtype).T

        def ut(y: Tensor) -> Tensor:
            _check(y, self.out_shape, self, "svd")
            return y @ u.to(y.device, y.dtype)

        def v(z: Tensor) -> Tensor:
            return z @ vh.to(z.device, z.dtype)

        return SVD(s, vt, ut, v, lambda z: z @ u.to(z.device, z.dtype).T)


OPERATORS: dict[str, type[LinearOperator]] = {
    "identity": Identity,
    "mask": Mask,
    "avg_pool": AvgPool,
    "gaussian_blur": GaussianBlur,
    "random_projection": RandomProjection,
}
