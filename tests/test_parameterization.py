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


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_a_float_alpha_bar_converts_like_a_tensor(kind):
    """Samplers pass one alpha_bar for the whole batch as a Python float: the same numbers."""
    from scorelab.processes.parameterization import from_eps, to_eps

    g = torch.Generator().manual_seed(3)
    x_t, pred = torch.randn(2, 4, 3, generator=g, dtype=torch.float64).unbind(0)
    ab = 0.37
    as_tensor = torch.full((4,), ab, dtype=torch.float64)
    for f in (to_eps, from_eps):
        torch.testing.assert_close(f(pred, kind, x_t, ab), f(pred, kind, x_t, as_tensor))
    # and against the definitions: a = sqrt(0.37), sigma = sqrt(0.63)
    a, sigma = ab**0.5, (1 - ab) ** 0.5
    expected = {"eps": pred, "x0": (x_t - a * pred) / sigma, "v": sigma * x_t + a * pred,
                "score": -sigma * pred}  # fmt: skip
    torch.testing.assert_close(to_eps(pred, kind, x_t, ab), expected[kind])


@pytest.mark.parametrize("sde", ["ve", "subvp"])
@pytest.mark.parametrize("kind", ["x0", "score", "v"])
def test_as_eps_fn_on_an_sde_recovers_the_exact_eps(mixture_2d, sde, kind):
    """On an SDE whose x_t is not VP (input scale c != 1), each exact prediction of the
    Gaussian mixture wrapped by as_eps_fn gives the mixture's exact eps: x0 and v are defined
    in the VP view x~ = c x, the score in x itself (c grad log p~)."""
    from scorelab.processes import make_sde
    from scorelab.processes.parameterization import from_eps

    s = make_sde(sde)
    eps_fn = mixture_2d.eps_fn(s)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = torch.tensor([0.05, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64) * s.T
    c = s.input_scale(t)[:, None]
    assert (c - 1).abs().max() > 1e-3
    if kind == "score":
        model = mixture_2d.score_fn(s)
    else:

        def model(y, tt):  # the exact prediction of kind, in the VP view
            return from_eps(eps_fn(y, tt), kind, s.input_scale(tt)[:, None] * y, s.alpha_bar(tt))

    torch.testing.assert_close(as_eps_fn(model, s, kind)(x, t), eps_fn(x, t), rtol=1e-6, atol=1e-8)


def test_split_learned_variance_calls_the_network_once_at_the_given_time():
    from scorelab.processes.parameterization import split_learned_variance

    calls = []

    def net(x, t):
        calls.append(t)
        return torch.cat([x * t[:, None], x - t[:, None]], dim=1)

    prediction_fn, variance_fn = split_learned_variance(net)
    x, t = torch.ones(3, 2), torch.tensor([1.0, 2.0, 3.0])
    torch.testing.assert_close(prediction_fn(x, t), x * t[:, None])
    torch.testing.assert_close(variance_fn(x, t), (x - t[:, None] + 1) / 2)
    assert len(calls) == 1 and calls[0] is t  # shared by the two functions
    variance_fn(x, t.clone())
    assert len(calls) == 2  # another t object: a new call
    odd_fn, _ = split_learned_variance(lambda x, t: torch.zeros(3, 3))
    with pytest.raises(ScorelabError, match="2C channels, got 3"):
        odd_fn(x, t)
    four_fn, _ = split_learned_variance(lambda x, t: torch.zeros(3, 4))
    assert four_fn(x, t).shape == (3, 2)


def test_eps_is_the_default_prediction_and_the_error_lists_every_kind():
    from scorelab.processes.parameterization import PROCESS_PREDICTIONS

    f = lambda x, t: x  # noqa: E731
    assert as_eps_fn(f, make_schedule()) is f
    every = ", ".join((*PREDICTIONS, *PROCESS_PREDICTIONS))
    with pytest.raises(ScorelabError, match="choose one of: " + every + "$"):
        as_eps_fn(f, make_schedule(), "noise")


def test_conversions_keep_the_inputs_dtype_and_compute_in_the_wider_one():
    """float32 x with a float64 alpha_bar returns float32; a float32 alpha_bar with float64 x
    is widened before the square roots (the same as computing from its float64 value)."""
    from scorelab.processes.parameterization import to_eps

    g = torch.Generator().manual_seed(5)
    x64, pred64 = torch.randn(2, 3, 2, generator=g, dtype=torch.float64).unbind(0)
    ab32 = torch.tensor([0.3, 0.9, 0.999], dtype=torch.float32)
    out = to_eps(pred64, "x0", x64, ab32)
    ab = ab32.double()[:, None]
    assert out.dtype == torch.float64
    torch.testing.assert_close(
        out, (x64 - ab.sqrt() * pred64) / (1 - ab).sqrt(), rtol=1e-14, atol=0
    )
    out32 = to_eps(pred64.float(), "x0", x64.float(), ab32.double())
    assert out32.dtype == torch.float32


def test_x0_prediction_at_the_first_step_is_converted_in_float64():
    """At DDPM's t = 1, 1 - alpha_bar = 1e-4: a float32 alpha_bar would put a 3e-4 relative
    error into sigma, which eps = (x - a x0) / sigma carries; as_eps_fn reads it in float64."""
    s = make_schedule("linear")
    g = torch.Generator().manual_seed(6)
    x, x0 = torch.randn(2, 4, 3, generator=g).unbind(0)
    ab = s.alpha_bar_table[1]
    expected = (x.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()
    # per-example times, and one time expanded over the batch, as samplers pass it
    for t in (torch.ones(4), torch.tensor(1.0).expand(4)):
        eps = as_eps_fn(lambda x_, t_: x0, s, "x0")(x, t)
        torch.testing.assert_close(eps.double(), expected, rtol=2e-6, atol=0)
