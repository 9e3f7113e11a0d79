"""The metric registry: every registered metric is reported with its floor, an unknown name is
one line naming the registered ones, and a metric registered anywhere (here, a toy) reaches
evaluate_metrics, `scorelab eval --help` and the default set with no other code touched."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import scorelab.reports.metrics as report
from scorelab.build import build_data
from scorelab.cli import main
from scorelab.config import RunConfig, UNetConfig
from scorelab.data import load_dataset
from scorelab.errors import ScorelabError
from scorelab.evaluation.features import pixel_features
from scorelab.evaluation.registry import (
    METRICS,
    compared_metrics,
    default_metrics,
    register_metric,
    unregister_metric,
)
from scorelab.reports.metrics import evaluate_metrics, split_reference
from tests.helpers import cli_fails

N = 30


def _quiet(message: str) -> None:
    pass


# evaluate_metrics reads only a run's config (and run_dir, for a classifier's cache) when it
# is given the samples: a loaded run is not needed, and nothing is trained
@pytest.fixture
def vector_run(tmp_path):
    run = SimpleNamespace(config=RunConfig(data="ring", n_data=200), run_dir=tmp_path)
    return run, load_dataset("ring", N, seed=5) * 1.1


@pytest.fixture
def image_run(tmp_path, monkeypatch):
    images = np.random.default_rng(0).integers(0, 256, (80, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)  # unlabelled: the "features" are the pixels
    cfg = RunConfig(data=str(tmp_path / "images.npy"), model=UNetConfig(image_size=8))
    # fid's Inception-v3 needs a weights file: the pixels stand in, the plumbing is the same
    monkeypatch.setattr(report, "inception_features", lambda weights: pixel_features)
    samples = torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return SimpleNamespace(config=cfg, run_dir=tmp_path), samples


def _names_for(kind: str) -> list[str]:
    return [name for name, spec in METRICS.items() if kind in spec.applies_to]


@pytest.mark.parametrize("kind", ["vectors", "images"])
def test_every_registered_metric_is_reported_with_its_floor(kind, vector_run, image_run):
    run, samples = vector_run if kind == "vectors" else image_run
    names = _names_for(kind)
    results = evaluate_metrics(run, names, N, samples=samples, log=_quiet)
    keys = [key for name in names for key in METRICS[name].keys]
    assert list(results) == keys  # in the order asked, pr as precision and recall
    for key, r in results.items():
        assert {"value", "floor", "n", "n_floor", "n_reference", "features"} <= set(r), key
        assert math.isfinite(r["value"]) and math.isfinite(r["floor"]), key
        assert r["n"] == r["n_floor"] == N and r["small_n"] is True


def test_every_metric_applies_somewhere_and_the_report_covers_the_registry():
    assert set(_names_for("vectors")) | set(_names_for("images")) == set(METRICS)
    for name, spec in METRICS.items():
        assert spec.summary and spec.paper and spec.keys, name
        assert set(spec.compare) <= set(spec.applies_to), name
    assert set(default_metrics()) <= set(METRICS)


def test_unknown_metric_is_one_line_naming_the_registered_ones(tmp_path, capsys):
    listing = ", ".join(METRICS)
    cli_fails(
        ["eval", str(tmp_path), "--metrics", "fd,nope"],
        capsys,
        f"unknown metric 'nope'; choose from: {listing}",
    )


def test_a_metric_on_the_wrong_kind_of_run_is_refused(vector_run):
    run, samples = vector_run
    with pytest.raises(ScorelabError, match="fid applies to image runs only"):
        evaluate_metrics(run, ["fid"], N, samples=samples, log=_quiet)


def _mean_gap(x: torch.Tensor, y: torch.Tensor, *, order: int = 2) -> float:
    """A toy metric: the distance between the two sets' means."""
    gap = x.reshape(x.shape[0], -1).mean(0) - y.reshape(y.shape[0], -1).mean(0)
    return float(gap.norm(p=order))


def test_a_registered_toy_metric_reaches_the_report_the_help_and_the_defaults(vector_run, capsys):
    run, samples = vector_run
    assert "mean_gap" not in METRICS
    try:
        register_metric(
            "mean_gap",
            space="data",
            summary="distance between the means",
            paper="none",
            compare=("vectors",),
            default=True,
            options={"order": 1},
        )(_mean_gap)
        results = evaluate_metrics(run, None, N, samples=samples, log=_quiet)
        assert list(results)[-1] == "mean_gap" and "swd" in results  # with the default set
        reference, held_out, _, _ = split_reference(build_data(run.config), None)
        r = results["mean_gap"]
        # the value is samples vs the reference half; the floor the held-out half vs the same
        assert r["value"] == pytest.approx(_mean_gap(samples, reference, order=1), rel=1e-12)
        assert r["floor"] == pytest.approx(_mean_gap(held_out[:N], reference, order=1))
        assert r["order"] == 1 and r["features"] == "data space" and r["data"] == "ring"
        assert compared_metrics("vectors")[-1] == "mean_gap"
        assert "mean_gap" not in compared_metrics("images")
        with pytest.raises(SystemExit):
            main(["eval", "--help"])
        help_text = " ".join(capsys.readouterr().out.split())
        assert "mean_gap (distance between the means; none)" in help_text
        assert "fd,kid,pr,swd,mean_gap" in help_text
    finally:
        unregister_metric("mean_gap")
    assert "mean_gap" not in METRICS and "mean_gap" not in default_metrics()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"space": "latent"}, "unknown space 'latent'"),
        ({"applies_to": ("vectors",), "compare": ("images",)}, "within applies_to"),
        ({"applies_to": ()}, "applies_to must be"),
        ({"keys": ("precision",)}, "'precision' is 'pr''s"),
        ({"options": {"bandwidth": 1.0}}, "not a keyword parameter"),
    ],
)
def test_registration_checks_what_it_is_told(changes, message):
    options = {"space": "data", "summary": "s", "paper": "p", **changes}
    with pytest.raises(TypeError, match=message):
        register_metric("toy", **options)(_mean_gap)
    assert "toy" not in METRICS


def test_a_name_is_registered_once():
    with pytest.raises(TypeError, match="already registered"):
        register_metric("fd", space="data", summary="s", paper="p")(_mean_gap)
    assert METRICS["fd"].space == "features"
