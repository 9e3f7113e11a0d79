"""Data-parallel training: 2 processes with gloo (torchrun) make the same steps as one process.

One process with --micro-batches 2 splits each global batch into the same two shards, with
the same per-shard noise, as two processes with one shard each; DDP averages the gradients.
So weights, EMA and the logged losses agree to float tolerance.
"""

from __future__ import annotations

import csv
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scorelab.cli import main
from tests.helpers import free_port, launch_ranks, rank_env, subprocess_env

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


# a worker of the gradient test: the Trainer on a small regression, every gradient recorded
# just before the optimizer step (after DDP's all-reduce), saved per rank
GRADIENT_WORKER = """
import os
import sys
import torch
from torch import nn
from scorelab.config import TrainConfig
from scorelab.training import Trainer
from scorelab.training.distributed import barrier, init_from_env, shutdown

out, micro_batches = sys.argv[1], int(sys.argv[2])
rank, world = init_from_env("cpu")
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3))
data = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))


def loss_fn(net, x, generator):
    noise = torch.randn(x.shape, generator=generator)
    return ((net(x + 0.5 * noise) - x) ** 2).mean(1)


cfg = TrainConfig(steps=3, batch_size=16, micro_batches=micro_batches, lr=1e-2, warmup=1,
                  grad_clip=1e6, log_every=1, ckpt_every=3)
trainer = Trainer(model, loss_fn, data, cfg, out, {}, progress=False)
grads = []
trainer.optimizer.register_step_pre_hook(
    lambda *_: grads.append([p.grad.detach().clone() for p in model.parameters()])
)
trainer.fit()
torch.save(grads, f"{out}/grads{rank}.pt")
if world > 1:  # as the scorelab program does: leave together, then skip gloo's finalization
    barrier()
    shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_gloo_processes_make_the_gradients_of_one_process_with_two_micro_batches(
    tmp_path, monkeypatch
):
    """The gradients themselves, at each of 3 steps, just before the optimizer step: both ranks
    of a 2-process gloo run (one shard each, DDP's all-reduce) hold the gradients of one
    process with --micro-batches 2, and at step 1 these equal the gradient of the mean loss
    over the 16 examples of the global batch, computed here with autograd from the documented
    draws (batch indices, then a step seed; shard k = examples k::2 with its noise from a
    generator seeded step seed + k). Catches gradients summed over ranks instead of averaged
    and a micro-batch loss not divided by the number of micro-batches (scale errors that
    Adam's normalisation hides from the weights: the test above passes with them), and two
    ranks drawing the same shard."""
    script = tmp_path / "worker.py"
    script.write_text(GRADIENT_WORKER)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(ddp), "1"],
            env=rank_env(r, 2, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    monkeypatch.setattr(sys, "argv", [str(script), str(single), "2"])
    runpy.run_path(str(script), run_name="__main__")  # one process, this one, meanwhile
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors[0][-2000:] + errors[1][-2000:]
    one = torch.load(single / "grads0.pt")
    ranks = [torch.load(ddp / f"grads{r}.pt") for r in range(2)]
    assert len(one) == 3 and all(len(g) == 3 for g in ranks)
    for step in range(3):
        for a, b, c in zip(one[step], ranks[0][step], ranks[1][step], strict=True):
            torch.testing.assert_close(b, c, rtol=0, atol=0)  # the all-reduce: identical
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    # step 1 by hand
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    data = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)  # TrainConfig's default seed
    idx = torch.randint(64, (16,), generator=generator)
    step_seed = int(torch.randint(2**62, (1,), generator=generator))
    losses = []
    for k in range(2):
        x = data[idx[k::2]]
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(step_seed + k))
        losses.append(((model(x + 0.5 * noise) - x) ** 2).mean(1))
    torch.cat(losses).mean().backward()
    for p, a in zip(model.parameters(), one[0], strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-7)


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


@pytest.mark.slow
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
