"""One writer per run directory: training holds an exclusive lock on RUN_DIR/.lock.

The lock is an OS-level flock(2) on an open file descriptor, so the kernel drops it when the
process ends in any way, kill -9 included: there is never a stale lock to remove by hand.
The file itself stays (removing it would let two processes lock two different files of the
same name); while the lock is held it names its holder as one line of JSON, pid and host,
written after the lock is taken. Under torchrun rank 0 alone takes the lock (the other
ranks write nothing) and tells every rank whether it got it, so all ranks stop together.
Readers (sample, eval, compare) never take it.

flock works on local file systems and on NFS (Linux emulates it with an NFS byte-range
lock); Lustre needs its `flock` mount option. Where there is no fcntl module (Windows)
there is no lock: two writers are then the user's to avoid.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from scorelab.errors import ScorelabError
from scorelab.training.distributed import is_distributed, world

try:
    import fcntl
except ImportError:  # Windows: no flock; training then runs without the lock
    fcntl = None  # type: ignore[assignment]

LOCK = ".lock"


class RunLocked(ScorelabError):
    """Another process holds the run directory's writer lock."""


def lock_holder(run_dir: Path) -> str:
    """Who holds (or last held) run_dir's lock, in words, read from the lock file."""
    path = Path(run_dir) / LOCK
    # the holder writes its name just after taking the lock: give it a moment
    for _ in range(20):
        try:
            holder = json.loads(path.read_text())
            return f"process {holder['pid']} on host {holder['host']}"
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.025)
    return "another process (it has not written its pid yet)"


def acquire(run_dir: Path) -> int | None:
    """Take run_dir's lock without waiting: the open descriptor that holds it (None without
    fcntl); RunLocked naming the holder when another process has it."""
    if fcntl is None:
        return None
    path = Path(run_dir) / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ScorelabError(f"cannot create the lock file {path}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # EWOULDBLOCK: held by another open file, this process's or another's
        os.close(fd)
        raise RunLocked(
            f"{run_dir} is being trained by {lock_holder(run_dir)} (lock {path}); one writer "
            "per run directory: wait for it, or stop it, before training or resuming here"
        ) from None
    try:
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
    except OSError:
        pass  # the lock holds without the name; a second writer is told "another process"
    return fd


def release(fd: int | None) -> None:
    """Drop the lock taken by acquire (closing the descriptor releases it)."""
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # no holder any more
    os.close(fd)


@contextlib.contextmanager
def holding_run_lock(run_dir: Path) -> Iterator[None]:
    """Hold run_dir's writer lock while the block runs (run_dir must exist). Rank 0 takes it;
    in a process group every rank then raises the same RunLocked when it failed."""
    rank, world_size = world()
    fd, refused = None, None
    if rank == 0:
        try:
            fd = acquire(Path(run_dir))
        except ScorelabError as e:
            refused = e
    if world_size > 1 and is_distributed():
        import torch.distributed as dist

        message = [str(refused) if refused is not None else None]
        dist.broadcast_object_list(message, src=0)
        if message[0] is not None and refused is None:
            refused = RunLocked(message[0])
    if refused is not None:
        raise refused
    try:
        yield
    finally:
        release(fd)
