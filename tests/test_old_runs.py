"""Run directories written by scorelab 0.1.0 before the application layer's redesign
(tests/fixtures/v1: a DDPM ring run, a VAE ring run and a VE-SDE dsm run of 30 steps, with
the samples and the resumed losses that version gave) still load, sample the same numbers and
resume bit for bit: same seed, same samples; resuming to step 40, the same losses."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from scorelab.cli import main
from scorelab.runs import load_run

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
# how each fixture's expected_samples.npy was drawn by the old version
SAMPLE_ARGS = {
    "ring-ddpm": ["--sampler", "ddim", "--steps", "20"],
    "ring-dsm-ve": ["--sampler", "ddim", "--steps", "20"],
    "ring-vae": [],
}


@pytest.fixture(params=sorted(SAMPLE_ARGS))
def old_run(request, tmp_path) -> Path:
    run = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, run)
    return run


def test_old_run_loads_and_samples_the_same_numbers(old_run):
    run = load_run(old_run)
    assert run.config.data == "ring"
    out = old_run / "s.npy"
    argv = ["sample", str(old_run), "--n", "50", "--seed", "0", *SAMPLE_ARGS[old_run.name]]
    assert main([*argv, "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), np.load(old_run / "expected_samples.npy"))


def test_old_run_resumes_bit_for_bit(old_run):
    argv = ["train", "--out", str(old_run), "--resume", "--steps", "40", "--no-progress"]
    assert main(argv) == 0
    with open(old_run / "metrics.csv") as f:
        rows = [r for r in csv.reader(f)][-2:]
    with open(old_run / "expected_resume.csv") as f:
        expected = list(csv.reader(f))
    # step, loss, grad_norm, lr, bad_steps as the old version wrote them (seconds differ)
    assert [r[:5] for r in rows] == [r[:5] for r in expected]
