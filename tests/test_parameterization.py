"""eps <-> x0 <-> v <-> score: exact round trips and agreement with the definitions."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab.errors import ScorelabError
from scorelab.processes import (
    as_eps_fn,
    convert,
    denoiser_from_eps,
    from_denoiser,
    from_score,
    make_schedule,
    q_sample,
    score_from_eps,
    target,
)
from scorelab.typing import PREDICTIONS

kinds = st.sampled_from(PREDICTIONS)
shapes = st.sampled_from([(5, 2), (3, 1, 8, 8), (4, 3, 2), (1, 7)])


@given(kinds, kinds, shapes, st.floats(1, 999), st.integers(0, 2**31))
def test_round_trip_is_exact(src, dst, shape, t, seed):
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(shape, generator=g, dtype=torch.float64)
    pred = torch.randn(shape, generator=g, dtype=torch.float64)
    ab = s.alpha_bar(torch.full((shape[0],), t, dtype=torch.float64))
    back = convert(convert(pred, src, dst, x_t, ab), dst, src, x_t, ab)
    assert torch.allclose(back, pred, rtol=1e-9, atol=1e-9)


@given(kinds, shapes, st.floats(1, 1000), st.integers(0, 2**31))
def test_conversions_match_the_definitions(kind, shape, t, seed):
    """With x_t made from (x0, eps), converting the true eps gives the true x0, v and score."""
    s = make_schedule("cosine")
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    tt = torch.full((shape[0],), t, dtype=torch.float64)
    ab = s.alpha_bar(tt)
    x_t = q_sample(s, x0, tt, eps)
    a = ab.sqrt().reshape((-1,) + (1,) * (len(shape) - 1))
    sigma = (1 - ab).sqrt().reshape(a.shape)
    truth = {"eps": eps, "x0": x0, "v": a * eps - sigma * x0, "score": -eps / sigma}
    assert torch.allclose(convert(eps, "eps", kind, x_t, ab), truth[kind], rtol=1e-6, atol=1e-6)
    assert torch.allclose(target(kind, x0, eps, ab), truth[kind], rtol=1e-6, atol=1e-6)


def test_adapters_agree(generator):
    s = make_schedule("linear")
    x = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    t = torch.tensor([1.0, 10, 100, 500, 900, 1000], dtype=torch.float64)
    eps_fn = lambda x, t: torch.tanh(x) * (t[:, None] / 1000)  # noqa: E731
    score_fn = score_from_eps(eps_fn, s)
    assert torch.allclose(from_score(score_fn, s)(x, t), eps_fn(x, t), rtol=1e-9, atol=1e-12)
    d = denoiser_from_eps(eps_fn, s)
    assert torch.allclose(from_denoiser(d, s)(x, t), eps_fn(x, t), rtol=1e-7, atol=1e-9)
    assert as_eps_fn(eps_fn, s, "eps") is eps_fn


def test_unknown_prediction_is_a_clear_error():
    with pytest.raises(ScorelabError, match="unknown prediction 'noise'; choose one of"):
        as_eps_fn(lambda x, t: x, make_schedule(), "noise")
