"""One writer per run directory, and restarts that start or continue the same run.

Training holds an flock on RUN/.lock for its lifetime: a second `train` or `train --resume`
is refused at once in one line naming the holder (pid, host), exit 2; the kernel releases the
lock when the holder dies, kill -9 included; readers (sample) never take it; under torchrun
rank 0 alone takes it. `--resume auto` starts the run when --out holds no checkpoint and
continues it otherwise, so the same command can be rerun (torchrun --max-restarts).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from scorelab.cli import main
from scorelab.training import read_checkpoint
from scorelab.training.runlock import LOCK, RunLocked, acquire, holding_run_lock, release
from tests.helpers import cli_fails, launch_ranks, subprocess_env

RING = ["--data", "ring", "--n-data", "256", "--batch-size", "32", "--width", "16", "--depth",
        "1", "--log-every", "1", "--no-progress"]  # fmt: skip
HOST = socket.gethostname()


def _losses(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def _wait_for_checkpoint(run: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if (run / "checkpoint.safetensors").is_file() and len(_losses(run)) > 5:
                return
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError("training did not start")


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    with holding_run_lock(tmp_path):
        holder = json.loads((tmp_path / LOCK).read_text())
        assert holder == {"pid": os.getpid(), "host": HOST}
        # another open file of the same lock, even in this process, is refused
        with pytest.raises(RunLocked, match=f"process {os.getpid()} on host {HOST}"):
            acquire(tmp_path)
    release(acquire(tmp_path))  # released on exit
    assert (tmp_path / LOCK).read_text() == ""  # no holder named any more


def test_a_second_writer_is_refused_readers_are_not_and_kill_9_leaves_no_lock(tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scorelab", "train", *RING, "--steps", "1000000",
           "--ckpt-every", "5", "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for_checkpoint(run, proc)
        holder = f"process {proc.pid} on host {HOST}"
        for argv in (
            ["train", "--out", str(run), "--resume", "--no-progress"],
            ["train", "--out", str(run), "--resume", "auto", "--no-progress"],
            ["train", *RING, "--steps", "10", "--out", str(run)],
        ):
            line = cli_fails(argv, capsys, holder)
            assert line.startswith(f"scorelab train: error: {run} is being trained by {holder}")
        # a reader works on the directory while it is locked and training
        samples = tmp_path / "samples.npy"
        assert main(["sample", str(run), "--n", "16", "--out", str(samples), "--steps", "10"]) == 0
        assert np.load(samples).shape == (16, 2)
        assert proc.poll() is None  # the first writer was not disturbed
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _, meta = read_checkpoint(run / "checkpoint.safetensors")
    step = int(meta["step"])
    capsys.readouterr()
    argv = ["train", "--out", str(run), "--resume", "--steps", str(step + 3), "--no-progress"]
    assert main(argv) == 0  # kill -9 left no stale lock
    assert (
        f"resumed from {run / 'checkpoint.safetensors'} at step {step}" in capsys.readouterr().out
    )
    assert int(_losses(run)[-1][0]) == step + 3


def test_resume_auto_starts_then_continues_a_run_exactly(tmp_path, capsys):
    """The same command twice: it creates the run (10 steps), then, with --steps 20, resumes
    it; the losses equal an uninterrupted 20-step run's (warm-up 200: same learning rates)."""
    full, run = tmp_path / "full", tmp_path / "run"
    assert main(["train", *RING, "--steps", "20", "--out", str(full)]) == 0
    capsys.readouterr()
    auto = ["train", *RING, "--out", str(run), "--resume", "auto"]
    assert main([*auto, "--steps", "10"]) == 0
    assert f"{run} holds no checkpoint: starting a new run" in capsys.readouterr().out
    assert main([*auto, "--steps", "20"]) == 0
    out = capsys.readouterr().out
    assert f"resumed from {run / 'checkpoint.safetensors'} at step 10" in out
    assert _losses(run) == _losses(full) and len(_losses(full)) == 20
    # the new-run flags must match the stored config, as for --resume
    cli_fails([*auto, "--steps", "30", "--width", "32"], capsys, "does not match")
    # plain --resume is unchanged, and a value other than auto is refused by argparse
    assert main(["train", "--out", str(run), "--resume", "--steps", "22", "--no-progress"]) == 0
    cli_fails(["train", "--out", str(run), "--resume", "always"], capsys, "invalid choice")


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_under_torchrun_rank_0_alone_locks_and_every_rank_is_refused_together(tmp_path):
    """Two gloo ranks with --resume auto: refused together (exit 2, one line each) while
    another process holds the lock; then they start the run (rank 1 takes no lock, or it
    would be refused by rank 0) and, rerun as a torchrun restart would, continue it."""
    run = tmp_path / "run"
    run.mkdir()
    argv = ["train", *RING, "--out", str(run), "--resume", "auto"]
    with holding_run_lock(run):
        procs = launch_ranks([*argv, "--steps", "4"])
    assert [p.returncode for p in procs] == [2, 2]
    for p in procs:  # (the process group may warn about its sockets on lines of its own)
        last = p.stderr.strip().splitlines()[-1]
        assert "Traceback" not in p.stderr, p.stderr
        assert last.startswith("scorelab train: error: ") and f"process {os.getpid()}" in last
    procs = launch_ranks([*argv, "--steps", "4"])
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-2000:] + procs[1].stderr
    assert "starting a new run" in procs[0].stdout and procs[1].stdout == ""
    procs = launch_ranks([*argv, "--steps", "6"])
    assert [p.returncode for p in procs] == [0, 0], procs[0].stderr[-2000:] + procs[1].stderr
    assert "at step 4" in procs[0].stdout and "trained to step 6" in procs[0].stdout
    assert len(_losses(run)) == 6


WORKER = """
import os, signal, sys
from scorelab.cli import main
from scorelab.training import Trainer

if os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0":  # the first attempt dies
    real = Trainer._loss

    def dying(self, idx, generator):
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, idx, generator)

    Trainer._loss = dying
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_torchrun_max_restarts_continues_a_killed_run_exactly(tmp_path):
    """torchrun --max-restarts 1 with --resume auto: the first worker is killed (SIGKILL)
    during step 8, torchrun restarts it, and the run continues from its step-5 checkpoint
    to the same losses as an uninterrupted run."""
    run, full = tmp_path / "run", tmp_path / "full"
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    args = [*RING, "--steps", "12", "--ckpt-every", "5"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "1", "--max-restarts", "1", str(worker), "train", *args, "--out", str(run),
           "--resume", "auto"]  # fmt: skip
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting a new run" in proc.stdout
    assert f"resumed from {run / 'checkpoint.safetensors'} at step 5" in proc.stdout
    assert main(["train", *args, "--out", str(full)]) == 0
    assert _losses(run) == _losses(full) and len(_losses(full)) == 12


@pytest.mark.slow
def test_readers_beside_a_writer_always_read_a_whole_checkpoint(tmp_path):
    """A checkpoint replaced every step while another process reads it for 5 s: every read is
    complete. safetensors' torch reader opens the path twice (header, then tensors), so a
    replacement in between paired one file's header with the next one's bytes ("size ... is
    smaller than the required mapping size"): one failure in about 20 s of reads before
    read_checkpoint read the file once."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scorelab", "train", *RING, "--steps", "1000000",
           "--ckpt-every", "1", "--out", str(run)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait_for_checkpoint(run, proc)
        reads, start = 0, time.perf_counter()
        while time.perf_counter() - start < 5:
            _, meta = read_checkpoint(run / "checkpoint.safetensors", prefixes=("ema/",))
            assert meta["step"] >= 1
            reads += 1
        assert reads > 100
    finally:
        proc.kill()
        proc.wait()
