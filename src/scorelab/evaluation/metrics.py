"""Sample metrics: distances between a set of samples and a set of data, in any dimension.

Sliced Wasserstein-2: SW_2(P, Q)^2 = E_theta W_2(theta^T P, theta^T Q)^2 over directions theta
uniform on the sphere; each 1-D W_2 compares sorted projections (quantile functions).
Frechet distance (FID's formula): W_2^2 between Gaussians fitted to the two feature sets.
KID and MMD: unbiased squared maximum mean discrepancy (polynomial and Gaussian kernels).
Precision and recall: coverage by k-nearest-neighbour balls. Energy distance: Szekely's.
The floor of any metric is its value between two independent sets of true samples.
Pairwise matrices (k-NN radii, kernel and distance sums, the median bandwidth) are computed in
blocks of rows, at most BLOCK_ELEMENTS entries at a time (64 MB of float64), never whole: the
sums and order statistics are those of the whole matrix, so memory stays bounded at n = 10,000.
Each metric registers here (evaluation/registry.py) with what it compares, where it applies
and its paper; scorelab.reports.metrics computes every registered one with its floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from scorelab.evaluation.registry import register_metric

# -- distances between sample sets, in a feature space or the data's own (any d) ----------
# entries of a pairwise matrix held at once: rows of a block = BLOCK_ELEMENTS // columns
BLOCK_ELEMENTS = 2**23
# the median bandwidth's first pass: entries sampled to bracket the median, and the bracket's
# half-width in standard deviations of the sample quantile
MEDIAN_SAMPLE = 2**16
MEDIAN_SIGMAS = 4.0


def _flat64(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1).double()


def _row_blocks(a: Tensor, columns: int) -> Iterator[tuple[int, Tensor]]:
    """(first row, block) of a in blocks of at most BLOCK_ELEMENTS // columns rows (>= 1)."""
    step = max(1, BLOCK_ELEMENTS // max(columns, 1))
    for i in range(0, a.shape[0], step):
        yield i, a[i : i + step]


def _pair_sum(
    a: Tensor, b: Tensor, pair: Callable[[Tensor, Tensor], Tensor], *, diagonal: bool = True
) -> Tensor:
    """sum_ij pair(a, b)_ij, over blocks of rows of a; diagonal=False (a is b): i != j only."""
    total = a.new_zeros(())
    for i, block in _row_blocks(a, b.shape[0]):
        v = pair(block, b)
        total = total + (v.sum() if diagonal else v.sum() - v.diagonal(offset=i).sum())
    return total


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


def _mmd2_unbiased(x: Tensor, y: Tensor, kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Unbiased MMD^2: the within-set kernel means without the diagonal, over n (n - 1)."""
    n, m = x.shape[0], y.shape[0]
    xx = _pair_sum(x, x, kernel, diagonal=False) / (n * (n - 1))
    yy = _pair_sum(y, y, kernel, diagonal=False) / (m * (m - 1))
    return xx + yy - 2 * (_pair_sum(x, y, kernel) / (n * m))


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
        values.append(float(_mmd2_unbiased(a, b, lambda u, v: (u @ v.T / d + 1) ** 3)))
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

    def radii(a: Tensor) -> Tensor:  # distance to the k-th neighbour: the (k+1)-th, self first
        blocks = _row_blocks(a, a.shape[0])
        return torch.cat(
            [torch.cdist(b, a).topk(k + 1, largest=False).values[:, k] for _, b in blocks]
        )

    def coverage(centres: Tensor, points: Tensor) -> float:
        r = radii(centres)
        blocks = _row_blocks(points, centres.shape[0])
        inside = sum(int((torch.cdist(b, centres) <= r).any(dim=1).sum()) for _, b in blocks)
        return inside / points.shape[0]

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
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely), within-set terms without the diagonal
    (left out, not summed: cdist's matmul form leaves rounding of ~1e-7 |x| there)."""
    x, y = _flat64(x), _flat64(y)
    n, m = x.shape[0], y.shape[0]
    xx = _pair_sum(x, x, torch.cdist, diagonal=False) / (n * (n - 1))
    yy = _pair_sum(y, y, torch.cdist, diagonal=False) / (m * (m - 1))
    return float(2 * (_pair_sum(x, y, torch.cdist) / (n * m)) - xx - yy)


def _median_squared_distance(x: Tensor, y: Tensor) -> Tensor:
    """torch.median of cdist(x, y) ** 2 (the lower of the two middle values of the n m), exact,
    in blocks: squared distances of MEDIAN_SAMPLE random pairs bracket the median's rank; one
    pass counts the entries below the bracket and keeps those inside it (about 1.6% of them),
    and the median is selected from those; a bracket that misses is widened and tried again
    (at worst to everything, the whole matrix's memory: not seen in practice)."""
    n, m = x.shape[0], y.shape[0]
    total = n * m
    if total <= BLOCK_ELEMENTS:
        return (torch.cdist(x, y) ** 2).median()
    rank = (total - 1) // 2
    g = torch.Generator().manual_seed(0)
    s = min(total, MEDIAN_SAMPLE)
    i = torch.randint(n, (s,), generator=g).to(x.device)
    j = torch.randint(m, (s,), generator=g).to(x.device)
    chunk, parts = max(1, BLOCK_ELEMENTS // x.shape[1]), []
    for c in range(0, s, chunk):
        parts.append(((x[i[c : c + chunk]] - y[j[c : c + chunk]]) ** 2).sum(1))
    sample = torch.cat(parts).sort().values
    at = rank / max(total - 1, 1) * (s - 1)  # the rank's place in the sorted sample
    width = max(1.0, MEDIAN_SIGMAS * math.sqrt(s * 0.25))
    while True:
        lo_at, hi_at = math.floor(at - width), math.ceil(at + width)
        lo = sample[lo_at] if lo_at >= 0 else -math.inf
        hi = sample[hi_at] if hi_at < s else math.inf
        below, kept = 0, []
        for _, block in _row_blocks(x, m):
            d2 = torch.cdist(block, y) ** 2
            below += int((d2 < lo).sum())
            kept.append(d2[(d2 >= lo) & (d2 <= hi)])
        inside = torch.cat(kept)
        if below <= rank < below + inside.numel():
            return inside.kthvalue(rank - below + 1).values
        width *= 4


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
    if bandwidth is None:
        bandwidth = float(_median_squared_distance(x, y).sqrt()) or 1.0
    g = -1 / (2 * bandwidth**2)
    return float(_mmd2_unbiased(x, y, lambda u, v: (torch.cdist(u, v) ** 2 * g).exp()))


# FID is the Frechet distance in Inception-v3 features; registered last, as listed
register_metric(
    "fid",
    space="inception",
    summary="FID: the Frechet distance in Inception-v3 pool3 features",
    paper="Heusel et al. 2017",
    applies_to=("images",),
)(frechet_distance)
