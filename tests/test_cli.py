"""The command line end to end on tiny runs, exact resume, and every bad input's clear error."""

import csv
import json

import numpy as np
import pytest
from safetensors import safe_open

from scorelab.cli import main
from tests.helpers import cli_fails as _fail

TINY = [
    "--steps",
    "30",
    "--batch-size",
    "64",
    "--width",
    "16",
    "--depth",
    "1",
    "--n-data",
    "500",
    "--log-every",
    "1",
    "--no-progress",
]


def _losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [(int(r["step"]), r["loss"]) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "--data", "moons", "--out", str(run), *TINY]) == 0
    return run


def test_train_writes_a_complete_run(trained):
    assert {"config.json", "checkpoint.safetensors", "metrics.csv", "loss.png"} <= {
        p.name for p in trained.iterdir()
    }
    cfg = json.loads((trained / "config.json").read_text())
    assert cfg["data"] == "moons" and cfg["train"]["steps"] == 30 and cfg["model"]["dim"] == 2
    with safe_open(str(trained / "checkpoint.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["step"]) == 30
    assert any(k.startswith("ema/") for k in keys) and any(k.startswith("model/") for k in keys)
    assert [s for s, _ in _losses(trained)] == list(range(1, 31))


def test_a_runs_config_json_reproduces_it_and_flags_override_it(trained, tmp_path):
    again = tmp_path / "again"
    assert main(["train", "--config", str(trained / "config.json"), "--out", str(again),
                 "--no-progress"]) == 0  # fmt: skip
    assert json.loads((again / "config.json").read_text()) == json.loads(
        (trained / "config.json").read_text()
    )
    assert _losses(again) == _losses(trained)  # same seed, same config: the same run
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"train": {"steps": 7, "lr": 1}, "data": "ring"}))
    other = tmp_path / "other"
    argv = ["train", "--config", str(part), "--out", str(other), *TINY]
    assert main(argv) == 0  # TINY's --steps 30 overrides the file's 7; lr 1 (an int) stays
    cfg = json.loads((other / "config.json").read_text())
    assert cfg["train"]["steps"] == 30 and cfg["train"]["lr"] == 1.0 and cfg["data"] == "ring"


def test_deterministic_switch(tmp_path):
    import torch

    out = tmp_path / "det"
    try:
        assert main(["train", "--data", "ring", "--out", str(out), *TINY, "--deterministic"]) == 0
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert json.loads((out / "config.json").read_text())["train"]["deterministic"] is True


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"train": {"lrr": 0.1}}', "unknown config key 'train.lrr'"),
        ('{"colour": 1}', "unknown config key 'colour'"),
        ('{"train": {"lr": "fast"}}', "config key 'train.lr'"),
        ('{"train": {"steps": 1.5}}', "config key 'train.steps'"),
        ('{"model": {"channel_mult": [1, "2"]}}', "config key 'model.channel_mult'"),
        ('{"train": 3}', "must be an object of train settings"),
        ('{"sde": {"name": "ve", "params": {"sigma_max": "big"}}}', "'sde' must look like"),
    ],
)
def test_bad_config_file(tmp_path, capsys, content, message):
    path = tmp_path / "c.json"
    path.write_text(content)
    _fail(["train", "--config", str(path), "--out", str(tmp_path / "r")], capsys, message)


def test_config_file_keeps_the_optional_keys_that_may_be_null():
    from scorelab.config import overrides_from_dict

    # a tsm run trained on Langevin samples stores "data": null in its config.json
    d = {"data": None, "labels": None, "image_size": 16, "score": {"target": None}, "sde": None}
    assert overrides_from_dict(d) == {
        "data": None, "labels": None, "image_size": 16, "score.target": None, "sde": None
    }  # fmt: skip


def test_config_file_missing_or_with_resume(trained, tmp_path, capsys):
    _fail(["train", "--config", str(tmp_path / "nope.json"), "--out", str(tmp_path / "r")],
          capsys, "nope.json")  # fmt: skip
    _fail(["train", "--config", str(trained / "config.json"), "--out", str(trained),
           "--resume"], capsys, "--config starts a new run")  # fmt: skip


def test_sample_npy_in_data_units_and_png(trained, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert main(["sample", str(trained), "--n", "64", "--out", str(out), "--steps", "20"]) == 0
    x = np.load(out)
    assert x.shape == (64, 2) and np.isfinite(x).all()
    # in the data's own units: moons spans about [-2, 2], not the unit-variance model space
    assert (
        main(
            [
                "sample",
                str(trained),
                "--n",
                "64",
                "--out",
                str(tmp_path / "s.png"),
                "--steps",
                "10",
                "--variance",
                "beta",
            ]
        )
        == 0
    )
    assert (tmp_path / "s.png").stat().st_size > 1000
    again = tmp_path / "again.npy"
    assert main(["sample", str(trained), "--n", "64", "--out", str(again), "--steps", "20"]) == 0
    assert np.array_equal(np.load(again), x)  # same seed, same samples
    assert "wrote 64 samples" in capsys.readouterr().out


def test_resume_gives_identical_losses_and_weights(tmp_path, capsys):
    full, part = tmp_path / "full", tmp_path / "part"
    args = ["--data", "ring", "--ckpt-every", "7", *TINY]
    assert main(["train", "--out", str(full), *args]) == 0
    assert main(["train", "--out", str(part), *args[: -len(TINY)], *TINY[2:], "--steps", "14"]) == 0
    assert main(["train", "--out", str(part), "--resume", "--steps", "30", "--no-progress"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert _losses(part) == _losses(full)
    with (
        safe_open(str(full / "checkpoint.safetensors"), "pt") as a,
        safe_open(str(part / "checkpoint.safetensors"), "pt") as b,
    ):
        for key in a.keys():
            assert (a.get_tensor(key) == b.get_tensor(key)).all(), key


def test_resume_after_a_crash_drops_rows_past_the_checkpoint(tmp_path):
    run = tmp_path / "r"
    args = ["--data", "ring", "--ckpt-every", "10", *TINY]
    assert main(["train", "--out", str(run), *args]) == 0
    reference = _losses(run)
    # simulate a crash after step 30's rows but with the checkpoint of step 20
    prev = run / "checkpoint.prev.safetensors"
    prev.replace(run / "checkpoint.safetensors")
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert _losses(run) == reference


def test_env_and_samplers(capsys):
    assert main(["env", "--format", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"scorelab", "torch", "numpy", "python", "devices"} <= set(info)
    assert main(["samplers"]) == 0
    assert "ddpm" in capsys.readouterr().out


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in (
        "--data",
        "--steps",
        "--batch-size",
        "--lr",
        "--objective",
        "--schedule",
        "--seed",
        "--resume",
        "--out",
    ):
        assert flag in out


# -- bad input: one line, exit status 2 ----------------------------------------------------
def test_unknown_dataset(tmp_path, capsys):
    """Refused before anything is written: the run directory it would have made (with its
    writer lock) is not left behind, and an existing folder keeps only what it had."""
    _fail(
        ["train", "--data", "spiral", "--out", str(tmp_path / "r"), *TINY],
        capsys,
        "unknown dataset 'spiral'",
    )
    assert not (tmp_path / "r").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    _fail(["train", "--data", "spiral", "--out", str(tmp_path / "mine"), *TINY], capsys, "spiral")
    assert {p.name for p in (tmp_path / "mine").iterdir()} <= {"notes.txt", ".lock"}


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.array([[np.nan, 1.0]]), "NaN or infinite"),
        (np.zeros((0, 2)), "empty"),
        (np.zeros(4), "2-D"),
    ],
)
def test_bad_npy(tmp_path, capsys, arr, message):
    np.save(tmp_path / "d.npy", arr)
    _fail(
        ["train", "--data", str(tmp_path / "d.npy"), "--out", str(tmp_path / "r"), *TINY],
        capsys,
        message,
    )


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--steps", "0"),
        ("--steps", "-5"),
        ("--batch-size", "0"),
        ("--lr", "-1"),
        ("--lr", "nan"),
        ("--ema-decay", "1.5"),
        ("--max-seconds", "-1"),
    ],
)
def test_out_of_range_numbers(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(["train", "--data", "ring", "--out", str(tmp_path / "r"), flag, value])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and flag in err


def test_max_seconds_stops_a_run_before_its_steps(tmp_path, capsys):
    out = tmp_path / "capped"
    argv = ["train", "--data", "ring", "--out", str(out), *TINY, "--steps", "10000000"]
    assert main([*argv, "--max-seconds", "0.5"]) == 0
    step = _losses(out)[-1][0]
    assert 1 <= step < 10_000_000
    meta = json.loads((out / "config.json").read_text())
    assert meta["train"]["max_seconds"] == 0.5
    # resuming may raise the cap: the run continues from its last step
    assert main(["train", "--resume", "--out", str(out), "--max-seconds", "1.0",
                 "--no-progress"]) == 0  # fmt: skip
    assert _losses(out)[-1][0] > step


def test_unknown_objective_and_schedule(tmp_path, capsys):
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "a"), "--objective", "noise", *TINY],
        capsys,
        "unknown objective 'noise'",
    )
    _fail(
        ["train", "--data", "ring", "--out", str(tmp_path / "b"), "--schedule", "zigzag", *TINY],
        capsys,
        "unknown schedule 'zigzag'",
    )


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _fail(
        ["train", "--data", "ring", "--out", str(blocker / "run"), *TINY], capsys, "cannot write to"
    )


def test_existing_run_needs_resume(trained, capsys):
    _fail(["train", "--data", "moons", "--out", str(trained), *TINY], capsys, "--resume")


def test_missing_run_dir(tmp_path, capsys):
    _fail(
        ["sample", str(tmp_path / "nope"), "--out", str(tmp_path / "x.npy")],
        capsys,
        "does not exist",
    )
    (tmp_path / "empty").mkdir()
    _fail(
        ["sample", str(tmp_path / "empty"), "--out", str(tmp_path / "x.npy")],
        capsys,
        "no checkpoint",
    )
    _fail(["train", "--out", str(tmp_path / "empty"), "--resume"], capsys, "no checkpoint")


def test_corrupt_checkpoint_names_the_last_good_one(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--data", "ring", "--out", str(run), "--ckpt-every", "10", *TINY]) == 0
    ckpt = run / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    _fail(
        ["sample", str(run), "--out", str(tmp_path / "x.npy")],
        capsys,
        "incomplete or corrupt; last good: ",
    )
    _fail(["train", "--out", str(run), "--resume"], capsys, "incomplete or corrupt")


def test_resume_with_a_different_config(trained, capsys):
    _fail(
        ["train", "--out", str(trained), "--resume", "--objective", "x0"],
        capsys,
        "objective: 'eps' vs 'x0'",
    )


def test_checkpoint_that_does_not_match_its_config(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--data", "ring", "--out", str(run), *TINY]) == 0
    from safetensors.torch import load_file, save_file

    path = run / "checkpoint.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    meta_cfg = json.loads(meta["config"])
    meta_cfg["model"]["width"] = 32
    meta["config"] = json.dumps(meta_cfg)
    save_file(tensors, str(path), metadata=meta)
    _fail(
        ["sample", str(run), "--out", str(tmp_path / "x.npy")],
        capsys,
        "does not match the model built from its config",
    )


def test_bad_sample_output_suffix(trained, tmp_path, capsys):
    _fail(["sample", str(trained), "--out", str(tmp_path / "x.txt")], capsys, ".npy or .png")


@pytest.mark.parametrize(
    "sampler, extra",
    [
        ("ddim", ["--eta", "0.5"]),
        ("dpm-solver++", ["--order", "3"]),
        ("heun-edm", ["--churn", "1"]),
        ("pc", []),
        ("ode-heun", ["--spacing", "quadratic"]),
        ("ddpm", ["--variance", "analytic", "--spacing", "leading"]),
        ("dpm-solver++", ["--spacing", "leading-dpm"]),
    ],
)
def test_sample_with_every_kind_of_sampler(trained, tmp_path, sampler, extra):
    out = tmp_path / "s.npy"
    argv = [
        "sample",
        str(trained),
        "--n",
        "32",
        "--out",
        str(out),
        "--sampler",
        sampler,
        "--steps",
        "8",
        *extra,
    ]
    assert main(argv) == 0
    assert np.load(out).shape == (32, 2)


def test_sampler_option_that_does_not_apply(trained, tmp_path, capsys):
    _fail(
        [
            "sample",
            str(trained),
            "--out",
            str(tmp_path / "x.npy"),
            "--sampler",
            "ddpm",
            "--eta",
            "0.3",
        ],
        capsys,
        "--eta does not apply to sampler ddpm",
    )
    _fail(
        [
            "sample",
            str(trained),
            "--out",
            str(tmp_path / "x.npy"),
            "--sampler",
            "ddim",
            "--eta",
            "3",
        ],
        capsys,
        "eta must be in [0, 1]",
    )
