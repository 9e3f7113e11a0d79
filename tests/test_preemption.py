"""Stopping on a signal: the step in progress finishes, a checkpoint at that step is written,
and a resumed run equals an uninterrupted one bit for bit.

When the stop is decided: the loop reads the signal record before each step and after the
last one. Let n be the number of completed steps when the signal arrives. A signal that
arrives while a step is being computed (between that check and the step's increment) lets
the step finish: the checkpoint is at n + 1. One that arrives after the increment (while the
row, the periodic checkpoint or the samples of step n are written) is seen at the next
check: the checkpoint is at n. Either way no completed step is lost.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from scorelab.cli import main
from scorelab.config import TrainConfig
from scorelab.training import Trainer, TrainingDiverged, read_checkpoint
from scorelab.training.preemption import EX_INTERRUPTED, EX_TEMPFAIL, STOP_SIGNALS, Preempted
from tests.helpers import free_port, rank_env, subprocess_env

STEPS = 24


@pytest.fixture(autouse=True)
def _python_signal_handlers():
    """Python's own handlers while a test runs (pytest may start with SIGINT ignored)."""
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def _mse(model, x, generator):
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return ((model(x + 0.1 * noise) - x) ** 2).mean(1)


def _trainer(run_dir: Path, loss_fn=_mse, on_sample=None, **cfg) -> Trainer:
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    settings = {"steps": STEPS, "batch_size": 8, "warmup": 2, "ckpt_every": 5, "log_every": 3}
    cfg = TrainConfig(**{**settings, **cfg})
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    return Trainer(
        nn.Linear(2, 2), loss_fn, data, cfg, run_dir, {"test": True},
        progress=False, on_sample=on_sample,
    )  # fmt: skip


def _resume(run_dir: Path, **cfg) -> Trainer:
    trainer = _trainer(run_dir, **cfg)
    tensors, meta = read_checkpoint(run_dir / "checkpoint.safetensors")
    trainer.restore(tensors, meta, "checkpoint")
    return trainer


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _same_checkpoints(a: Path, b: Path) -> None:
    x, y = load_file(a / "checkpoint.safetensors"), load_file(b / "checkpoint.safetensors")
    assert set(x) == set(y)
    for key in x:
        assert torch.equal(x[key], y[key]), key


def _signal_at(step: int, signum: int = signal.SIGTERM):
    """A loss that sends signum to this process while step `step` (0-based) is computed."""
    calls = {"n": 0}

    def loss_fn(model, x, generator):
        if calls["n"] == step:
            os.kill(os.getpid(), signum)
        calls["n"] += 1
        return _mse(model, x, generator)

    return loss_fn


@pytest.mark.parametrize("log_every", [1, 3])
def test_sigterm_mid_step_saves_that_step_and_the_resumed_run_is_exact(
    tmp_path, log_every, reference_for
):
    full = reference_for(log_every)
    run = tmp_path / "run"
    with pytest.raises(Preempted) as stop:
        _trainer(run, _signal_at(10), log_every=log_every).fit()
    assert stop.value.step == 11 and stop.value.exit_status == EX_TEMPFAIL
    assert (
        str(stop.value)
        == f"preempted at step 11: checkpoint {run / 'checkpoint.safetensors'} written"
    )
    _, meta = read_checkpoint(run / "checkpoint.safetensors")
    assert meta["step"] == 11
    assert int(_rows(run)[-1]["step"]) == 11  # the row of the stop, also between log_every rows
    assert _resume(run, log_every=log_every).fit().step == STEPS
    assert _rows(run) == _rows(full)
    _same_checkpoints(run, full)


@pytest.fixture(scope="module")
def reference_for(tmp_path_factory):
    runs: dict[int, Path] = {}

    def get(log_every: int) -> Path:
        if log_every not in runs:
            runs[log_every] = tmp_path_factory.mktemp(f"reference{log_every}")
            _trainer(runs[log_every], log_every=log_every).fit()
        return runs[log_every]

    return get


def test_twenty_random_signal_times_lose_no_step_and_resume_exactly(tmp_path, reference_for):
    """Signals mid-step (from the loss) or between steps (from the sample hook, which runs
    after a step is counted) at 20 random steps: the checkpoint is at n + 1 or n."""
    reference = reference_for(3)
    rng = random.Random(20240601)
    lost, extra = [], []
    for i in range(20):
        run = tmp_path / f"run{i}"
        if rng.random() < 0.5:
            done = rng.randrange(STEPS)  # the signal arrives while step done + 1 is computed
            trainer, expected = _trainer(run, _signal_at(done)), done + 1
        else:
            done = rng.randrange(1, STEPS + 1)

            def hook(t: Trainer, done=done) -> None:
                if t.step == done:
                    os.kill(os.getpid(), signal.SIGTERM)

            trainer, expected = _trainer(run, on_sample=hook, sample_every=1), done
        with pytest.raises(Preempted) as stop:
            trainer.fit()
        _, meta = read_checkpoint(run / "checkpoint.safetensors")
        assert stop.value.step == meta["step"] == expected, (i, done)
        assert int(_rows(run)[-1]["step"]) == expected
        lost.append(done - meta["step"])
        extra.append(meta["step"] - done)
        assert _resume(run).fit().step == STEPS
        assert _rows(run) == _rows(reference), i
        _same_checkpoints(run, reference)
    assert max(lost) <= 0 and max(extra) <= 1
    print(f"steps lost over 20 signals: max {max(lost)}; steps finished after: max {max(extra)}")


def test_a_second_signal_during_the_save_is_only_recorded(tmp_path, monkeypatch):
    import scorelab.training.trainer as trainer_module

    real = trainer_module.save_checkpoint
    sent = []

    def save_and_signal(*args, **kwargs):
        if not sent:  # the first save is the one of the stop (ckpt_every is larger)
            sent.append(1)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_and_signal)
    run = tmp_path / "run"
    with pytest.raises(Preempted) as stop:
        _trainer(run, _signal_at(6, signal.SIGINT), ckpt_every=1000).fit()
    assert sent and stop.value.step == 7
    tensors, meta = read_checkpoint(run / "checkpoint.safetensors")
    assert meta["step"] == 7 and tensors
    assert not list(run.glob(".*tmp*"))
    assert stop.value.exit_status == EX_INTERRUPTED  # the signal the stop was decided on


def test_ctrl_c_stops_with_status_130_and_twice_stops_at_once(tmp_path):
    with pytest.raises(Preempted) as stop:
        _trainer(tmp_path / "once", _signal_at(4, signal.SIGINT), ckpt_every=1000).fit()
    assert stop.value.exit_status == EX_INTERRUPTED == 130
    assert str(stop.value).startswith("interrupted at step 5: checkpoint ")
    calls = {"n": 0}

    def twice(model, x, generator):
        calls["n"] += 1
        if calls["n"] == 5:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return _mse(model, x, generator)

    with pytest.raises(KeyboardInterrupt):
        _trainer(tmp_path / "twice", twice, ckpt_every=1000).fit()
    assert not (tmp_path / "twice" / "checkpoint.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no SIGUSR1 here")
def test_sigusr1_stops_like_sigterm(tmp_path):
    with pytest.raises(Preempted) as stop:
        _trainer(tmp_path, _signal_at(2, signal.SIGUSR1)).fit()
    assert stop.value.step == 3 and stop.value.exit_status == EX_TEMPFAIL


def test_handlers_are_installed_only_during_fit_and_restored(tmp_path):
    def mine(signum, frame):  # a handler of the program that uses the trainer
        pass

    signal.signal(signal.SIGTERM, mine)
    seen = {}

    def loss_fn(model, x, generator):
        seen["term"] = signal.getsignal(signal.SIGTERM)
        return _mse(model, x, generator)

    _trainer(tmp_path / "a", loss_fn).fit()
    assert seen["term"] is not mine and signal.getsignal(signal.SIGTERM) is mine

    def broken(model, x, generator):
        return _mse(model, x, generator) * float("nan")

    with pytest.raises(TrainingDiverged):
        _trainer(tmp_path / "b", broken).fit()
    assert signal.getsignal(signal.SIGTERM) is mine
    with pytest.raises(Preempted):
        _trainer(tmp_path / "c", _signal_at(3)).fit()
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored on purpose (nohup): stays ignored

    def check(model, x, generator):
        seen["int"] = signal.getsignal(signal.SIGINT)
        return _mse(model, x, generator)

    _trainer(tmp_path / "d", check).fit()
    assert seen["int"] is signal.SIG_IGN


def test_fit_outside_the_main_thread_installs_nothing_and_request_stop_works(tmp_path):
    box: dict = {"calls": 0}

    def loss_fn(model, x, generator):
        box["handler"] = signal.getsignal(signal.SIGTERM)
        if box["calls"] == 0:
            trainer.request_stop()
        box["calls"] += 1
        return _mse(model, x, generator)

    trainer = _trainer(tmp_path, loss_fn)

    def target():
        try:
            trainer.fit()
        except Preempted as e:
            box["stop"] = e

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)
    assert box["handler"] is signal.SIG_DFL
    assert box["stop"].step == 1 and box["stop"].exit_status == EX_TEMPFAIL


# -- through the command line -------------------------------------------------------------
RING = ["--data", "ring", "--n-data", "256", "--batch-size", "32", "--width", "16", "--depth",
        "1", "--log-every", "1", "--no-progress"]  # fmt: skip


def _cli_losses(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def test_cli_preempted_ring_run_resumes_bit_for_bit(tmp_path, monkeypatch, capsys):
    """A ring run stopped by SIGTERM during step 9 and resumed equals an uninterrupted one:
    the per-step losses and every tensor of the final checkpoint."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(["train", *RING, "--steps", "16", "--out", str(full)]) == 0
    real = Trainer._loss

    def loss_with_signal(self, idx, generator):
        if self.step == 8:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, idx, generator)

    monkeypatch.setattr(Trainer, "_loss", loss_with_signal)
    capsys.readouterr()
    assert main(["train", *RING, "--steps", "16", "--out", str(part)]) == EX_TEMPFAIL
    err = capsys.readouterr().err.strip()
    ckpt = part / "checkpoint.safetensors"
    assert (
        err
        == f"scorelab train: preempted at step 9: checkpoint {ckpt} written; continue with --resume"
    )
    monkeypatch.setattr(Trainer, "_loss", real)
    assert main(["train", "--out", str(part), "--resume", "--no-progress"]) == 0
    assert f"resumed from {ckpt} at step 9" in capsys.readouterr().out
    assert _cli_losses(part) == _cli_losses(full) and len(_cli_losses(full)) == 16
    _same_checkpoints(part, full)


def test_cli_interrupt_outside_training_does_not_claim_a_checkpoint(tmp_path, monkeypatch, capsys):
    def interrupted(self):
        raise KeyboardInterrupt

    run = tmp_path / "run"
    monkeypatch.setattr(Trainer, "fit", interrupted)
    assert main(["train", *RING, "--steps", "4", "--out", str(run)]) == 130
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and "intact" not in err and "--resume" not in err
    assert not (run / "checkpoint.safetensors").exists()
    monkeypatch.undo()
    assert main(["train", *RING, "--steps", "4", "--out", str(tmp_path / "done")]) == 0
    monkeypatch.setattr(Trainer, "fit", interrupted)
    argv = ["train", "--out", str(tmp_path / "done"), "--resume", "--steps", "8"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert "(step 4), is intact; continue with --resume" in err


def test_cli_a_failed_save_at_the_stop_names_the_checkpoint_on_disk(tmp_path, monkeypatch, capsys):
    import scorelab.training.trainer as trainer_module

    run = tmp_path / "run"
    assert main(["train", *RING, "--steps", "4", "--out", str(run)]) == 0
    real = Trainer._loss

    def loss_with_signal(self, idx, generator):
        if self.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, idx, generator)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Trainer, "_loss", loss_with_signal)
    monkeypatch.setattr(trainer_module, "save_checkpoint", disk_full)
    capsys.readouterr()
    argv = ["train", "--out", str(run), "--resume", "--steps", "12", "--no-progress"]
    assert main(argv) == EX_TEMPFAIL
    ckpt = run / "checkpoint.safetensors"
    assert capsys.readouterr().err.strip() == (
        "scorelab train: preempted at step 7: no checkpoint could be written ([Errno 28] No "
        f"space left on device); the last checkpoint, {ckpt} (step 4), is intact; continue "
        "with --resume"
    )


def _default_sigint() -> None:  # a child of a shell's background job starts with SIGINT ignored
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_rows(run: Path, procs: list[subprocess.Popen], rows: int = 3) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), procs[0].communicate()
        try:
            if len((run / "metrics.csv").read_text().splitlines()) > rows:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("training did not start")


@pytest.mark.parametrize(
    ("signum", "status", "word"),
    [(signal.SIGTERM, EX_TEMPFAIL, "preempted"), (signal.SIGINT, EX_INTERRUPTED, "interrupted")],
)
def test_cli_subprocess_stops_on_a_signal_and_resumes(tmp_path, capsys, signum, status, word):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scorelab", "train", *RING, "--steps", "1000000", "--out",
           str(run)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=subprocess_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
    )  # fmt: skip
    _wait_for_rows(run, [proc])
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err[-2000:]
    _, meta = read_checkpoint(run / "checkpoint.safetensors")
    step = meta["step"]
    ckpt = run / "checkpoint.safetensors"
    assert err.strip().splitlines() == [
        f"scorelab train: {word} at step {step}: checkpoint {ckpt} written; continue with --resume"
    ]
    assert int(_cli_losses(run)[-1][0]) == step
    # the interrupted run samples at once, though no periodic checkpoint was due
    assert main(["sample", str(run), "--n", "20", "--steps", "10", "--sampler", "ddim",
                 "--out", str(tmp_path / "s.npy")]) == 0  # fmt: skip
    assert np.load(tmp_path / "s.npy").shape == (20, 2)
    argv = ["train", "--out", str(run), "--resume", "--steps", str(step + 3), "--no-progress"]
    assert main(argv) == 0
    assert f"resumed from {ckpt} at step {step}" in capsys.readouterr().out
    assert int(_cli_losses(run)[-1][0]) == step + 3


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_ranks_agree_on_the_stop_step_when_one_is_signalled(tmp_path):
    """SIGTERM to rank 1 alone: both ranks stop after the same step, rank 0 writes the
    checkpoint and the message, both exit with 75."""
    run, port = tmp_path / "ddp", str(free_port())
    procs = []
    for rank in range(2):
        env = rank_env(rank, 2, port)
        cmd = [sys.executable, "-m", "scorelab", "train", *RING, "--steps", "1000000",
               "--out", str(run)]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )  # fmt: skip
        )
    try:
        _wait_for_rows(run, procs)
        procs[1].send_signal(signal.SIGTERM)
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [EX_TEMPFAIL, EX_TEMPFAIL], results[0][1][-2000:]
    _, meta = read_checkpoint(run / "checkpoint.safetensors")
    step = meta["step"]
    assert f"scorelab train: preempted at step {step}: checkpoint" in results[0][1]
    assert "preempted" not in results[1][1]  # rank 0 alone reports
    assert int(_cli_losses(run)[-1][0]) == step
