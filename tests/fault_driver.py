"""Run `scorelab train` with one fault injected at one I/O operation, once per fault.

    python -m tests.fault_driver PLAN.json RESULTS.json

PLAN.json: {"argv": [train flags, no --out], "base": folder (one run directory per fault is
made in it), "faults": [[op, n, how], ...] or null, "stop_at": step or null, "every": k}.
With "stop_at", each run directory first gets an undisturbed run that is preempted at that
step (a checkpoint there, exit 75), and the fault is injected into the `--resume auto` that
continues it: a fault during a restart. The operations are the run's writes, as made:

    save_file  safetensors' write of the checkpoint's temporary file
    write      a write to metrics.csv (one row)
    fsync      os.fsync (temporary files and folders)
    link       os.link (the previous checkpoint kept as checkpoint.prev)
    replace    os.replace (every rename into place)

and `how` is `kill` (SIGKILL just before the call), `kill-after` (just after it), `torn`
(SIGKILL in the middle: half of the bytes written, for save_file and write) or `enospc`
(the call fails with ENOSPC, as a full disk would). A counting run (no fault) first records how
many calls of each operation the run makes; with "faults": null every point of
{op} x {1..count} x {how} is injected (every k-th of each op when "every" is k). The driver imports
torch once and forks one child per fault, so a fault costs the training steps only.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)

import safetensors.torch  # noqa: E402

import scorelab.training.checkpoint as checkpoint_module  # noqa: E402
import scorelab.training.trainer as trainer_module  # noqa: E402
from scorelab.cli import main  # noqa: E402

OPS = ("save_file", "write", "fsync", "link", "replace")
HOWS = {
    "save_file": ("kill", "torn", "enospc"),
    "write": ("kill", "torn", "enospc"),
    "fsync": ("kill", "enospc"),
    "link": ("kill", "kill-after", "enospc"),
    "replace": ("kill", "kill-after", "enospc"),
}


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class _Faults:
    def __init__(self, target: tuple[str, int, str] | None) -> None:
        self.target = target
        self.counts = dict.fromkeys(OPS, 0)

    def hit(self, op: str) -> str | None:
        """Count a call of op; the fault to inject at it, if this is the one."""
        self.counts[op] += 1
        if self.target is None:
            return None
        name, n, how = self.target
        return how if (name == op and n == self.counts[op]) else None

    def wrap(self, op: str, fn):
        def wrapped(*args, **kwargs):
            how = self.hit(op)
            if how == "kill":
                _die()
            if how == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            result = fn(*args, **kwargs)
            if how == "torn" and op == "save_file":  # half of the file on disk, then killed
                path = args[1]
                os.truncate(path, os.path.getsize(path) // 2)
                _die()
            if how in ("kill-after", "torn"):
                _die()
            return result

        return wrapped


class _MetricsFile:
    """metrics.csv opened for appending, each write counted as one operation."""

    def __init__(self, f, faults: _Faults) -> None:
        self._f, self._faults = f, faults

    def write(self, text: str) -> int:
        how = self._faults.hit("write")
        if how == "kill":
            _die()
        if how == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if how == "torn":
            self._f.write(text[: len(text) // 2])
            self._f.flush()
            _die()
        return self._f.write(text)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _arm(faults: _Faults) -> None:
    """Install the counting wrappers (in a child only: the parent stays clean)."""
    os.fsync = faults.wrap("fsync", os.fsync)
    os.link = faults.wrap("link", os.link)
    os.replace = faults.wrap("replace", os.replace)
    checkpoint_module.save_file = faults.wrap("save_file", safetensors.torch.save_file)

    def open_counted(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)  # noqa: SIM115 (the trainer closes it)
        return _MetricsFile(f, faults) if "a" in mode else f

    trainer_module.open = open_counted


def _stop_at(step: int) -> None:
    """Preempt the run at this step, as a SIGTERM would (the test of resuming after it)."""
    gradient = trainer_module.Trainer._gradient

    def stopping(self):
        if self.step == step - 1:
            self.request_stop()
        return gradient(self)

    trainer_module.Trainer._gradient = stopping


def _child(argv: list[str], out: str, target, err_path: str, counts_path: str | None) -> None:
    signal.alarm(120)  # a hung child fails the test instead of hanging it
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    faults = _Faults(target)
    _arm(faults)
    try:
        code = main(["train", *argv, "--out", out, "--resume", "auto", "--no-progress"])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 99
    if counts_path is not None:
        with open(counts_path, "w") as f:
            json.dump(faults.counts, f)
    sys.stderr.flush()
    os._exit(code)


def _fork(fn, *args) -> dict:
    pid = os.fork()
    if pid == 0:
        try:
            fn(*args)
        finally:
            os._exit(98)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"signal": os.WTERMSIG(status), "status": None}
    return {"signal": None, "status": os.WEXITSTATUS(status)}


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _prefix(argv: list[str], out: str, stop_at: int, err_path: str) -> None:
    _stop_at(stop_at)
    _child(argv, out, None, err_path, None)


def run(plan: dict) -> list[dict]:
    argv, base, stop_at = plan["argv"], plan["base"], plan.get("stop_at")
    faults = plan.get("faults")

    def prepare(out: str) -> None:
        if stop_at is not None:
            done = _fork(_prefix, argv, out, stop_at, out + ".prefix.err")
            assert done["status"] == 75, (done, _read(out + ".prefix.err"))

    if faults is None:  # count the operations of an undisturbed run, then fault each one
        counter = os.path.join(base, "counting")
        prepare(counter)
        counts_path = counter + ".counts.json"
        done = _fork(_child, argv, counter, None, counter + ".err", counts_path)
        assert done["status"] == 0, (done, _read(counter + ".err"))
        with open(counts_path) as f:
            counts = json.load(f)
        every = plan.get("every", 1)  # every k-th point of each op (its first always)
        faults = [
            point
            for op in OPS
            for point in [[op, n, how] for n in range(1, counts[op] + 1) for how in HOWS[op]][
                ::every
            ]
        ]
    results = []
    for i, (op, n, how) in enumerate(faults):
        out = os.path.join(base, f"{i:03d}-{op}-{n}-{how}")
        prepare(out)
        done = _fork(_child, argv, out, (op, n, how), out + ".err", None)
        results.append(
            {"op": op, "n": n, "how": how, "out": out, "err": _read(out + ".err"), **done}
        )
    return results


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    results = run(plan)
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
