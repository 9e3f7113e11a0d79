"""Guidance against the exact classifier of a Gaussian mixture (p(y | x_t) in closed form)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from scorelab import make_schedule, sample
from scorelab.errors import ScorelabError
from scorelab.oracle import GaussianMixture, ring_mixture
from scorelab.samplers.guidance import (
    classifier_free_guided,
    classifier_guided,
    classifier_log_prob_grad,
    conditional,
)
from tests.test_samplers import _check_mixture

SCHEDULE = make_schedule("linear")
RING = ring_mixture(n_modes=4, radius=2.0, std=0.3)


def _points(seed: int, n: int = 64) -> torch.Tensor:
    return 2 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@given(st.floats(1.0, 999.0), st.integers(0, 3), st.integers(0, 10_000))
def test_classifier_gradient_is_the_difference_of_scores(t, y, seed):
    """grad log p(y | x_t) = grad log p_t(x | y) - grad log p_t(x) (Bayes)."""
    x = _points(seed)
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    ab = SCHEDULE.alpha_bar(tt)
    grad = classifier_log_prob_grad(RING.classifier_fn(SCHEDULE), x, tt, y)
    expected = RING.component(y).score(x, ab) - RING.score(x, ab)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-8)


@given(st.floats(1.0, 999.0), st.integers(0, 3), st.integers(0, 10_000))
def test_scale_one_with_the_exact_classifier_is_the_conditional_eps(t, y, seed):
    x = _points(seed)
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    guided = classifier_guided(
        RING.eps_fn(SCHEDULE), SCHEDULE, RING.classifier_fn(SCHEDULE), y, scale=1.0
    )
    torch.testing.assert_close(
        guided(x, tt), RING.component(y).eps_fn(SCHEDULE)(x, tt), rtol=1e-8, atol=1e-8
    )


@given(st.floats(0.0, 8.0), st.floats(1.0, 999.0), st.integers(0, 3), st.integers(0, 10_000))
def test_cfg_weight_w_is_classifier_guidance_at_scale_1_plus_w(w, t, y, seed):
    """eps(x|y) - eps(x) = -sigma grad log p(y|x), so CFG with w is classifier guidance with
    the exact classifier at s = 1 + w; w = 0 is plain conditional sampling."""
    x = _points(seed)
    tt = torch.full((x.shape[0],), t, dtype=torch.float64)
    cond = RING.cond_eps_fn(SCHEDULE)
    cfg = classifier_free_guided(cond, y, scale=w, null_label=RING.n_components)
    cg = classifier_guided(
        RING.eps_fn(SCHEDULE), SCHEDULE, RING.classifier_fn(SCHEDULE), y, scale=1 + w
    )
    torch.testing.assert_close(cfg(x, tt), cg(x, tt), rtol=1e-7, atol=1e-7)
    if w == 0:
        torch.testing.assert_close(cfg(x, tt), conditional(cond, y)(x, tt))


@pytest.mark.parametrize(
    ("sampler", "steps", "options"),
    [
        ("ddpm", 250, {"variance": "beta"}),
        ("ddim", 100, {"spacing": "quadratic"}),
        ("dpm-solver++", 25, {"order": 2}),
        ("euler-maruyama", 250, {}),
    ],
)
def test_guided_sampling_reproduces_the_class_conditional_gaussian(sampler, steps, options):
    y = 1
    guided = classifier_guided(
        RING.eps_fn(SCHEDULE), SCHEDULE, RING.classifier_fn(SCHEDULE), y, scale=1.0
    )
    run = lambda fn: sample(  # noqa: E731
        fn, (3000, 2), SCHEDULE, sampler, steps, dtype=torch.float64,
        generator=torch.Generator().manual_seed(11), **options,
    ).x
    out = run(guided)
    # the same path as sampling the exact conditional (same noise): guidance adds no error ...
    torch.testing.assert_close(out, run(RING.component(y).eps_fn(SCHEDULE)), rtol=1e-7, atol=1e-7)
    # ... and that path lands on the class's Gaussian (within the sampler's own bias)
    _check_mixture(out, RING.component(y), bias=0.06)


def test_fraction_in_the_requested_class_rises_with_the_scale():
    # two overlapping classes: at s = 0 about half the samples are class 0
    mix = GaussianMixture(
        torch.ones(2), torch.tensor([[-0.6, 0.0], [0.6, 0.0]], dtype=torch.float64),
        torch.full((2,), 0.36, dtype=torch.float64),
    )
    rates = []
    for scale in (0.0, 1.0, 3.0):
        guided = classifier_guided(
            mix.eps_fn(SCHEDULE), SCHEDULE, mix.classifier_fn(SCHEDULE), 0, scale=scale
        )
        x = sample(
            guided, (2000, 2), SCHEDULE, "ddim", 30, dtype=torch.float64,
            generator=torch.Generator().manual_seed(4),
        ).x
        rates.append(float((mix.responsibilities(x).argmax(1) == 0).double().mean()))
    assert abs(rates[0] - 0.5) < 0.05
    assert rates[0] + 0.1 < rates[1] < rates[2] - 0.03, rates


def test_bad_guidance_input_is_rejected():
    eps, clf = RING.eps_fn(SCHEDULE), RING.classifier_fn(SCHEDULE)
    x, t = _points(0, 4), torch.full((4,), 500.0, dtype=torch.float64)
    with pytest.raises(ScorelabError, match="scale"):
        classifier_guided(eps, SCHEDULE, clf, 0, scale=-1.0)
    with pytest.raises(ScorelabError, match="out of range"):
        classifier_guided(eps, SCHEDULE, clf, 7, scale=1.0)(x, t)
    with pytest.raises(ScorelabError, match="labels"):
        classifier_guided(eps, SCHEDULE, clf, torch.tensor([0, 1]), scale=1.0)(x, t)
    with pytest.raises(ScorelabError, match="logits"):
        classifier_guided(eps, SCHEDULE, lambda x, t: x.sum(1), 0, scale=1.0)(x, t)
    with pytest.raises(ScorelabError, match="weight"):
        classifier_free_guided(RING.cond_eps_fn(SCHEDULE), 0, scale=-0.5, null_label=4)
    with pytest.raises(ScorelabError, match="component"):
        RING.component(9)


def test_classifier_gradient_checks_labels_and_logits_and_guides_at_scale_one():
    """Exact small case: logits W x (two classes, W = [[1, 0], [0, 2]]) give
    grad log softmax_y = W_y - sum_k p_k W_k; labels may come as floats, the last class is
    C - 1, and the default guidance scale is 1: eps - sigma_t grad."""
    from scorelab.samplers.guidance import classifier_guided, classifier_log_prob_grad

    w = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)

    def classifier_fn(x, t):
        return x @ w.T

    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=torch.float64)
    t = torch.tensor([100.0, 100.0], dtype=torch.float64)
    p = torch.softmax(x @ w.T, dim=1)
    y = torch.tensor([1.0, 0.0])  # float labels are taken as class indices
    expected = w[y.long()] - p @ w
    torch.testing.assert_close(classifier_log_prob_grad(classifier_fn, x, t, y), expected)
    with pytest.raises(ScorelabError, match=r"label out of range 0\.\.1$"):
        classifier_log_prob_grad(classifier_fn, x, t, 2)
    with pytest.raises(ScorelabError, match=r"labels must be an int or \(2,\), got \(3,\)"):
        classifier_log_prob_grad(classifier_fn, x, t, torch.tensor([0, 1, 1]))
    with pytest.raises(ScorelabError, match=r"logits \(B, classes\), got \(2,\)"):
        classifier_log_prob_grad(lambda x, t: x.sum(1), x, t, 0)
    s = make_schedule("linear")
    sigma = (1 - s.alpha_bar(t)).sqrt()[:, None]
    guided = classifier_guided(lambda x, t: torch.zeros_like(x), s, classifier_fn, y)
    torch.testing.assert_close(guided(x, t), -sigma * expected)


def test_guided_eps_keeps_the_dtype_and_label_errors_name_the_batch():
    from scorelab.samplers.guidance import _labels, classifier_guided

    with pytest.raises(ScorelabError, match=r"an int or \(2,\), got \(3,\)"):
        _labels(torch.tensor([0, 1, 1]), torch.zeros(2, 5))
    from scorelab.processes import make_sde

    s = make_sde("vp")  # its alpha_bar is float64 whatever t's dtype
    guided = classifier_guided(
        lambda x, t: torch.zeros_like(x), s, lambda x, t: x[:, :2] * t[:, None], 1, scale=2.0
    )
    x = torch.randn(4, 3)
    assert guided(x, torch.full((4,), 0.5)).dtype == torch.float32
