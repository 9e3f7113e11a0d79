"""Conditional models, label dropout, a trained noise-aware classifier and guided sampling of
trained 2-D models (statistical, fixed seeds, small nets; the ring's components are the
classes and separated, so the exact mixture's posterior names the component of a sample)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from scorelab.config import MLPConfig, RunConfig, ScheduleConfig, TrainConfig
from scorelab.data import load_dataset, load_dataset_labels, load_labels
from scorelab.errors import DataError, ScorelabError
from scorelab.nn import MLP, UNet
from scorelab.objectives import classifier_loss, drop_labels
from scorelab.oracle import ring_mixture
from scorelab.processes import make_schedule
from scorelab.runs import load_run, train
from scorelab.runs.classifier import ClassifierConfig, load_classifier, train_classifier

SCHEDULE = ScheduleConfig("linear", T=100)
SMALL = MLPConfig(width=48, depth=2)


def _train_cfg(steps: int, cond_drop: float = 0.0) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=128, lr=3e-3, warmup=20, ckpt_every=steps, cond_drop=cond_drop
    )


def _rate(x: torch.Tensor, k: int) -> float:
    """The fraction of samples whose most likely ring component (exact posterior) is k."""
    return float((ring_mixture().responsibilities(x.double()).argmax(1) == k).double().mean())


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    cfg = RunConfig(
        data="ring",
        n_data=4000,
        model=SMALL,
        schedule=SCHEDULE,
        train=_train_cfg(200, cond_drop=0.2),
        conditional=True,
    )
    train(cfg, out, progress=False, log=lambda m: None)
    return load_run(out)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "cls"
    cfg = ClassifierConfig(data="ring", n_data=4000, model=SMALL, schedule=SCHEDULE)
    cfg = dataclasses.replace(cfg, train=_train_cfg(200))
    _, rows = train_classifier(cfg, out, progress=False, log=lambda m: None)
    return out, rows


def test_label_embedding_has_a_null_class_and_starts_unconditional():
    torch.manual_seed(0)
    for net, x in (
        (MLP(2, 16, 1, num_classes=3), torch.randn(5, 2)),
        (UNet(1, 8, 8, (1, 2), 1, (), num_classes=3), torch.randn(5, 1, 8, 8)),
    ):
        t = torch.full((5,), 10.0)
        y = torch.tensor([0, 1, 2, 3, 0])  # 3 = the null class
        assert net.label.table.num_embeddings == 4
        # zero-initialized table: every label is the unconditional net at first
        assert torch.equal(net(x, t, y), net(x, t))
        torch.nn.init.normal_(net.label.table.weight)
        if isinstance(net, UNet):
            torch.nn.init.normal_(net.out[-1].weight)  # the U-Net starts as the zero function
        assert torch.equal(net(x, t, torch.full((5,), 3)), net(x, t))  # None = null
        assert not torch.allclose(net(x, t, torch.zeros(5, dtype=torch.long)), net(x, t))


def test_label_dropout_drops_about_p_of_the_labels():
    y = torch.randint(0, 10, (40_000,), generator=torch.Generator().manual_seed(0))
    for p in (0.1, 0.5):
        out = drop_labels(y, p, 10, generator=torch.Generator().manual_seed(1))
        dropped = out == 10
        assert abs(float(dropped.double().mean()) - p) < 0.01
        assert torch.equal(out[~dropped], y[~dropped])  # the rest are untouched
    assert torch.equal(drop_labels(y, 0.0, 10), y)


def test_ring_labels_are_the_components_and_npy_labels_are_checked(tmp_path):
    x, y = load_dataset("ring", 500, seed=3), load_dataset_labels("ring", 500, seed=3)
    assert _rate(x[y == 5], 5) == 1.0 and _rate(x[y == 2], 2) == 1.0
    assert load_dataset_labels("moons", 10) is None
    np.save(tmp_path / "ok.npy", np.arange(4))
    assert torch.equal(load_labels(tmp_path / "ok.npy", 4), torch.arange(4))
    for arr, message in (
        (np.arange(3), "3 labels for 4 data rows"),
        (np.ones(4) * 0.5, "integer"),
        (np.array([0, 1, -1, 2]), ">= 0"),
    ):
        np.save(tmp_path / "bad.npy", arr)
        with pytest.raises(DataError, match=message):
            load_labels(tmp_path / "bad.npy", 4)


def test_classifier_accuracy_falls_with_the_noise_level(classifier_dir):
    out, rows = classifier_dir
    acc = [r["accuracy"] for r in rows]
    assert acc[0] > 0.9  # nearly clean: the components barely overlap
    assert acc[-1] < 0.2  # t near T: x_t is noise, chance is 1/8
    assert acc[0] > acc[2] > acc[5] > acc[-1] - 0.03
    assert (out / "accuracy.md").is_file() and (out / "accuracy.csv").is_file()
    assert load_classifier(out).num_classes == 8


def test_classifier_guided_rate_rises_with_the_scale(cond_run, classifier_dir):
    cls = load_classifier(classifier_dir[0])
    opts = {"sampler": "ddim", "steps": 25, "seed": 3}
    rates = [
        _rate(cond_run.sample(300, y=2, classifier=cls, scale=s, **opts)[0], 2)
        for s in (0.0, 1.0, 4.0)
    ]
    assert rates[0] < 0.3  # s = 0: the unconditional (null-class) model, ~1/8
    assert rates[0] < rates[1] < rates[2] + 1e-9 and rates[2] > 0.9, rates


def test_cfg_rate_rises_with_w_and_w0_is_conditional_sampling(cond_run):
    opts = {"sampler": "ddim", "steps": 25, "seed": 4}
    uncond = _rate(cond_run.sample(300, **opts)[0], 6)
    cond = cond_run.sample(300, y=6, **opts)[0]
    assert uncond < 0.3 and _rate(cond, 6) > 0.5  # chance: 1/8
    # w = 0 is plain conditional sampling, exactly (same noise)
    assert torch.equal(cond_run.sample(300, y=6, cfg=0.0, **opts)[0], cond)
    assert _rate(cond_run.sample(300, y=6, cfg=3.0, **opts)[0], 6) >= _rate(cond, 6)


def test_cfg_needs_label_dropout_and_labels_in_range(cond_run, tmp_path):
    cfg = RunConfig(
        data="ring",
        n_data=500,
        model=SMALL,
        schedule=SCHEDULE,
        train=_train_cfg(3),
        conditional=True,
    )
    train(cfg, tmp_path / "nodrop", progress=False, log=lambda m: None)
    run = load_run(tmp_path / "nodrop")
    assert run.num_classes == 8 and run.config.train.cond_drop == 0
    run.sample(4, y=1, steps=2)  # plain conditional sampling works
    with pytest.raises(ScorelabError, match="--cond-drop 0"):
        run.sample(4, y=1, cfg=1.0, steps=2)
    with pytest.raises(ScorelabError, match=r"--class must be in 0\.\.7"):
        cond_run.sample(4, y=8, cfg=1.0, steps=2)
    with pytest.raises(ScorelabError, match="need --class"):
        cond_run.sample(4, cfg=1.0, steps=2)


def test_conditional_training_needs_labels_and_the_discrete_schedule(tmp_path):
    base = RunConfig(n_data=200, model=SMALL, schedule=SCHEDULE, train=_train_cfg(2))
    with pytest.raises(DataError, match="no labels"):
        train(base.replace(data="moons", conditional=True), tmp_path / "a", progress=False)
    with pytest.raises(ScorelabError, match="--conditional"):
        train(base.replace(data="ring", objective="dsm", conditional=True), tmp_path / "b")
    drop = dataclasses.replace(base.train, cond_drop=0.1)
    with pytest.raises(ScorelabError, match="add --conditional"):
        train(base.replace(data="ring", train=drop), tmp_path / "c", progress=False)


def test_drop_labels_with_p_zero_returns_y_and_draws_nothing():
    y = torch.tensor([0, 1, 2, 3])
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert drop_labels(y, 0.0, 9, generator=g) is y
    assert torch.equal(g.get_state(), state)


def test_drop_labels_drops_where_the_generators_uniform_is_below_p():
    y = torch.arange(8)
    u = torch.rand(8, generator=torch.Generator().manual_seed(5))
    p = float(u[3])  # exactly the 4th draw: kept, P(u < p) = p
    expected = torch.where(u < p, torch.full_like(y, -1), y)
    torch.manual_seed(0)
    got = drop_labels(y, p, -1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, expected) and got[3] == 3
    # without a generator it draws from the global RNG on y's device
    torch.manual_seed(2)
    u2 = torch.rand(8)
    torch.manual_seed(2)
    assert torch.equal(drop_labels(y, 0.5, -1), torch.where(u2 < 0.5, -1, y))


def test_classifier_loss_is_the_cross_entropy_at_x_t_from_the_generator():
    s = make_schedule("linear", T=40)
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]], dtype=torch.float64)
    ref = torch.Generator().manual_seed(4)
    t = torch.randint(1, 41, (5,), generator=ref).double()
    eps = torch.randn(5, 2, generator=ref, dtype=torch.float64)
    ab = torch.stack([s.alpha_bar(ti.reshape(1)).double()[0] for ti in t])
    x_t = ab.sqrt()[:, None] * x0 + (1 - ab).sqrt()[:, None] * eps
    logits = x_t @ w + t[:, None] / 40
    expected = torch.logsumexp(logits, 1) - logits[torch.arange(5), y]
    seen = {}

    def clf(x, tt):
        seen["t"] = tt
        return x @ w + tt.double()[:, None] / 40

    torch.manual_seed(0)
    got = classifier_loss(clf, x0, y, schedule=s, generator=torch.Generator().manual_seed(4))
    assert got.shape == (5,) and torch.equal(seen["t"].double(), t)
    assert torch.allclose(got.double(), expected, rtol=1e-5, atol=1e-6)
