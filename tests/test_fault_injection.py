"""Fault injection: `scorelab train` killed (SIGKILL) or failed (ENOSPC) at each of its writes.

tests/fault_driver.py runs a 12-step ring run (a checkpoint every 4 steps, a metrics row every
step) once per fault: SIGKILL just before, just after or in the middle of each call of each
write operation the run makes (the checkpoint's temporary file, its fsync, the hard link that
keeps the previous checkpoint, each rename into place, each metrics.csv row, config.json and
the pictures), and an ENOSPC at each. After every fault the run directory must

- hold a checkpoint that reads, loads and samples (or, before the first checkpoint, none and
  no checkpoint.prev either), at one of the steps a checkpoint is written;
- end a failed write with one line and exit 2, never a traceback;
- continue with `train --resume auto` to the same losses, row for row, and the same weights,
  bit for bit, as a run that was never interrupted, with no temporary file left behind.

The same matrix runs on a restart (faults while a preempted run resumes): the moment when
metrics.csv is rewritten. The default tier injects every 13th fault of the fresh run; the
`slow` tier every fault of both.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scorelab.cli import main
from scorelab.runs import load_run
from scorelab.training import read_checkpoint
from scorelab.training.checkpoint import CHECKPOINT, PREVIOUS
from tests.helpers import subprocess_env

ROOT = Path(__file__).parents[1]
RING = ["--data", "ring", "--n-data", "256", "--batch-size", "32", "--width", "16", "--depth",
        "1", "--log-every", "1", "--ckpt-every", "4", "--steps", "12"]  # fmt: skip
SAVED_AT = {4, 8, 12}  # the steps with a checkpoint (and 6, where the restarted run stopped)


def _rows(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    tensors, _ = read_checkpoint(run / CHECKPOINT, prefixes=("model/", "ema/"))
    return tensors


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["train", *RING, "--out", str(run), "--no-progress"]) == 0
    return run


def _inject(base: Path, *, every: int, stop_at: int | None = None) -> list[dict]:
    plan, results = base / "plan.json", base / "results.json"
    plan.write_text(json.dumps({"argv": RING, "base": str(base / "runs"), "faults": None,
                                "stop_at": stop_at, "every": every}))  # fmt: skip
    (base / "runs").mkdir()
    env = {**subprocess_env(), "PYTHONPATH": f"{subprocess_env()['PYTHONPATH']}:{ROOT}"}
    subprocess.run(
        [sys.executable, "-m", "tests.fault_driver", str(plan), str(results)],
        env=env, cwd=ROOT, check=True, timeout=1500,
    )  # fmt: skip
    return json.loads(results.read_text())


def _check_one(fault: dict, reference: Path, capsys, stop_at: int | None) -> str:
    """Assert what is left after one fault; return how the run ended, in words."""
    run, how, what = Path(fault["out"]), fault["how"], f"{fault['op']}#{fault['n']} {fault['how']}"
    if how == "enospc":
        # a write the run can do without (fsyncing a folder) is not an error
        assert fault["status"] in (0, 2), (what, fault)
        if fault["status"] == 2:
            lines = fault["err"].strip().splitlines()
            assert "Traceback" not in fault["err"] and len(lines) == 1, (what, fault["err"])
            assert "No space left on device" in lines[0], (what, lines[0])
        ended = "tolerated" if fault["status"] == 0 else "one line, exit 2"
    else:
        assert fault["signal"] == signal.SIGKILL, (what, fault)
        ended = "killed"
    saved = SAVED_AT | ({stop_at} if stop_at else set())
    if (run / CHECKPOINT).is_file():
        _, meta = read_checkpoint(run / CHECKPOINT)
        assert meta["step"] in saved, (what, meta["step"])
        x, _ = load_run(run).sample(8, sampler="ddim", steps=4, seed=0)
        assert torch.isfinite(x).all() and x.shape == (8, 2), what
    else:  # before the first checkpoint: nothing half-made under a checkpoint's name
        assert not (run / PREVIOUS).exists(), what
    assert main(["train", *RING, "--out", str(run), "--resume", "auto", "--no-progress"]) == 0
    capsys.readouterr()
    assert _rows(run) == _rows(reference), what
    mine, theirs = _weights(run), _weights(reference)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine), what
    assert [p.name for p in run.iterdir() if ".tmp" in p.name] == [], what
    return ended


def _check_all(faults: list[dict], reference: Path, capsys, stop_at=None) -> dict[str, int]:
    ended: dict[str, int] = {}
    for fault in faults:
        word = _check_one(fault, reference, capsys, stop_at)
        ended[word] = ended.get(word, 0) + 1
    return ended


def test_every_thirteenth_fault_leaves_a_run_that_loads_and_resumes_exactly(
    tmp_path, reference, capsys
):
    faults = _inject(tmp_path, every=13)
    ops = {f["op"] for f in faults}
    assert len(faults) >= 7 and ops == {"save_file", "write", "fsync", "link", "replace"}
    ended = _check_all(faults, reference, capsys)
    with capsys.disabled():
        print(f"\n{len(faults)} faults injected: {ended}")


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("stop_at", [None, 6], ids=["fresh run", "restarted run"])
def test_every_fault_leaves_a_run_that_loads_and_resumes_exactly(
    tmp_path, reference, capsys, stop_at
):
    faults = _inject(tmp_path, every=1, stop_at=stop_at)
    ended = _check_all(faults, reference, capsys, stop_at)
    with capsys.disabled():
        print(f"\n{len(faults)} faults injected ({'restart' if stop_at else 'fresh'}): {ended}")
