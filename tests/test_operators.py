"""Linear observation operators: adjoint, pseudo-inverse, dense matrix and SVD, exactly."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.errors import ScorelabError
from scorelab.operators import (
    OPERATORS,
    AvgPool,
    GaussianBlur,
    Identity,
    Mask,
    RandomProjection,
)


@st.composite
def operators(draw):
    """One operator of each kind with a random shape and random parameters."""
    kind = draw(st.sampled_from(sorted(OPERATORS)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    c, h, w = draw(st.integers(1, 2)), draw(st.integers(3, 6)), draw(st.integers(3, 6))
    if kind == "identity":
        return Identity(draw(st.sampled_from([(5,), (c, h, w)])))
    if kind == "mask":
        if draw(st.booleans()):
            return Mask.random((c, h, w), draw(st.floats(0.1, 1.0)), g)
        top, left = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
        bh, bw = draw(st.integers(1, h - top)), draw(st.integers(1, w - left))
        if bh == h and bw == w:  # the whole image hidden observes nothing
            bh -= 1
        return Mask.box((c, h, w), top, left, max(bh, 1), bw)
    if kind == "avg_pool":
        f = draw(st.integers(1, 3))
        return AvgPool(f, (c, f * draw(st.integers(1, 3)), f * draw(st.integers(1, 3))))
    if kind == "gaussian_blur":
        size = draw(st.sampled_from([1, 3]))
        return GaussianBlur(draw(st.floats(0.3, 1.0)), size, (c, h, w))
    return RandomProjection(draw(st.integers(1, 8)), draw(st.integers(1, 8)), g)


def _random_pair(op, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, *op.shape, generator=g, dtype=torch.float64)
    y = torch.randn(3, *op.out_shape, generator=g, dtype=torch.float64)
    return x, y


def _flat(x):
    return x.reshape(x.shape[0], -1)


@given(operators(), st.integers(0, 2**31))
def test_transpose_is_the_adjoint(op, seed):
    x, y = _random_pair(op, seed)
    lhs = (_flat(op.forward(x)) * _flat(y)).sum(1)
    rhs = (_flat(x) * _flat(op.transpose(y))).sum(1)
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-10)


@given(operators(), st.integers(0, 2**31))
def test_matrix_acts_as_forward(op, seed):
    x, _ = _random_pair(op, seed)
    d, m = math.prod(op.shape), math.prod(op.out_shape)
    a = op.matrix(d)
    assert a.shape == (m, d) and a.dtype == torch.float64
    assert torch.allclose(_flat(x) @ a.T, _flat(op.forward(x)), rtol=0, atol=1e-12)


@given(operators(), st.integers(0, 2**31))
def test_pinv_is_the_minimal_norm_solution(op, seed):
    x, y = _random_pair(op, seed)
    ax = op.forward(x)
    assert torch.allclose(op.forward(op.pinv(ax)), ax, rtol=0, atol=1e-10)
    pinv = torch.linalg.pinv(op.matrix(math.prod(op.shape)))
    assert op.pinv(y).shape == x.shape
    assert torch.allclose(_flat(op.pinv(y)), _flat(y) @ pinv.T, rtol=1e-8, atol=1e-10)


@given(operators(), st.integers(0, 2**31))
def test_svd_reconstructs_the_matrix(op, seed):
    """U diag(s) V^T = A with orthonormal U and V, and vt, ut are the transposes of v, u."""
    assert op.has_svd
    x, y = _random_pair(op, seed)
    s, vt, ut, v, u = op.svd()
    r = s.numel()
    eye = torch.eye(r, dtype=torch.float64)
    big_u, big_v = _flat(u(eye)).T, _flat(v(eye)).T  # (m, r), (d, r)
    assert torch.allclose(big_u.T @ big_u, eye, atol=1e-12)
    assert torch.allclose(big_v.T @ big_v, eye, atol=1e-12)
    assert (s >= 0).all()
    a = op.matrix(math.prod(op.shape))
    assert torch.allclose(big_u @ torch.diag(s) @ big_v.T, a, rtol=0, atol=1e-12)
    assert torch.allclose(vt(x), _flat(x) @ big_v, atol=1e-12)
    assert torch.allclose(ut(y), _flat(y) @ big_u, atol=1e-12)


def test_operators_keep_float32():
    op = GaussianBlur(1.0, 3, (1, 6, 6))
    x = torch.randn(2, 1, 6, 6)
    assert op.forward(x).dtype == torch.float32 and op.pinv(x).dtype == torch.float32


def test_mask_keeps_the_observed_values():
    mask = Mask.box((1, 4, 4), 1, 1, 2, 2)
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert mask.out_shape == (12,)
    assert torch.equal(mask.forward(x)[0], x.flatten()[mask.mask.flatten()])
    back = mask.transpose(mask.forward(x))
    assert torch.equal(back, x * mask.mask) and torch.equal(mask.pinv(mask.forward(x)), back)
    assert int(Mask.random((2, 5, 5), 0.4, torch.Generator().manual_seed(0)).mask.sum()) == 20


def test_avg_pool_averages_blocks_and_pinv_repeats():
    op = AvgPool(2, (1, 4, 4))
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    expected = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]], dtype=torch.float64)
    assert torch.equal(op.forward(x), expected)
    assert torch.equal(op.pinv(expected)[0, 0, :2, :2], torch.full((2, 2), 2.5).double())


def test_blur_is_a_circular_gaussian_convolution():
    """Against an explicit circular convolution with the normalized 3x3 Gaussian."""
    op = GaussianBlur(0.7, 3, (1, 5, 6))
    x = torch.randn(2, 1, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    g = torch.exp(-0.5 * (torch.arange(-1, 2, dtype=torch.float64) / 0.7) ** 2)
    k = (g[:, None] * g[None, :]) / g.sum() ** 2
    expected = sum(
        k[i + 1, j + 1] * x.roll((i, j), dims=(-2, -1)) for i in (-1, 0, 1) for j in (-1, 0, 1)
    )
    assert torch.allclose(op.forward(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Mask(torch.tensor([0.0, 0.5, 1.0])),
        lambda: Mask(torch.zeros(3, 3)),
        lambda: Mask.box((1, 4, 4), 2, 2, 3, 1),
        lambda: Mask.random((4, 4), 0.0),
        lambda: AvgPool(3, (1, 4, 6)),
        lambda: GaussianBlur(1.0, 4, (1, 6, 6)),
        lambda: GaussianBlur(1.0, 7, (1, 6, 6)),
        lambda: GaussianBlur(0.0, 3, (1, 6, 6)),
        lambda: RandomProjection(0, 4),
    ],
)
def test_bad_operators_are_refused(make):
    with pytest.raises(ScorelabError):
        make()


@pytest.mark.parametrize(
    "op",
    [
        Identity((2, 3)),
        Mask.box((1, 4, 4), 1, 1, 2, 2),
        AvgPool(2, (1, 4, 4)),
        GaussianBlur(1.0, 3, (1, 4, 4)),
        RandomProjection(3, 5),
    ],
    ids=lambda op: type(op).__name__,
)
def test_wrong_shapes_name_expected_and_got(op):
    bad = torch.zeros(2, 7)
    for method in (op.forward, op.transpose, op.pinv):
        with pytest.raises(ScorelabError, match=r"expected \(B, .*got \(2, 7\)"):
            method(bad)
    with pytest.raises(ScorelabError):
        op.matrix(math.prod(op.shape) + 1)
