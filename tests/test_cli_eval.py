"""`scorelab eval` end to end: text and JSON output with sane values, the VLB plot, learned
variance through `train --variance learned --objective hybrid`, and every bad input's one-line
error with exit status 2."""

import json
import math

import numpy as np
import pytest

from scorelab.cli import main
from tests.helpers import cli_fails as _fail

TINY = [
    "--steps",
    "60",
    "--batch-size",
    "64",
    "--width",
    "16",
    "--depth",
    "1",
    "--n-data",
    "500",
    "--T",
    "50",
    "--log-every",
    "10",
    "--no-progress",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", "ring", "--out", str(run), *TINY]) == 0
    return run


def _json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_ode_json_has_the_keys_and_sane_values(trained, capsys):
    out = _json(capsys, ["eval", str(trained), "--nll", "ode", "--n", "100", "--format", "json"])
    assert {"nll_nats", "nll_bits_per_dim", "stderr_nats", "n", "nfe"} <= set(out)
    assert out["n"] == 100 and out["nfe"] > 0 and out["dim"] == 2
    assert math.isfinite(out["nll_nats"]) and 0 < out["stderr_nats"] < 1
    assert out["nll_bits_per_dim"] == pytest.approx(out["nll_nats"] / (2 * math.log(2)))
    # the ring's entropy is about 2.2 nats; an undertrained model is worse, not absurd
    assert 1.0 < out["nll_nats"] < 8.0
    hutch = _json(
        capsys,
        [
            "eval",
            str(trained),
            "--nll",
            "ode",
            "--n",
            "100",
            "--format",
            "json",
            "--divergence",
            "hutchinson",
            "--probes",
            "2",
        ],
    )
    assert hutch["probes"] == 2 and abs(hutch["nll_nats"] - out["nll_nats"]) < 0.5


def test_eval_vlb_text_and_plot(trained, tmp_path, capsys):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=(50, 2)).astype(np.float32))
    assert (
        main(
            [
                "eval",
                str(trained),
                "--nll",
                "vlb",
                "--data",
                str(tmp_path / "d.npy"),
                "--plot",
                str(tmp_path / "v.png"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "nats/example" in out and "bits/dim" in out and "n=50" in out and "±" in out
    assert (tmp_path / "v.png").stat().st_size > 0
    js = _json(capsys, ["eval", str(trained), "--nll", "vlb", "--n", "200", "--format", "json"])
    assert js["n"] == 200 and "nfe" not in js and (trained / "vlb_terms.png").is_file()
    ode = _json(capsys, ["eval", str(trained), "--nll", "ode", "--n", "200", "--format", "json"])
    assert js["nll_nats"] > ode["nll_nats"] - 3 * (js["stderr_nats"] + ode["stderr_nats"])


def test_learned_variance_run_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "learned"
    assert (
        main(
            [
                "train",
                "--data",
                "ring",
                "--out",
                str(run),
                "--variance",
                "learned",
                "--objective",
                "hybrid",
                *TINY,
            ]
        )
        == 0
    )
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["variance"] == "learned" and cfg["objective"] == "hybrid"
    out = _json(capsys, ["eval", str(run), "--nll", "vlb", "--n", "100", "--format", "json"])
    assert out["variance"] == "learned" and math.isfinite(out["nll_nats"])
    assert (
        main(["sample", str(run), "--n", "20", "--steps", "5", "--out", str(tmp_path / "s.npy")])
        == 0
    )
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_bad_variance_objective_pairs(tmp_path, capsys):
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "a"), "--objective", "hybrid", *TINY],
        capsys,
        "go together",
    )
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "b"), "--variance", "learned", *TINY],
        capsys,
        "go together",
    )
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "c"), "--variance", "huge", *TINY],
        capsys,
        "unknown variance 'huge'",
    )
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "d"), "--t-sampling", "x", *TINY],
        capsys,
        "--t-sampling",
    )


def test_eval_bad_input(trained, tmp_path, capsys):
    _fail(["eval", str(tmp_path / "nope"), "--nll", "vlb"], capsys, "does not exist")
    np.save(tmp_path / "d3.npy", np.zeros((5, 3), dtype=np.float32))
    _fail(
        ["eval", str(trained), "--nll", "ode", "--data", str(tmp_path / "d3.npy")],
        capsys,
        "features",
    )
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0], [0.0, 0.0]]))
    _fail(
        ["eval", str(trained), "--nll", "ode", "--data", str(tmp_path / "nan.npy")],
        capsys,
        "NaN or infinite",
    )
    _fail(["eval", str(trained), "--nll", "vlb", "--data", "spiral"], capsys, "unknown dataset")
    _fail(["eval", str(trained), "--nll", "elbo"], capsys, "VAE bound")  # a diffusion run
    for argv in (["--nll", "nope"], ["--nll", "ode", "--probes", "0"]):
        with pytest.raises(SystemExit) as e:
            main(["eval", str(trained), *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err
    _fail(["eval", str(trained), "--nll", "ode", "--metrics", "swd"], capsys, "not both")
