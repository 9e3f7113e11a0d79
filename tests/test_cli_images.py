"""Image runs end to end from the command line: train, sample (grid, GIF, npy), eval, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from scorelab.cli import main
from tests.helpers import cli_fails as _fail
from tests.test_images import fake_sklearn

UNET = [
    "--channels", "8", "--res-blocks", "1", "--attn-res", "4", "--steps", "12",
    "--batch-size", "16", "--log-every", "4", "--T", "50", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    fake_sklearn(mp, n=120)
    run = tmp_path_factory.mktemp("img") / "digits"
    try:
        assert (
            main(["train", "--data", "digits", "--out", str(run), "--sample-every", "6", *UNET])
            == 0
        )
    finally:
        mp.undo()
    return run


def test_train_writes_pictures_and_a_unet_config(digits_run):
    cfg = json.loads((digits_run / "config.json").read_text())
    assert cfg["model"]["name"] == "unet" and cfg["model"]["image_size"] == 8
    assert cfg["model"]["in_channels"] == 1 and cfg["data"] == "digits"
    for name in ("samples.png", "trajectory.gif", "trajectory_strip.png", "loss.png"):
        assert (digits_run / name).stat().st_size > 0, name
    assert Image.open(digits_run / "trajectory.gif").n_frames > 10


def test_sample_grid_gif_and_npy(digits_run, tmp_path, capsys):
    common = ["--n", "9", "--sampler", "ddim", "--steps", "5"]
    assert main(["sample", str(digits_run), "--out", str(tmp_path / "g.png"), *common]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8 * 3
    assert main(["sample", str(digits_run), "--out", str(tmp_path / "t.gif"), *common]) == 0
    assert Image.open(tmp_path / "t.gif").n_frames == 6
    assert (tmp_path / "t_strip.png").is_file()
    assert main(["sample", str(digits_run), "--out", str(tmp_path / "s.npy"), *common]) == 0
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (9, 8, 8) and arr.dtype == np.uint8
    _fail(["sample", str(digits_run), "--out", str(tmp_path / "x.txt")], capsys, ".gif")


def test_eval_metrics_json_with_floors_and_the_cached_classifier(digits_run, tmp_path, capsys):
    """Every number of `scorelab eval --format json` recomputed here from its definition: the
    data are split by the documented seeded permutation (seed 0) into a reference half (60)
    and a held-out half, the floor is the metric between the first 40 held-out images and the
    reference, the value between the run's 40 samples (DDIM, 5 steps, seed 0) and the same
    reference; the classifier's test accuracy is its accuracy on the held-out half. Data-space
    metrics are recomputed on the images, fd and pr on the cached classifier's features. A
    12-step model is far from its data: every distance is above its floor and its recall below.
    Catches a floor against the samples or the held-out set as its own reference, samples
    compared with the held-out half, and an accuracy measured on the training half."""
    from scorelab.data import load_images
    from scorelab.evaluation.features import classifier_features, load_or_train_classifier
    from scorelab.evaluation.metrics import (
        energy_distance,
        frechet_distance,
        mmd_rbf,
        precision_recall,
        sliced_wasserstein,
    )
    from scorelab.runs import load_run

    mp = pytest.MonkeyPatch()
    fake_sklearn(mp, n=120)
    try:
        argv = ["eval", str(digits_run), "--metrics", "fd,kid,pr,swd,energy,mmd", "--n", "40",
                "--steps", "5", "--format", "json"]  # fmt: skip
        capsys.readouterr()
        assert main(argv) == 0
        out = json.loads(capsys.readouterr().out)
        assert (digits_run / "features.safetensors").is_file()
        assert main([*argv[:-2], "--format", "text"]) == 0  # the cached classifier is reused
        text = capsys.readouterr().out
        images = load_images("digits", 8)
    finally:
        mp.undo()
    assert set(out) == {"fd", "kid", "precision", "recall", "swd", "energy", "mmd"}
    for r in out.values():
        assert {"value", "floor", "n", "features", "small_n"} <= set(r)
        assert r["n"] == 40 and r["small_n"] is True and r["n_reference"] == 60
    assert "classifier" in out["fd"]["features"] and out["swd"]["features"] == "data space"
    assert "floor" in text and "small n=40" in text and "training the feature" not in text

    perm = torch.randperm(120, generator=torch.Generator().manual_seed(0))
    reference, held = images.x[perm[60:]], images.x[perm[:60]]
    samples, _ = load_run(digits_run).sample(40, seed=0, sampler="ddim", steps=5)
    for name, metric in (("swd", sliced_wasserstein), ("energy", energy_distance),
                         ("mmd", mmd_rbf)):  # fmt: skip
        assert out[name]["floor"] == pytest.approx(metric(held[:40], reference), rel=1e-9)
        assert out[name]["value"] == pytest.approx(metric(samples, reference), rel=1e-9)
    classifier, _ = load_or_train_classifier(
        digits_run, reference, images.labels[perm[60:]], held, images.labels[perm[:60]]
    )
    with torch.no_grad():
        correct = (classifier(held).argmax(1) == images.labels[perm[:60]]).sum()
    assert out["fd"]["classifier_test_accuracy"] == pytest.approx(int(correct) / 60, abs=1e-6)
    features = classifier_features(classifier)
    f_ref, f_held, f_samples = features(reference), features(held[:40]), features(samples)
    assert out["fd"]["floor"] == pytest.approx(frechet_distance(f_held, f_ref), rel=1e-6)
    assert out["fd"]["value"] == pytest.approx(frechet_distance(f_samples, f_ref), rel=1e-6)
    precision, recall = precision_recall(f_ref, f_samples)
    assert (out["precision"]["value"], out["recall"]["value"]) == (precision, recall)
    for name in ("fd", "kid", "swd", "energy", "mmd"):
        assert out[name]["value"] > out[name]["floor"], name
    assert out["recall"]["value"] < out["recall"]["floor"]


def test_eval_fid_without_weights_says_how(digits_run, capsys):
    _fail(["eval", str(digits_run), "--metrics", "fid", "--n", "4"], capsys, "never downloads")
    _fail(["eval", str(digits_run), "--metrics", "fud"], capsys, "unknown metric 'fud'")


def test_folder_run_and_npy_samples_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(6):
            arr = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
            (tmp_path / "imgs" / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "imgs" / label / f"{i}.png")
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "imgs"), "--image-size", "8", "--hflip",
            "--out", str(run), *UNET]  # fmt: skip
    assert main(argv) == 0
    assert json.loads((run / "config.json").read_text())["model"]["in_channels"] == 3
    assert main(["sample", str(run), "--out", str(tmp_path / "s.npy"), "--n", "4", "--steps", "3",
                 "--sampler", "ddim"]) == 0  # fmt: skip
    assert np.load(tmp_path / "s.npy").shape == (4, 8, 8, 3)
    capsys.readouterr()
    assert main(["eval", str(run), "--samples", str(tmp_path / "s.npy"), "--metrics", "swd",
                 "--format", "json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["swd"]["n"] == 4


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image-size", "6", "--channel-mult", "1,2,2"], "not divisible by 2^2"),
        (["--model", "mlp"], "needs --model unet"),
        (["--precision", "fp16"], "fp16 needs a CUDA device"),
        (["--device", "cuda"], "no CUDA device"),
        (["--batch-size", "10", "--micro-batches", "3"], "not divisible by --micro-batches"),
    ],
)
def test_bad_image_runs(tmp_path, capsys, extra, message):
    if "--device" in extra and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    np.save(tmp_path / "d.npy", np.zeros((8, 8, 8), dtype=np.uint8))
    _fail(["train", "--data", str(tmp_path / "d.npy"), "--out", str(tmp_path / "r"), *UNET,
           *extra], capsys, message)  # fmt: skip


def test_empty_folder_and_unet_on_vectors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _fail(["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "r")], capsys,
          "no images found")  # fmt: skip
    _fail(["train", "--data", "moons", "--model", "unet", "--out", str(tmp_path / "r")], capsys,
          "takes images")  # fmt: skip


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_training(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((8, 8, 8), dtype=np.uint8))
    argv = ["train", "--data", str(tmp_path / "d.npy"), "--out", str(tmp_path / "r"), *UNET,
            "--device", "cuda", "--precision", "bf16"]  # fmt: skip
    assert main(argv) == 0
