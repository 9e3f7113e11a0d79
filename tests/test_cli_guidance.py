"""Guidance from the command line on tiny runs (2-D ring, 8x8 digits): conditional training,
train-classifier, sample --class with --cfg or --classifier, sweeps; bad input -> one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scorelab.cli import main
from tests.helpers import cli_fails as _fail
from tests.test_images import fake_sklearn

TINY_2D = [
    "--steps", "20", "--batch-size", "64", "--width", "16", "--depth", "1", "--n-data", "500",
    "--T", "50", "--no-progress",
]  # fmt: skip
TINY_CLS = [
    "--steps", "20", "--batch-size", "64", "--width", "16", "--depth", "1", "--n-data", "500",
    "--T", "50", "--no-progress",
]  # fmt: skip
UNET = [
    "--channels", "8", "--res-blocks", "1", "--attn-res", "none", "--steps", "4",
    "--batch-size", "16", "--T", "50", "--no-progress",
]  # fmt: skip
SAMPLE = ["--sampler", "ddim", "--steps", "5"]


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    root = tmp_path_factory.mktemp("ring")
    run, nodrop, uncond, cls = (root / n for n in ("run", "nodrop", "uncond", "cls"))
    assert main(["train", "--data", "ring", "--cond-drop", "0.2", "--out", str(run), *TINY_2D]) == 0
    few = [*TINY_2D[2:], "--steps", "3"]  # these two only need to exist
    assert main(["train", "--data", "ring", "--conditional", "--out", str(nodrop), *few]) == 0
    assert main(["train", "--data", "ring", "--out", str(uncond), *few]) == 0
    assert main(["train-classifier", "--data", "ring", "--out", str(cls), *TINY_CLS]) == 0
    return run, nodrop, uncond, cls


def test_ring_config_records_classes_and_dropout(ring):
    run, nodrop, uncond, cls = ring
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["conditional"] and cfg["model"]["num_classes"] == 8
    assert cfg["train"]["cond_drop"] == 0.2
    assert json.loads((nodrop / "config.json").read_text())["train"]["cond_drop"] == 0
    assert json.loads((uncond / "config.json").read_text())["model"]["num_classes"] == 0
    assert "alpha_bar" in (cls / "accuracy.md").read_text()


def test_ring_sampling_with_every_kind_of_guidance(ring, tmp_path, capsys):
    run, nodrop, uncond, cls = ring
    for extra in (
        ["--class", "3"],
        ["--class", "3", "--cfg", "2"],
        ["--class", "3", "--classifier", str(cls), "--scale", "2"],
    ):
        out = tmp_path / "s.npy"
        assert main(["sample", str(run), "--n", "16", "--out", str(out), *SAMPLE, *extra]) == 0
        assert np.load(out).shape == (16, 2)
    argv = ["sample", str(uncond), "--n", "16", "--out", str(tmp_path / "u.png"), *SAMPLE]
    assert main([*argv, "--class", "1", "--classifier", str(cls)]) == 0
    for src, extra in ((run, []), (uncond, ["--classifier", str(cls)])):
        out = tmp_path / "sweep.png"
        argv = ["sample", str(src), "--sweep-classes", "--scales", "0,2", "--n", "10"]
        assert main([*argv, "--out", str(out), *SAMPLE, *extra]) == 0
        assert Image.open(out).size[0] > 100


def test_ring_bad_guidance_is_one_line(ring, tmp_path, capsys):
    run, nodrop, uncond, cls = ring
    out = ["--out", str(tmp_path / "x.npy"), "--n", "4", *SAMPLE]
    _fail(["sample", str(nodrop), "--class", "1", "--cfg", "1", *out], capsys, "--cond-drop 0")
    _fail(["sample", str(uncond), "--class", "1", "--cfg", "1", *out], capsys, "unconditional")
    _fail(["sample", str(uncond), "--class", "1", *out], capsys, "--classifier")
    _fail(["sample", str(run), "--class", "8", *out], capsys, "--class must be in 0..7")
    _fail(["sample", str(run), "--cfg", "1", *out], capsys, "need --class")
    _fail(["sample", str(run), "--class", "1", "--cfg", "-1", *out], capsys, "must be")
    both = ["--class", "1", "--cfg", "1", "--classifier", str(cls)]
    _fail(["sample", str(run), *both, *out], capsys, "not both")
    _fail(["sample", str(run), "--class", "1", "--classifier", str(run), *out], capsys,
          f"{run} does not hold a classifier (a diffusion run?)")  # fmt: skip
    _fail(["sample", str(run), "--class", "1", "--classifier", str(tmp_path), *out], capsys,
          f"no checkpoint at {tmp_path / 'checkpoint.safetensors'}")  # fmt: skip
    sweep = ["--sweep-classes", "--out", str(tmp_path / "s.npy")]
    _fail(["sample", str(run), *sweep], capsys, ".png")
    _fail(["sample", str(uncond), "--sweep-classes", "--out", str(tmp_path / "s.png")], capsys,
          "needs --classifier")  # fmt: skip


def test_classifier_must_match_the_runs_process(ring, tmp_path, capsys):
    run = ring[0]
    cls = tmp_path / "cls100"
    argv = ["train-classifier", "--data", "ring", "--out", str(cls), *TINY_CLS]
    argv[argv.index("--T") + 1] = "100"
    argv[argv.index("--steps") + 1] = "2"
    assert main(argv) == 0
    out = ["--out", str(tmp_path / "x.npy"), "--n", "4", *SAMPLE]
    _fail(["sample", str(run), "--class", "1", "--classifier", str(cls), *out], capsys, "T=100")


def test_bad_labels_and_conditional_training(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.arange(50) % 3)
    np.save(tmp_path / "short.npy", np.arange(10))
    np.save(tmp_path / "float.npy", np.ones(50))
    base = ["train", "--data", str(tmp_path / "x.npy"), *TINY_2D]
    assert main([*base, "--labels", str(tmp_path / "y.npy"), "--cond-drop", "0.1",
                 "--out", str(tmp_path / "ok")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "ok" / "config.json").read_text())["model"]["num_classes"] == 3
    _fail([*base, "--labels", str(tmp_path / "short.npy"), "--conditional", "--out",
           str(tmp_path / "a")], capsys, "10 labels for 50 data rows")  # fmt: skip
    _fail([*base, "--labels", str(tmp_path / "float.npy"), "--conditional", "--out",
           str(tmp_path / "b")], capsys, "integer")  # fmt: skip
    _fail([*base, "--conditional", "--out", str(tmp_path / "c")], capsys, "no labels")
    _fail(["train", "--data", "moons", "--cond-drop", "0.1", "--out", str(tmp_path / "d"),
           *TINY_2D], capsys, "no labels")  # fmt: skip
    _fail(["train", "--data", "ring", "--cond-drop", "1.5", "--out", str(tmp_path / "e")],
          capsys, "[0, 1)")  # fmt: skip
    _fail(["train-classifier", "--data", "moons", "--out", str(tmp_path / "f"), *TINY_CLS],
          capsys, "no labels")  # fmt: skip


def test_digits_conditional_and_classifier_guidance(tmp_path, capsys, monkeypatch):
    fake_sklearn(monkeypatch, n=60)
    run, cls = tmp_path / "run", tmp_path / "cls"
    assert main(["train", "--data", "digits", "--cond-drop", "0.1", "--out", str(run), *UNET]) == 0
    cls_argv = ["train-classifier", "--data", "digits", "--out", str(cls), "--steps", "4",
                "--batch-size", "16", "--channels", "8", "--T", "50", "--no-progress"]  # fmt: skip
    assert main(cls_argv) == 0
    assert "accuracy" in capsys.readouterr().out
    out = tmp_path / "g.png"
    for extra in (["--cfg", "1"], ["--classifier", str(cls), "--scale", "3"]):
        argv = ["sample", str(run), "--class", "7", "--n", "4", "--out", str(out), *SAMPLE]
        assert main([*argv, *extra]) == 0
    sweep = ["sample", str(run), "--sweep-classes", "--scales", "0,1", "--n", "2", *SAMPLE]
    assert main([*sweep, "--out", str(out)]) == 0
    # 10 rows of classes; 2 scales x 2 samples + a spacer column
    w, h = Image.open(out).size
    assert h > w and abs(h / w - 10 / 5) < 0.1
    _fail(["sample", str(run), "--class", "10", "--out", str(out), "--n", "2", *SAMPLE], capsys,
          "0..9")  # fmt: skip
