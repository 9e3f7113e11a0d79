"""Data-parallel training: 2 processes with gloo (torchrun) make the same steps as one process.

One process with --micro-batches 2 splits each global batch into the same two shards, with
the same per-shard noise, as two processes with one shard each; DDP averages the gradients.
So weights, EMA and the logged losses agree to float tolerance.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scorelab.cli import main
from tests.helpers import launch_ranks, subprocess_env

ARGS = [
    "--data", "ring", "--n-data", "512", "--steps", "8", "--batch-size", "32", "--width", "16",
    "--depth", "1", "--log-every", "1", "--no-progress",
]  # fmt: skip


def _losses(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path):
    """Steps 5-8 of a run in 2 processes (resumed from step 4) equal them in one process."""
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert main(["train", *ARGS, "--micro-batches", "2", "--steps", "4", "--out", str(single)]) == 0
    shutil.copytree(single, ddp)
    assert main(["train", *ARGS, "--micro-batches", "2", "--out", str(single), "--resume"]) == 0
    procs = launch_ranks(["train", *ARGS, "--micro-batches", "1", "--out", str(ddp), "--resume"])
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    assert "resumed from" in procs[0].stdout and "trained to step 8" in procs[0].stdout
    assert procs[1].stdout == ""  # rank 0 alone reports and writes
    a, b = load_file(ddp / "checkpoint.safetensors"), load_file(single / "checkpoint.safetensors")
    keys = [k for k in a if k.startswith(("model/", "ema/"))]
    assert keys and set(keys) <= set(b)
    for k in keys:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    assert len(_losses(ddp)) == 8
    assert _losses(ddp) == pytest.approx(_losses(single), rel=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_launches_the_same_training(tmp_path):
    """`torchrun --standalone --nproc_per_node 2 -m scorelab train ...` as a user types it."""
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "scorelab", "train", *ARGS, "--out", str(ddp)]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained to step 8") == 1
    assert main(["train", *ARGS, "--micro-batches", "2", "--out", str(single)]) == 0
    assert _losses(ddp) == pytest.approx(_losses(single), rel=1e-5)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_a_time_cap_stops_every_rank_at_the_same_step(tmp_path):
    """--max-seconds under 2 processes: the ranks agree on the clock (its mean over ranks), so
    both stop after the same step and neither waits forever on the other's collective."""
    run = tmp_path / "capped"
    argv = [*ARGS, "--steps", "1000000", "--max-seconds", "2", "--log-every", "10"]
    procs = launch_ranks(["train", *argv, "--out", str(run)])
    assert all(p.returncode == 0 for p in procs), procs[0].stderr[-2000:] + procs[1].stderr[-2000:]
    with open(run / "metrics.csv", newline="") as f:
        last = int(list(csv.DictReader(f))[-1]["step"])
    assert 1 <= last < 1_000_000 and f"trained to step {last} " in procs[0].stdout
