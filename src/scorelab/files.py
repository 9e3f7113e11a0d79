"""Atomic file writes: every file scorelab writes appears complete under its name or not at all.

A write goes to a hidden temporary file in the same folder (`.NAME.tmp.SUFFIX`: the suffix
kept, so that matplotlib and Pillow still see the format), which is fsynced and moved over the
final name with os.replace; the folder is fsynced after. A write that fails (disk full, I/O
error, read-only folder, Ctrl-C) removes the temporary file and leaves the old file as it
was; a process killed during it leaves at most the temporary file, which the run directory's
next writer removes (remove_stale_temporaries).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def os_error_cause(error: OSError) -> str:
    """An OSError's cause in words with its code, e.g. "No space left on device, ENOSPC"."""
    if error.errno is not None and error.strerror:
        return f"{error.strerror}, {errno.errorcode.get(error.errno, error.errno)}"
    return str(error)


def fsync_dir(path: Path) -> None:
    """Make a rename in folder path durable (where the OS allows opening a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):  # missing, or the folder turned read-only: nothing to do
        Path(path).unlink()


def temporary_name(path: Path) -> Path:
    """The temporary file an atomic write of path goes through."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Write to the yielded temporary path; on leaving the block it replaces path (fsynced),
    or, on an error, it is removed and path left as it was."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a small file atomically (atomic_path)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """np.save, atomically and without pickles."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())


def remove_stale_temporaries(folder: Path, names: tuple[str, ...]) -> list[str]:
    """Remove the temporary files that writes of these file names left behind when their
    process was killed (call only as the folder's one writer); returns the names removed."""
    removed = []
    for name in names:
        tmp = temporary_name(Path(folder) / name)
        if tmp.is_file():
            remove_quietly(tmp)
            removed.append(tmp.name)
    return removed
