"""The metrics against closed forms (FD of Gaussians, energy of two normals), KID's
unbiasedness, and exact small cases: precision/recall by hand, KID, MMD, energy and FD against
brute-force loops written out here."""

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


# -- exact small cases: hand-computed answers and brute-force loops written out here ---------
REAL = [(0, 0), (1, 0), (0, 1), (10, 0), (10, 1), (11, 0)]
FAKE = [(0.5, 0.5), (0.6, 0), (0, 0.6), (10.5, 0.5), (10.5, 0.6), (10.6, 0.5),
        (30, 0), (30, 1), (31, 0)]  # fmt: skip


def _t(points):
    return torch.tensor(points, dtype=torch.float64)


def _dist(a, b) -> float:
    return math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b, strict=True)))


def test_precision_recall_of_a_handful_of_points_by_hand():
    """k = 2. Squared radii (distance to the 2nd nearest other point), worked out by hand:
    real 1, 2, 2 | 1, 2, 2 (each cluster: unit steps, one diagonal); fake 0.26, 0.72, 0.72 |
    0.01, 0.02, 0.02 | 1, 2, 2. Precision: the fake points near (0, 0) (squared distances
    0.5, 0.36, 0.36 to (0, 0), radius^2 1) and near (10, 0) (0.5, 0.61, 0.61 to (10, 0),
    radius^2 1) are covered, those near (30, 0) are not: 6/9. Recall: (0, 0), (1, 0), (0, 1)
    are within 0.36, 0.16, 0.16 of (0.6, 0) or (0, 0.6) (radius^2 0.72); the real points near
    (10, 0) are at least 0.41 from the tight fake cluster (radii^2 <= 0.02): 3/6. Catches the
    k-th neighbour counted with the point itself (recall 2/6), real and fake swapped (1/2,
    2/3), and the registry's wrapper passing them in the wrong order."""
    from scorelab.evaluation.metrics import sample_precision_recall

    real, fake = _t(REAL), _t(FAKE)
    assert precision_recall(real, fake, k=2) == (6 / 9, 3 / 6)
    assert sample_precision_recall(fake, real, k=2) == (6 / 9, 3 / 6)


@pytest.mark.parametrize("k", [1, 3])
def test_precision_recall_against_a_brute_force_loop(k):
    """Random 2-D sets (20 real, 15 fake, seeded): the shares covered by k-NN balls, computed by
    sorting the distances of each centre in a Python loop, equal precision_recall exactly."""
    real = torch.randn(20, 2, generator=_gen(3), dtype=torch.float64)
    fake = 0.7 * torch.randn(15, 2, generator=_gen(4), dtype=torch.float64) + 0.5

    def coverage(centres, points):
        radius = [
            sorted(_dist(c, o) for j, o in enumerate(centres) if j != i)[k - 1]
            for i, c in enumerate(centres)
        ]
        inside = [
            any(_dist(p, c) <= r for c, r in zip(centres, radius, strict=True)) for p in points
        ]
        return sum(inside) / len(points)

    p, r = coverage(real.tolist(), fake.tolist()), coverage(fake.tolist(), real.tolist())
    assert 0 < p < 1 and 0 < r < 1
    assert precision_recall(real, fake, k=k) == pytest.approx((p, r), abs=1e-12)


def _cov_by_hand(x):
    """Mean and unbiased covariance (n - 1) of rows, in Python loops."""
    n, d = len(x), len(x[0])
    mean = [sum(row[j] for row in x) / n for j in range(d)]
    cov = [[sum((row[i] - mean[i]) * (row[j] - mean[j]) for row in x) / (n - 1)
            for j in range(d)] for i in range(d)]  # fmt: skip
    return mean, cov


def _w2_gaussians_2d(m1, c1, m2, c2) -> float:
    """W_2^2 of 2-D Gaussians in closed form: tr sqrt(C1^1/2 C2 C1^1/2) = tr sqrt(C1 C2), and a
    2x2 matrix M with positive eigenvalues has tr sqrt(M) = sqrt(tr M + 2 sqrt(det M))."""
    tr = lambda c: c[0][0] + c[1][1]  # noqa: E731
    det = lambda c: c[0][0] * c[1][1] - c[0][1] * c[1][0]  # noqa: E731
    tr_c1c2 = sum(c1[i][j] * c2[j][i] for i in range(2) for j in range(2))
    cross = math.sqrt(tr_c1c2 + 2 * math.sqrt(det(c1) * det(c2)))
    return sum((a - b) ** 2 for a, b in zip(m1, m2, strict=True)) + tr(c1) + tr(c2) - 2 * cross


def test_frechet_distance_of_non_commuting_gaussians_and_of_five_points():
    """gaussian_frechet against the 2-D closed form for covariances that do not commute
    (C1 C2 is not symmetric), and frechet_distance of 5 and 6 points against that closed form
    applied to their means and unbiased covariances computed in loops. Catches eigvalsh of
    C1 C2 in place of C1^1/2 C2 C1^1/2 (which commuting or co-rotated pairs hide) and the
    biased (1/n) covariance."""
    m1, c1 = [1.0, -0.5], [[2.0, 0.9], [0.9, 1.0]]
    m2, c2 = [0.0, 0.3], [[0.5, -0.2], [-0.2, 3.0]]
    got = gaussian_frechet(_t(m1), _t(c1), _t(m2), _t(c2))
    assert got == pytest.approx(_w2_gaussians_2d(m1, c1, m2, c2), rel=1e-10)
    x = [[0.0, 1.0], [2.0, -1.0], [1.0, 3.0], [-1.5, 0.5], [0.3, 0.2]]
    y = [[4.0, 0.0], [1.0, 1.0], [2.5, -2.0], [0.0, 0.0], [3.0, 2.0], [1.0, -1.0]]
    (mx, cx), (my, cy) = _cov_by_hand(x), _cov_by_hand(y)
    assert frechet_distance(_t(x), _t(y)) == pytest.approx(
        _w2_gaussians_2d(mx, cx, my, cy), rel=1e-10
    )


def test_kid_mmd_and_energy_against_double_loops():
    """5 points against 5 (KID, one subset of all 5: a permutation, which the unbiased MMD^2
    does not see) and 5 against 3 (MMD with a given and with the median bandwidth; energy) in
    3-D, each against its definition summed in Python double loops: KID's kernel
    (a.b / d + 1)^3 with d the feature dimension; the within-set sums without the diagonal over
    n (n - 1); the Gaussian kernel exp(-|a - b|^2 / (2 h^2)) with h the median of the 15 cross
    distances; energy 2 E|X - Y| - E|X - X'| - E|Y - Y'|. Catches d taken as the number of
    points, the diagonal kept or divided by n^2, a bandwidth off by a square."""
    x = torch.randn(5, 3, generator=_gen(5), dtype=torch.float64).tolist()
    y = (torch.randn(5, 3, generator=_gen(6), dtype=torch.float64) + 0.4).tolist()
    y3 = y[:3]

    def unbiased_mmd2(a, b, kernel):
        n, m = len(a), len(b)
        aa = sum(kernel(a[i], a[j]) for i in range(n) for j in range(n) if i != j)
        bb = sum(kernel(b[i], b[j]) for i in range(m) for j in range(m) if i != j)
        ab = sum(kernel(u, v) for u in a for v in b)
        return aa / (n * (n - 1)) + bb / (m * (m - 1)) - 2 * ab / (n * m)

    def cubic(u, v):
        return (sum(p * q for p, q in zip(u, v, strict=True)) / 3 + 1) ** 3

    kid, std = kernel_inception_distance(_t(x), _t(y), subsets=1, subset_size=5)
    assert kid == pytest.approx(unbiased_mmd2(x, y, cubic), rel=1e-10) and std == 0
    for h in (0.7, None):
        bandwidth = h or sorted(_dist(u, v) for u in x for v in y3)[7]  # median of 15
        rbf = lambda u, v, b=bandwidth: math.exp(-(_dist(u, v) ** 2) / (2 * b**2))  # noqa: E731
        assert mmd_rbf(_t(x), _t(y3), bandwidth=h) == pytest.approx(
            unbiased_mmd2(x, y3, rbf), rel=1e-10
        )
    cross = sum(_dist(u, v) for u in x for v in y3) / 15
    within_x = sum(_dist(u, v) for i, u in enumerate(x) for j, v in enumerate(x) if i != j) / 20
    within_y = sum(_dist(u, v) for i, u in enumerate(y3) for j, v in enumerate(y3) if i != j) / 6
    assert energy_distance(_t(x), _t(y3)) == pytest.approx(
        2 * cross - within_x - within_y, rel=1e-10
    )


def test_energy_distance_is_unbiased_for_the_closed_form_of_two_normals():
    """1-D N(0, 1) against N(1, 1): 2 E|X - Y| - E|X - X'| - E|Y - Y'| with E|Z| for
    Z ~ N(m, s^2) = s sqrt(2/pi) exp(-m^2 / 2s^2) + m (1 - 2 Phi(-m/s)), here
    2 E|N(1, 2)| - 2 * 2/sqrt(pi) = 0.5418... The mean over 2000 pairs of sets of 10 points is
    that value within 4 standard errors (the within-set sums over n (n - 1) make it unbiased;
    over n^2 it would be 0.23 higher). Catches the diagonal counted in the within-set means."""
    m, s = 1.0, math.sqrt(2.0)
    e_abs = s * math.sqrt(2 / math.pi) * math.exp(-(m**2) / (2 * s**2)) + m * math.erf(
        m / (s * math.sqrt(2))
    )
    expected = 2 * e_abs - 2 * (2 / math.sqrt(math.pi))
    g = _gen(8)
    values = torch.tensor(
        [
            energy_distance(
                torch.randn(10, 1, generator=g, dtype=torch.float64),
                torch.randn(10, 1, generator=g, dtype=torch.float64) + 1,
            )
            for _ in range(2000)
        ]
    )
    mean, se = float(values.mean()), float(values.std()) / math.sqrt(len(values))
    assert abs(mean - expected) < 4 * se, (mean, expected, se)


# -- pairwise matrices in blocks of rows: the whole-matrix answers, in bounded memory -------
def _full_precision_recall(real, fake, k):
    """The whole-matrix computation: k-NN radii by kthvalue, coverage by one cdist."""

    def coverage(centres, points):
        radius = torch.cdist(centres, centres).kthvalue(k + 1, dim=1).values
        return float((torch.cdist(points, centres) <= radius).any(dim=1).double().mean())

    return coverage(real, fake), coverage(fake, real)


def _full_mmd2(kxx, kyy, kxy):
    n, m = kxx.shape[0], kyy.shape[0]
    xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(xx + yy - 2 * kxy.mean())


def _full_kid(x, y, subsets, size):
    """KID's subsets drawn as the metric draws them (seed 0), each kernel matrix whole."""
    g, d, values = _gen(0), x.shape[1], []
    for _ in range(subsets):
        a = x[torch.randperm(x.shape[0], generator=g)[:size]]
        b = y[torch.randperm(y.shape[0], generator=g)[:size]]
        values.append(
            _full_mmd2((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
        )
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std())


def _full_mmd_rbf(x, y):
    dxy = torch.cdist(x, y) ** 2
    g = -1 / (2 * float(dxy.median().sqrt()) ** 2)
    kxx, kyy = (torch.cdist(x, x) ** 2 * g).exp(), (torch.cdist(y, y) ** 2 * g).exp()
    return _full_mmd2(kxx, kyy, (dxy * g).exp())


def _full_energy(x, y):
    """The definition: the within-set diagonals are exactly 0 (cdist's matmul form leaves
    rounding noise of ~1e-7 |x| there, which the whole-matrix code used to add in)."""
    n, m = x.shape[0], y.shape[0]
    xx = torch.cdist(x, x).fill_diagonal_(0).sum() / (n * (n - 1))
    yy = torch.cdist(y, y).fill_diagonal_(0).sum() / (m * (m - 1))
    return float(2 * torch.cdist(x, y).mean() - xx - yy)


# 40 and 37 rows (over 25, so cdist takes its matmul form as it does at scale); 7 rows a block
# at 280 entries (ragged last blocks of 5 and 2 rows), 1 row at 1 entry, one block at 2**23
@pytest.mark.parametrize("block", [1, 280, 2**23])
def test_every_pairwise_metric_in_blocks_equals_the_whole_matrix(monkeypatch, block):
    """precision/recall (k = 1, 3), KID (3 subsets of 30), RBF-MMD with the median bandwidth
    and energy, with BLOCK_ELEMENTS forced small: the same numbers as the whole matrices
    (coverage exactly, the sums to 1e-12 relative), so block offsets of the diagonal, the
    ragged last block and the per-block k-NN radii are all exercised."""
    from scorelab.evaluation import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", block)
    x = 1.5 * torch.randn(40, 5, generator=_gen(10), dtype=torch.float64)
    y = torch.randn(37, 5, generator=_gen(11), dtype=torch.float64) + 0.3
    for k in (1, 3):
        assert precision_recall(x, y, k=k) == _full_precision_recall(x, y, k)
    kid = kernel_inception_distance(x, y, subsets=3, subset_size=30)
    assert kid == pytest.approx(_full_kid(x, y, 3, 30), rel=1e-12)
    assert mmd_rbf(x, y) == pytest.approx(_full_mmd_rbf(x, y), rel=1e-12)
    assert mmd_rbf(x, y, bandwidth=0.8) == pytest.approx(
        _full_mmd2(*((torch.cdist(a, b) ** 2 / -1.28).exp() for a, b in ((x, x), (y, y), (x, y)))),
        rel=1e-12,
    )
    assert energy_distance(x, y) == pytest.approx(_full_energy(x, y), rel=1e-12)


def test_kid_at_its_default_subset_size_is_the_whole_matrix_computation_bit_for_bit():
    """1000-point subsets fit one block (2**23 // 1000 rows): KID is unchanged to the bit."""
    x = torch.randn(1200, 8, generator=_gen(12), dtype=torch.float64)
    y = torch.randn(1100, 8, generator=_gen(13), dtype=torch.float64) + 0.1
    assert kernel_inception_distance(x, y, subsets=2) == _full_kid(x, y, 2, 1000)


@pytest.mark.parametrize("ties", [False, True])
def test_median_bandwidth_in_blocks_is_torch_median_of_the_whole_matrix(monkeypatch, ties):
    """The streamed median of the squared cross distances is torch.median's (the lower middle
    value) of the whole matrix: with 60 x 45 entries in blocks of 7 rows, random points and
    points on an integer grid (many tied distances); the bracket from a sample of 9 entries and
    0 standard deviations misses, and the widened one (another pass) still lands exactly."""
    from scorelab.evaluation import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 7 * 45)
    x = torch.randn(60, 3, generator=_gen(14), dtype=torch.float64)
    y = torch.randn(45, 3, generator=_gen(15), dtype=torch.float64)
    if ties:
        x, y = (3 * x).round(), (3 * y).round()
    full = (torch.cdist(x, y) ** 2).median()
    assert metrics._median_squared_distance(x, y) == pytest.approx(float(full), rel=1e-12)
    calls = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b: calls.append(a.shape[0]) or cdist(a, b))
    monkeypatch.setattr(metrics, "MEDIAN_SAMPLE", 9)
    monkeypatch.setattr(metrics, "MEDIAN_SIGMAS", 0.0)
    assert metrics._median_squared_distance(x, y) == pytest.approx(float(full), rel=1e-12)
    assert sum(calls) > 60  # more than one pass over the rows: the first bracket missed


def test_no_pairwise_matrix_larger_than_a_block_at_3000_points(monkeypatch):
    """n = m = 3000 (9e6 entries, more than BLOCK_ELEMENTS = 2**23): every cdist and every
    kernel matmul of precision/recall, KID (one subset of all 3000), MMD and energy holds at
    most 2**23 // 3000 = 2796 rows of 3000, never the whole 3000 x 3000."""
    from scorelab.evaluation import metrics

    shapes = []
    cdist, matmul = torch.cdist, torch.Tensor.__matmul__

    def recording_cdist(a, b, *args, **kwargs):
        shapes.append((a.shape[0], b.shape[0]))
        return cdist(a, b, *args, **kwargs)

    def recording_matmul(a, b):
        out = matmul(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "cdist", recording_cdist)
    monkeypatch.setattr(torch.Tensor, "__matmul__", recording_matmul)
    x = torch.randn(3000, 4, generator=_gen(16))
    y = torch.randn(3000, 4, generator=_gen(17)) + 0.2
    precision_recall(x, y)
    kernel_inception_distance(x, y, subsets=1, subset_size=3000)
    mmd_rbf(x, y)
    energy_distance(x, y)
    assert len(shapes) > 10
    assert max(r * c for r, c in shapes) <= metrics.BLOCK_ELEMENTS
    assert max(r for r, _ in shapes) == 2**23 // 3000 < 3000


def test_the_feature_classifier_scores_its_test_images_in_batches(monkeypatch):
    """The test accuracy of a freshly trained feature classifier over 1100 test images: in
    forward passes of at most 512 images (all 10,000 Fashion-MNIST test images at once held 3 GB
    of activations), and equal to the share of whole-set predictions that are right."""
    from scorelab.evaluation.features import Classifier, train_classifier

    sizes = []
    forward = Classifier.forward
    monkeypatch.setattr(
        Classifier, "forward", lambda self, x: sizes.append(x.shape[0]) or forward(self, x)
    )
    x = torch.randn(300, 1, 8, 8, generator=_gen(18))
    x_test = torch.randn(1100, 1, 8, 8, generator=_gen(21))
    labels = torch.randint(3, (300,), generator=_gen(19))
    labels_test = torch.randint(3, (1100,), generator=_gen(20))
    model, accuracy = train_classifier(x, labels, x_test, labels_test, epochs=1)
    assert max(sizes) == 512 and sum(s for s in sizes if s != 128) == 1100
    with torch.no_grad():
        whole = float((forward(model, x_test).argmax(1) == labels_test).float().mean())
    assert accuracy == pytest.approx(whole, abs=1e-6)


@pytest.mark.parametrize("epochs, max_steps, steps", [(3, 1000, 15), (60, 7, 7)])
def test_the_feature_classifier_trains_epochs_or_max_steps_whichever_is_fewer(
    monkeypatch, epochs, max_steps, steps
):
    """640 images in batches of 128 are 5 steps an epoch: 3 epochs make 15 steps, and 60
    epochs (300 steps) stop at max_steps (on Fashion-MNIST's 10,000: 2000 of 4,680)."""
    from scorelab.evaluation.features import MAX_STEPS, train_classifier

    assert MAX_STEPS == 2000
    calls = []
    step = torch.optim.Adam.step
    monkeypatch.setattr(
        torch.optim.Adam, "step", lambda self, *a, **k: calls.append(1) or step(self, *a, **k)
    )
    x = torch.randn(640, 1, 8, 8, generator=_gen(30))
    labels = torch.randint(3, (640,), generator=_gen(31))
    train_classifier(x, labels, x[:10], labels[:10], epochs=epochs, max_steps=max_steps)
    assert len(calls) == steps


def test_median_bandwidth_of_an_odd_number_of_entries_takes_one_pass(monkeypatch):
    """61 x 45 = 2745 entries (odd: the middle one is the median, rank 1372): exactly
    torch.median's, found in one pass over the rows when the sampled bracket holds, as it does
    at the default 4 standard deviations."""
    from scorelab.evaluation import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 7 * 45)
    x = torch.randn(61, 3, generator=_gen(16), dtype=torch.float64)
    y = torch.randn(45, 3, generator=_gen(17), dtype=torch.float64)
    d2 = torch.cdist(x, y) ** 2
    assert metrics._median_squared_distance(x, y) == d2.flatten().sort().values[1372]
    calls = []
    cdist = torch.cdist
    monkeypatch.setattr(torch, "cdist", lambda a, b: calls.append(a.shape[0]) or cdist(a, b))
    metrics._median_squared_distance(x, y)
    assert sum(calls) == 61 and max(calls) == 7  # one pass, in blocks of 7 rows


def test_quantiles_interpolate_between_sorted_neighbours():
    """Mid-point quantiles of [0, 10, 20, 30] (given unsorted): at n = 2 the positions 0.5
    and 2.5 give 5 and 25; at n = 8 the positions i/2 - 1/4 clamp to the ends."""
    from scorelab.evaluation.metrics import _quantiles

    x = torch.tensor([[30.0, 0.0, 20.0, 10.0]], dtype=torch.float64)
    assert _quantiles(x, 2).tolist() == [[5.0, 25.0]]
    expected = [0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]
    assert _quantiles(x, 8).tolist() == [expected]
    assert _quantiles(x, 4).tolist() == [[0.0, 10.0, 20.0, 30.0]]


def test_precision_recall_counts_a_point_on_a_ball_boundary_and_needs_more_than_k():
    """Real points 0..4 on a line, k = 1: every ball has radius 1, so the fake point 5 lies on
    the boundary of 4's ball and counts (<=); 7 is outside; precision 3/4. Fake balls: radii
    2.5, 2.5, 2, 2 around 0, 2.5, 5, 7 cover every real point: recall 1."""
    real = torch.arange(5, dtype=torch.float64)[:, None]
    fake = torch.tensor([[5.0], [7.0], [2.5], [0.0]], dtype=torch.float64)
    assert precision_recall(real, fake, k=1) == (0.75, 1.0)
    with pytest.raises(ValueError, match="k=3 needs more than 3 samples"):
        precision_recall(real[:3], fake, k=3)
    precision_recall(real[:4], fake, k=3)  # 4 > 3 on both sides: allowed


def test_median_bracket_reaching_the_top_of_the_sample_is_unbounded(monkeypatch):
    """A sample of 16 at 4 standard deviations: at = 7.5 and width 8, so the bracket's top
    index is 16, past the sample: the upper bound is +inf (not sample[16]), still exact."""
    from scorelab.evaluation import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 7 * 45)
    monkeypatch.setattr(metrics, "MEDIAN_SAMPLE", 16)
    x = torch.randn(61, 3, generator=_gen(18), dtype=torch.float64)
    y = torch.randn(45, 3, generator=_gen(19), dtype=torch.float64)
    d2 = torch.cdist(x, y) ** 2
    assert metrics._median_squared_distance(x, y) == d2.flatten().sort().values[1372]


def test_quantile_positions_are_computed_in_the_datas_dtype():
    """n = 3 of m = 4: positions (i + 1/2) 4/3 - 1/2 = 1/6, 3/2, 17/6, inexact in float32."""
    from scorelab.evaluation.metrics import _quantiles

    x = torch.tensor([[0.0, 1.0, 10.0, 100.0]], dtype=torch.float64)
    pos = [1 / 6, 1.5, 17 / 6]
    expected = [(1 - p % 1) * x[0, int(p)] + (p % 1) * x[0, int(p) + 1] for p in pos]
    torch.testing.assert_close(_quantiles(x, 3)[0], torch.stack(expected), rtol=1e-15, atol=0)


def test_row_blocks_hold_at_most_block_elements_and_at_least_one_row(monkeypatch):
    from scorelab.evaluation import metrics

    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 4)
    a = torch.zeros(10, 2)
    assert [b.shape[0] for _, b in metrics._row_blocks(a, 1)] == [4, 4, 2]
    assert [i for i, _ in metrics._row_blocks(a, 2)] == [0, 2, 4, 6, 8]
    assert [b.shape[0] for _, b in metrics._row_blocks(a, 5)] == [1] * 10  # wider than a block


def test_precision_recall_uses_the_third_neighbour_by_default():
    """Real points 0, 1, 2, 3, 10 on a line; the fake point 20 is 10 from its nearest real
    point 10, whose radius is 9 at k = 3 (the default) and 10 at k = 4."""
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]], dtype=torch.float64)
    fake = torch.tensor([[-2.5], [20.0], [5.5], [6.0], [1.0]], dtype=torch.float64)
    # k = 3 radii: 0 -> 3, 1 -> 2, 2 -> 2, 3 -> 3, 10 -> 9: -2.5, 5.5, 6 (on 3's boundary)
    # and 1 are inside, 20 is not; at k = 4 the radius of 10 is 10 and 20 is inside
    assert precision_recall(real, fake)[0] == precision_recall(real, fake, k=3)[0]
    assert precision_recall(real, fake, k=3)[0] == 4 / 5
    assert precision_recall(real, fake, k=4)[0] == 1.0
