"""scorelab restore end to end on tiny runs (2-D ring, 8x8 digits): every task, pictures,
.npy, --observed, JSON with NFE and measurement consistency; bad input -> one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from scorelab.cli import main
from tests.helpers import cli_fails
from tests.test_images import fake_sklearn

TINY_2D = [
    "--steps", "20", "--batch-size", "64", "--width", "16", "--depth", "1", "--n-data", "500",
    "--T", "50", "--no-progress",
]  # fmt: skip
UNET = [
    "--channels", "8", "--res-blocks", "1", "--attn-res", "none", "--steps", "4",
    "--batch-size", "16", "--T", "50", "--no-progress",
]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("restore")
    ring, digits = root / "ring", root / "digits"
    assert main(["train", "--data", "ring", "--out", str(ring), *TINY_2D]) == 0
    mp = pytest.MonkeyPatch()
    fake_sklearn(mp, n=60)
    try:
        assert main(["train", "--data", "digits", "--out", str(digits), *UNET]) == 0
    finally:
        mp.undo()
    np.save(root / "point.npy", np.array([1.5, -0.5], dtype=np.float32))
    image = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(image).save(root / "digit.png")
    return ring, digits, root


def restore(capsys, run, *argv: str) -> dict:
    assert main(["restore", str(run), "--steps", "5", "--format", "json", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_ring_every_vector_task(runs, tmp_path, capsys):
    ring, _, root = runs
    point = str(root / "point.npy")
    for task, extra, m in (
        ("inpaint", ["--fraction", "0.5"], 1), ("denoise", [], 2),
        ("cs", ["--measurements", "1"], 1),
    ):  # fmt: skip
        out = tmp_path / f"{task}.npy"
        report = restore(capsys, ring, "--task", task, *extra, "--input", point, "--n", "6",
                         "--out", str(out), "--method", "pigdm", "--sigma-y", "0.1")  # fmt: skip
        assert np.load(out).shape == (6, 2)
        assert report["nfe"] == 5 and len(report["residual"]) == 6 and report["seconds"] >= 0
        assert report["expected_residual"] == pytest.approx(0.1 * m**0.5)


def test_ring_methods_and_observed_input(runs, tmp_path, capsys):
    ring, _, root = runs
    y = tmp_path / "y.npy"
    np.save(y, np.array([0.7], dtype=np.float32))
    for method, opts in (("dps", ["--opt", "zeta=0.5"]), ("ddnm", []), ("repaint", []),
                         ("sdedit", ["--opt", "t0=0.3"])):  # fmt: skip
        report = restore(capsys, ring, "--task", "inpaint", "--input", str(y), "--observed",
                         "--sigma-y", "0", "--method", method, "--n", "4", *opts,
                         "--out", str(tmp_path / "x.npy"))  # fmt: skip
        assert report["method"] == method and len(report["residual"]) == 4
    report = restore(capsys, ring, "--task", "inpaint", "--input", str(y), "--observed",
                     "--sigma-y", "0", "--method", "repaint", "--n", "4",
                     "--out", str(tmp_path / "x.npy"))  # fmt: skip
    assert max(report["residual"]) < 1e-5  # repaint keeps the observed entry at sigma_y = 0
    for spacing, want in ((None, "quadratic"), ("uniform", "uniform")):
        more = ["--spacing", spacing] if spacing else []
        report = restore(capsys, ring, "--task", "inpaint", "--input", str(y), "--observed",
                         "--sigma-y", "0", "--method", "diffpir", "--n", "4", *more,
                         "--out", str(tmp_path / "x.npy"))  # fmt: skip
        assert report["spacing"] == want and max(report["residual"]) < 1e-5  # A x = y at 0


def test_digits_every_image_task(runs, tmp_path, capsys):
    _, digits, root = runs
    png = str(root / "digit.png")
    for task, extra in (
        ("inpaint", ["--box", "2,2,4,4"]), ("sr", ["--factor", "2"]),
        ("deblur", ["--blur-sigma", "0.8"]), ("denoise", []), ("inpaint", ["--fraction", "0.3"]),
    ):  # fmt: skip
        out = tmp_path / f"{task}.png"
        report = restore(capsys, digits, "--task", task, *extra, "--input", png, "--n", "3",
                         "--out", str(out))  # fmt: skip
        assert report["nfe"] == 5 and len(report["residual"]) == 3
        width, height = Image.open(out).size
        assert width > 5 * height  # one row: A^+ y, 3 samples, mean, std
    out = tmp_path / "s.npy"
    assert main(["restore", str(digits), "--task", "sr", "--input", png, "--n", "2",
                 "--steps", "3", "--out", str(out)]) == 0  # fmt: skip
    assert np.load(out).shape == (2, 1, 8, 8)
    assert "posterior samples" in capsys.readouterr().out


def test_bad_input_is_one_line(runs, tmp_path, capsys):
    ring, digits, root = runs
    point, png = str(root / "point.npy"), str(root / "digit.png")
    base = ["--out", str(tmp_path / "x.npy"), "--steps", "2", "--n", "2"]
    cases = [
        ([str(ring), "--task", "sr", "--input", point], "needs an image run"),
        ([str(digits), "--task", "cs", "--input", png], "needs a vector run"),
        ([str(ring), "--task", "inpaint", "--box", "0,0,1,1", "--input", point], "--box applies"),
        ([str(digits), "--task", "inpaint", "--box", "6,6,4,4", "--input", png], "leaves"),
        ([str(digits), "--task", "sr", "--method", "repaint", "--input", png], "Mask"),
        ([str(ring), "--task", "denoise", "--input", png], "--input must have shape (2,)"),
        ([str(ring), "--task", "denoise", "--input", str(root / "nope.npy")], "does not exist"),
        ([str(ring), "--task", "denoise", "--input", point, "--opt", "zeta=1"], "unknown option"),
        ([str(ring), "--task", "denoise", "--input", point, "--sigma-y", "-1"], "--sigma-y"),
        ([str(ring), "--task", "denoise", "--input", point, "--method", "nope"], "invalid choice"),
        ([str(ring), "--task", "cs", "--input", point, "--observed"], "the observation"),
    ]  # fmt: skip
    for argv, words in cases:
        cli_fails(["restore", *argv, *base], capsys, words)
    cli_fails(["restore", str(ring), "--task", "denoise", "--input", point, "--out",
               str(tmp_path / "x.png")], capsys, "--out must end in .npy")  # fmt: skip
