"""Helpers the CLI tests share."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import scorelab
from scorelab.cli import main


def cli_fails(argv: list[str], capsys, pattern: str) -> str:
    """The command exits with status 2 and prints one line naming the problem, no traceback
    (argparse's own errors exit from the parser, with the same status); returns the line."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert pattern in err, err
    return err


def subprocess_env() -> dict[str, str]:
    """The environment of a `python -m scorelab` child: this checkout first, one thread."""
    src = str(Path(scorelab.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int | str) -> dict[str, str]:
    """subprocess_env plus what torchrun gives a worker (gloo on the CPU)."""
    return {**subprocess_env(), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip


def launch_ranks(
    argv: list[str],
    world: int = 2,
    *,
    timeout: float = 180,
    rank0_preexec: Callable[[], None] | None = None,
) -> list[subprocess.CompletedProcess]:
    """`python -m scorelab ARGV` in world processes as torchrun starts them, run to the end."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "scorelab", *argv],
            env=rank_env(rank, world, port),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=rank0_preexec if rank == 0 else None,
        )  # fmt: skip
        for rank in range(world)
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done
