"""`scorelab compare`: a diffusion run and a VAE run on the same data, as HTML and markdown."""

from __future__ import annotations

import base64
import re

import pytest
import torch

from scorelab.cli import main
from scorelab.evaluation.latent import prior_coverage
from tests.test_images import fake_sklearn
from tests.test_vae_run import DIGITS, _fail

SMALL = ["--n-data", "300", "--width", "16", "--depth", "1", "--batch-size", "64"]
SMALL += ["--steps", "20", "--no-progress"]


@pytest.fixture(scope="module")
def ring_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmp")
    ddpm, vae = root / "ring_ddpm", root / "ring_vae"
    assert main(["train", "--data", "ring", "--T", "20", *SMALL, "--out", str(ddpm)]) == 0
    assert main(["train", "--model", "vae", "--data", "ring", *SMALL, "--out", str(vae)]) == 0
    return ddpm, vae


def _check_report(out, names):
    page = (out / "index.html").read_text()
    md = (out / "report.md").read_text()
    for name in names:
        assert name in page and name in md
    assert page.count("<table>") >= 4 and "src='data:image/png;base64," in page
    for blob in re.findall(r"base64,([A-Za-z0-9+/=]+)'", page):  # real PNGs, embedded
        assert base64.b64decode(blob)[:8] == b"\x89PNG\r\n\x1a\n"
    for heading in ("## Runs", "## Sampling", "## Sample metrics", "## NLL bounds"):
        assert heading in md
    assert "## Aggregate posterior" in md and "KL(q(z) \\|\\| p(z))" in md
    assert "http" not in page.replace("http-equiv", "")  # self-contained
    return page, md


def test_compare_ring_diffusion_and_vae(ring_runs, tmp_path, capsys):
    ddpm, vae = ring_runs
    out = tmp_path / "report"
    argv = ["compare", str(ddpm), str(vae), "--out", str(out), "--n", "200", "--n-nll", "50"]
    assert main(argv) == 0
    page, md = _check_report(out, ["ring_ddpm", "ring_vae"])
    for word in ("precision", "recall", "swd", "elbo", "iwae", "vlb", "ddim, 20 steps"):
        assert word in md, word
    assert md.count("![") == 3  # two sample scatters and the VAE's aggregate-posterior one


def test_compare_digits_diffusion_and_vae(tmp_path, monkeypatch):
    fake_sklearn(monkeypatch, n=120)
    ddpm, vae = tmp_path / "dig_ddpm", tmp_path / "dig_vae"
    unet = ["--channels", "8", "--res-blocks", "1", "--attn-res", "none", "--steps", "4"]
    unet += ["--batch-size", "16", "--T", "10", "--no-progress"]
    assert main(["train", "--data", "digits", *unet, "--out", str(ddpm)]) == 0
    assert main(["train", *DIGITS, "--out", str(vae)]) == 0
    out = tmp_path / "report"
    argv = ["compare", str(ddpm), str(vae), "--out", str(out), "--n", "60", "--n-nll", "20"]
    argv += ["--steps", "5", "--k", "4"]
    assert main(argv) == 0
    _, md = _check_report(out, ["dig_ddpm", "dig_vae"])
    for word in ("fd", "kid", "precision", "elbo", "vlb"):
        assert word in md, word


def test_compare_errors_are_one_line(ring_runs, tmp_path, capsys):
    ddpm, vae = ring_runs
    out = str(tmp_path / "r")
    _fail(["compare", str(tmp_path / "missing"), "--out", out], capsys, "does not exist")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.safetensors").write_bytes(b"not a checkpoint")
    _fail(["compare", str(corrupt), "--out", out], capsys, "cannot load")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fail(["compare", str(empty), str(vae), "--out", out], capsys, "cannot load")
    other = tmp_path / "moons"
    assert main(["train", "--model", "vae", "--data", "moons", *SMALL, "--out", str(other)]) == 0
    _fail(["compare", str(ddpm), str(other), "--out", out], capsys, "different data")
    _fail(["compare", str(ddpm), "--out", out, "--n", "0"], capsys, "--n")


def test_prior_coverage_is_zero_when_q_is_the_prior():
    """q(z) made of components at the prior's own draws with tiny variance approaches p(z);
    a shifted q is far: its KL and MMD exceed the matched one's."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    log_var = torch.full_like(mean, -8.0)
    near = prior_coverage(mean, log_var, n=1000, generator=g)
    far = prior_coverage(mean + 3.0, log_var, n=1000, generator=g)
    assert abs(near["mmd"] - near["mmd_floor"]) < 0.01
    assert far["mmd"] > 0.2 and far["kl"] > near["kl"] + 3.0
