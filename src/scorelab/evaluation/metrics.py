"""Sample metrics: distances between a set of samples and a set of data, in any dimension.

Sliced Wasserstein-2: SW_2(P, Q)^2 = E_theta W_2(theta^T P, theta^T Q)^2 over directions theta
uniform on the sphere; each 1-D W_2 compares sorted projections (quantile functions).
Frechet distance (FID's formula): W_2^2 between Gaussians fitted to the two feature sets.
KID and MMD: unbiased squared maximum mean discrepancy (polynomial and Gaussian kernels).
Precision and recall: coverage by k-nearest-neighbour balls. Energy distance: Szekely's.
The floor of any metric is its value between two independent sets of true samples.
Each metric registers here (evaluation/registry.py) with what it compares, where it applies
and its paper; scorelab.reports.metrics computes every registered one with its floor.
"""

from __future__ import annotations

import torch
from torch import Tensor

from scorelab.evaluation.registry import register_metric


# -- distances between sample sets, in a feature space or the data's own (any d) ----------
def _flat64(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def _psd_sqrt(a: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix, by eigendecomposition (float64)."""
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_frechet(mu1: Tensor, cov1: Tensor, mu2: Tensor, cov2: Tensor) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2): W_2^2 between two Gaussians."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(s1 @ cov2 @ s1).clamp(min=0).sqrt().sum()
    return float(((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross)


@register_metric(
    "fd",
    space="features",
    summary="Frechet distance between Gaussians fitted to the features, FID's formula",
    paper="Heusel et al. 2017",
    compare=("images",),
    default=True,
)
def frechet_distance(x: Tensor, y: Tensor) -> float:
    """Frechet distance between Gaussians fitted to features x (n, d) and y (m, d) (FID's)."""
    x, y = _flat64(x), _flat64(y)
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("the Frechet distance needs at least 2 samples on each side")
    return gaussian_frechet(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))


def _mmd2_unbiased(kxx: Tensor, kyy: Tensor, kxy: Tensor) -> Tensor:
    n, m = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * kxy.mean()


@register_metric(
    "kid",
    space="features",
    summary="kernel distance: unbiased MMD^2 with a cubic polynomial kernel, over subsets",
    paper="Binkowski et al. 2018",
    compare=("images",),
    default=True,
)
def kernel_inception_distance(
    x: Tensor,
    y: Tensor,
    *,
    subsets: int = 50,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.

    Averaged over random subsets of both sets; returns (mean, standard deviation over subsets).
    Unbiased: its expectation is exactly 0 when x and y come from the same distribution.
    """
    x, y = _flat64(x), _flat64(y)
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    generator = generator or torch.Generator().manual_seed(0)
    d = x.shape[1]
    values = []
    for _ in range(subsets):
        a = x[torch.randperm(x.shape[0], generator=generator)[:size]]
        b = y[torch.randperm(y.shape[0], generator=generator)[:size]]
        values.append(
            float(
                _mmd2_unbiased(
                    (a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3
                )
            )
        )
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(values) > 1 else 0.0


def precision_recall(real: Tensor, fake: Tensor, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN balls.

    precision: the share of fake points inside the union of balls around real points, each of
    radius the distance to its k-th nearest real neighbour; recall: the same with roles swapped.
    """
    real, fake = _flat64(real), _flat64(fake)
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples on each side")

    def radii(a: Tensor) -> Tensor:  # distance to the k-th neighbour, self excluded
        return torch.cdist(a, a).kthvalue(k + 1, dim=1).values

    def coverage(centres: Tensor, points: Tensor) -> float:
        inside = torch.cdist(points, centres) <= radii(centres)[None, :]
        return float(inside.any(dim=1).double().mean())

    return coverage(real, fake), coverage(fake, real)


@register_metric(
    "pr",
    space="features",
    summary="improved precision and recall: coverage by k-nearest-neighbour balls",
    paper="Kynkaanniemi et al. 2019",
    keys=("precision", "recall"),
    compare=("images", "vectors"),
    default=True,
    options={"k": 3},
)
def sample_precision_recall(
    samples: Tensor, reference: Tensor, *, k: int = 3
) -> tuple[float, float]:
    """(precision, recall) of samples against reference data, in the registry's order."""
    return precision_recall(reference, samples, k=k)


def _quantiles(x: Tensor, n: int) -> Tensor:
    """The n mid-point quantiles of each row of x (P, m), by linear interpolation: (P, n)."""
    x, _ = torch.sort(x, dim=1)  # rows are contiguous: sorting along the last dim is fastest
    m = x.shape[1]
    pos = ((torch.arange(n, dtype=x.dtype, device=x.device) + 0.5) / n * m - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    frac = pos - lo
    return x[:, lo] * (1 - frac) + x[:, hi] * frac


@register_metric(
    "swd",
    space="data",
    summary="sliced Wasserstein-2 distance over 512 random directions",
    paper="Rabin et al. 2011",
    compare=("vectors",),
    default=True,
)
def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    n_projections: int = 512,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced Wasserstein-2 distance between samples x (n, d) and y (m, d)."""
    x, y = x.reshape(x.shape[0], -1).double(), y.reshape(y.shape[0], -1).double()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"dimension mismatch: {x.shape[1]} vs {y.shape[1]}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    n = max(x.shape[0], y.shape[0])
    qx, qy = _quantiles((x @ theta).T.contiguous(), n), _quantiles((y @ theta).T.contiguous(), n)
    return float(((qx - qy) ** 2).mean().sqrt())


@register_metric(
    "energy",
    space="data",
    summary="energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'|",
    paper="Szekely and Rizzo 2013",
    compare=("vectors",),
)
def energy_distance(x: Tensor, y: Tensor) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely), within-set terms without the diagonal."""
    x, y = _flat64(x), _flat64(y)
    n, m = x.shape[0], y.shape[0]
    xx = torch.cdist(x, x).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * torch.cdist(x, y).mean() - xx - yy)


@register_metric(
    "mmd",
    space="data",
    summary="unbiased MMD^2 with a Gaussian kernel of median bandwidth",
    paper="Gretton et al. 2012",
    compare=("vectors",),
)
def mmd_rbf(x: Tensor, y: Tensor, *, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 with a Gaussian kernel exp(-|a - b|^2 / (2 h^2)); h: median distance."""
    x, y = _flat64(x), _flat64(y)
    dxy = torch.cdist(x, y) ** 2
    if bandwidth is None:
        bandwidth = float(dxy.median().sqrt()) or 1.0
    g = -1 / (2 * bandwidth**2)
    kxx, kyy = (torch.cdist(x, x) ** 2 * g).exp(), (torch.cdist(y, y) ** 2 * g).exp()
    return float(_mmd2_unbiased(kxx, kyy, (dxy * g).exp()))


# FID is the Frechet distance in Inception-v3 features; registered last, as listed
register_metric(
    "fid",
    space="inception",
    summary="FID: the Frechet distance in Inception-v3 pool3 features",
    paper="Heusel et al. 2017",
    applies_to=("images",),
)(frechet_distance)
