"""The VAE baseline end to end from the command line: train, resume, sample, eval, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scorelab.cli import main
from scorelab.runs import load_run
from scorelab.training.checkpoint import read_checkpoint
from tests.helpers import cli_fails as _fail
from tests.test_images import fake_sklearn

RING = [
    "--model", "vae", "--data", "ring", "--n-data", "400", "--width", "16", "--depth", "1",
    "--batch-size", "64", "--lr", "3e-3", "--warmup", "5", "--log-every", "10",
    "--ckpt-every", "20", "--no-progress",
]  # fmt: skip
DIGITS = [
    "--model", "vae", "--data", "digits", "--channels", "8", "--latent-dim", "4",
    "--batch-size", "32", "--lr", "2e-3", "--steps", "12", "--log-every", "4", "--no-progress",
]  # fmt: skip


def _eval(run, capsys, *flags):
    capsys.readouterr()
    assert main(["eval", str(run), "--format", "json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def ring_vae(tmp_path_factory):
    run = tmp_path_factory.mktemp("vae") / "ring"
    assert main(["train", *RING, "--steps", "40", "--out", str(run)]) == 0
    return run


def test_ring_vae_run_records_the_vae_and_writes_pictures(ring_vae):
    cfg = json.loads((ring_vae / "config.json").read_text())
    assert cfg["model"]["name"] == "vae" and cfg["objective"] == "elbo"
    assert cfg["model"]["latent_dim"] == 2 and cfg["model"]["decoder"] == "gaussian"
    for name in ("samples.png", "samples_aggregate.png", "loss.png", "metrics.csv"):
        assert (ring_vae / name).stat().st_size > 0, name


def test_resume_continues_exactly(ring_vae, tmp_path):
    """40 steps then --resume to 60 equals 60 steps straight: same weights, bit for bit (the
    warm-up spans both, so the learning rate does not depend on the total step count)."""
    straight = tmp_path / "straight"
    assert main(["train", *RING, "--warmup", "100", "--steps", "60", "--out", str(straight)]) == 0
    resumed = tmp_path / "resumed"
    assert main(["train", *RING, "--warmup", "100", "--steps", "40", "--out", str(resumed)]) == 0
    assert main(["train", "--steps", "60", "--out", str(resumed), "--resume", "--no-progress"]) == 0
    a, meta = read_checkpoint(straight / "checkpoint.safetensors")
    b, _ = read_checkpoint(resumed / "checkpoint.safetensors")
    assert meta["step"] == 60 and a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sample_from_prior_and_aggregate_posterior(ring_vae, tmp_path, capsys):
    for latents in ("prior", "aggregate"):
        out = tmp_path / f"{latents}.npy"
        assert (
            main(["sample", str(ring_vae), "--n", "50", "--out", str(out), "--latents", latents])
            == 0
        )
        x = np.load(out)
        assert x.shape == (50, 2) and np.isfinite(x).all()
    assert "1 NFE" in capsys.readouterr().out
    run = load_run(ring_vae)
    x, result = run.sample(10, seed=3)
    assert x.shape == (10, 2) and result.nfe == 1
    assert torch.equal(x, run.sample(10, seed=3)[0])  # seeded


def test_eval_elbo_below_iwae_in_data_units(ring_vae, capsys):
    """-ELBO >= -IWAE_k on average (Burda et al. 2016), same JSON keys as the diffusion NLL."""
    e = _eval(ring_vae, capsys, "--nll", "elbo", "--n", "500")
    w = _eval(ring_vae, capsys, "--nll", "iwae", "--k", "32", "--n", "500")
    for r in (e, w):
        assert {"nll_nats", "nll_bits_per_dim", "stderr_nats", "n"} <= r.keys()
        assert r["n"] == 500 and r["dim"] == 2
        assert r["nll_bits_per_dim"] == pytest.approx(r["nll_nats"] / (2 * np.log(2)))
    tol = 3 * float(np.hypot(e["stderr_nats"], w["stderr_nats"]))
    assert w["nll_nats"] <= e["nll_nats"] + tol
    assert w["k"] == 32 and e["likelihood"] == "density"


def test_digits_vae_trains_samples_and_evals(tmp_path, capsys, monkeypatch):
    fake_sklearn(monkeypatch, n=120)
    run = tmp_path / "digits"
    assert main(["train", *DIGITS, "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["image_size"] == 8 and cfg["model"]["decoder"] == "logistic"
    for name in ("samples.png", "samples_aggregate.png"):
        assert Image.open(run / name).size[0] > 8 * 3
    grid = tmp_path / "g.png"
    assert main(["sample", str(run), "--n", "9", "--out", str(grid), "--latents", "aggregate"]) == 0
    assert grid.is_file()
    assert main(["sample", str(run), "--n", "9", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").dtype == np.uint8
    e = _eval(run, capsys, "--nll", "elbo", "--n", "60")
    w = _eval(run, capsys, "--nll", "iwae", "--k", "8", "--n", "60")
    assert e["dim"] == 64 and e["likelihood"] == "discrete" and e["n"] == 60
    # a discrete probability: -log P(x) >= 0, and the bound holds up to noise
    assert e["nll_nats"] > 0 and w["nll_nats"] > 0
    assert w["nll_nats"] <= e["nll_nats"] + 3 * float(np.hypot(e["stderr_nats"], w["stderr_nats"]))
    _fail(["sample", str(run), "--n", "4", "--out", str(tmp_path / "t.gif")], capsys, "trajectory")


def test_bad_vae_input_is_one_line_exit_2(ring_vae, tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "x")
    _fail(["train", *RING, "--decoder", "nope", "--out", out], capsys, "unknown decoder")
    _fail(["train", *RING, "--decoder", "logistic", "--out", out], capsys, "vector data")
    _fail(["train", *RING, "--objective", "dsm", "--out", out], capsys, "ELBO")
    _fail(["train", *RING, "--beta", "0", "--out", out], capsys, "--beta")
    _fail(["eval", str(ring_vae), "--nll", "vlb"], capsys, "elbo or iwae")
    _fail(["eval", str(ring_vae), "--nll", "iwae", "--k", "0"], capsys, "--k")
    fake_sklearn(monkeypatch, n=40)
    _fail(["train", *DIGITS, "--decoder", "bernoulli", "--out", out], capsys, "binary")


def test_diffusion_run_refuses_vae_options(tmp_path, capsys):
    run = tmp_path / "ddpm"
    argv = ["train", "--data", "ring", "--n-data", "200", "--width", "16", "--depth", "1"]
    argv += ["--steps", "5", "--batch-size", "32", "--T", "20", "--out", str(run), "--no-progress"]
    assert main(argv) == 0
    _fail(["eval", str(run), "--nll", "elbo"], capsys, "vlb or ode")
    _fail([*argv, "--latent-dim", "3"], capsys, "--model vae only")
    out = str(tmp_path / "s.npy")
    _fail(["sample", str(run), "--out", out, "--latents", "prior"], capsys, "VAE runs only")
