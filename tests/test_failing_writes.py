"""A checkpoint that cannot be written (disk full, I/O error, read-only folder) stops the run
with one line naming the cause and the last good checkpoint, exit 2, no traceback; the
temporary file is removed, the previous checkpoint stays and loads, and a resume from it
equals an uninterrupted run.

The failure is injected at the first save after a good one (step 8, the good one at step 4).
EFBIG is a real error of the kernel inside safetensors' write (a file size limit, as a quota
sets); ENOSPC is raised as safetensors raises it (its SafetensorError, "(os error 28)"), EIO
and EROFS by patched os functions where the save calls them.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import scorelab.training.checkpoint as checkpoint_module
import scorelab.training.trainer as trainer_module
from scorelab.cli import main
from scorelab.files import atomic_write_bytes, temporary_name
from scorelab.runs import load_run
from scorelab.training import read_checkpoint
from scorelab.training.checkpoint import CHECKPOINT, PREVIOUS, save_checkpoint
from tests.helpers import launch_ranks

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

RING = ["--data", "ring", "--n-data", "256", "--batch-size", "32", "--width", "16", "--depth",
        "1", "--log-every", "1", "--ckpt-every", "4", "--steps", "12", "--no-progress"]  # fmt: skip
TMP = temporary_name(Path(CHECKPOINT)).name


def _losses(run: Path) -> list[tuple[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [(r["step"], r["loss"]) for r in csv.DictReader(f)]


def _temporary_files(run: Path) -> list[str]:
    return sorted(p.name for p in run.iterdir() if ".tmp" in p.name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("full") / "run"
    assert main(["train", *RING, "--out", str(run)]) == 0
    return run


@contextlib.contextmanager
def _disk_full(run: Path) -> Iterator[None]:
    """ENOSPC as safetensors reports it (its SafetensorError, "... (os error 28)")."""

    def save_file(tensors, path, metadata=None):
        raise SafetensorError(
            "Error while serializing: I/O error: No space left on device (os error 28)"
        )

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "save_file", save_file)
        yield


@contextlib.contextmanager
def _file_too_large(run: Path) -> Iterator[None]:
    """A real write error from the kernel inside safetensors: a 16 KiB file size limit (the
    checkpoint has 33 KB), as a quota would set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextlib.contextmanager
def _fsync_eio(run: Path) -> Iterator[None]:
    real = os.fsync

    def fsync(fd):
        tmp = run / TMP
        if tmp.exists() and os.fstat(fd).st_ino == tmp.stat().st_ino:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(fd)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", fsync)
        yield


@contextlib.contextmanager
def _rename_eio(run: Path) -> Iterator[None]:
    real = os.replace

    def replace(src, dst):
        if Path(src).name == TMP:  # the new checkpoint moving into place
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(src))
        return real(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        yield


@contextlib.contextmanager
def _read_only(run: Path) -> Iterator[None]:
    def save_file(tensors, path, metadata=None):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint_module, "save_file", save_file)
        yield


FAILURES = {
    "ENOSPC": _disk_full,
    "EFBIG": _file_too_large,
    "EIO-fsync": _fsync_eio,
    "EIO-rename": _rename_eio,
    "EROFS": _read_only,
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_checkpoint_write_stops_in_one_line_and_keeps_the_last_good_one(
    tmp_path, monkeypatch, capsys, uninterrupted, failure
):
    if failure == "EFBIG" and resource is None:
        pytest.skip("no resource module here")
    run = tmp_path / "run"
    real_save, saves = trainer_module.save_checkpoint, []

    def second_save_fails(*args, **kwargs):
        saves.append(1)
        if len(saves) != 2:
            return real_save(*args, **kwargs)
        with FAILURES[failure](run):  # the fault, for this save only
            return real_save(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", second_save_fails)
    capsys.readouterr()
    assert main(["train", *RING, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    code = failure.split("-")[0]
    number = getattr(errno, code)
    ckpt = run / CHECKPOINT
    assert err.strip() == (
        f"scorelab train: error: training stopped at step 8: could not write its checkpoint "
        f"({os.strerror(number)}, {code}); the last checkpoint, {ckpt} (step 4), is intact; "
        "resume from it once the cause is fixed"
    ), err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert _temporary_files(run) == []
    _, meta = read_checkpoint(ckpt)
    assert meta["step"] == 4
    loaded = load_run(run)  # the previous checkpoint loads as a run
    assert loaded.step == 4 and loaded.config.data == "ring"

    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert f"resumed from {ckpt} at step 4" in capsys.readouterr().out
    assert _losses(run) == _losses(uninterrupted) and len(_losses(run)) == 12


def test_without_hard_links_a_failed_rename_puts_the_checkpoint_back(tmp_path, monkeypatch):
    """Where os.link fails (a file system without hard links) the save renames the current
    checkpoint to .prev first; if the new one then cannot take its place, it comes back."""
    first = {"w": torch.zeros(3)}
    save_checkpoint(tmp_path, first, {"step": 1})
    real = os.replace

    def no_link(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    def replace(src, dst):
        if Path(src).name == TMP:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real(src, dst)

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        save_checkpoint(tmp_path, {"w": torch.ones(3)}, {"step": 2})
    monkeypatch.undo()
    tensors, meta = read_checkpoint(tmp_path / CHECKPOINT)
    assert meta["step"] == 1 and torch.equal(tensors["w"], first["w"])
    assert _temporary_files(tmp_path) == []
    # and with hard links, every save keeps the one before as .prev
    save_checkpoint(tmp_path, {"w": torch.ones(3)}, {"step": 2})
    assert read_checkpoint(tmp_path / PREVIOUS)[1]["step"] == 1
    assert read_checkpoint(tmp_path / CHECKPOINT)[1]["step"] == 2


def test_a_failed_config_write_is_one_line(tmp_path, monkeypatch, capsys):
    import scorelab.runs.base as base

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(base, "atomic_write_bytes", full)
    assert main(["train", *RING, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"scorelab train: error: cannot write {tmp_path / 'run' / 'config.json'}: "
        "No space left on device"
    )


def test_atomic_write_bytes_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic_write_bytes(path, b"old")

    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old" and _temporary_files(tmp_path) == []


def _limit_file_size() -> None:  # in rank 0's process, before it starts: EFBIG past 16 KiB
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
@pytest.mark.skipif(resource is None, reason="no resource module here")
def test_under_two_ranks_a_failed_write_stops_every_rank(tmp_path):
    """Rank 0 cannot write its checkpoint (a real EFBIG from the kernel): both ranks exit 2
    at once instead of rank 1 waiting for a collective that never comes."""
    run = tmp_path / "run"
    assert main(["train", *RING, "--steps", "4", "--out", str(run)]) == 0
    procs = launch_ranks(
        ["train", "--out", str(run), "--resume", "--steps", "8", "--no-progress"],
        rank0_preexec=_limit_file_size,
    )
    assert [p.returncode for p in procs] == [2, 2], procs[0].stderr + procs[1].stderr
    ckpt = run / CHECKPOINT
    assert "Traceback" not in procs[0].stderr + procs[1].stderr
    assert procs[0].stderr.strip().splitlines()[-1] == (
        "scorelab train: error: training stopped at step 8: could not write its checkpoint "
        f"(File too large, EFBIG); the last checkpoint, {ckpt} (step 4), is intact; "
        "resume from it once the cause is fixed"
    )
    assert procs[1].stderr.strip().splitlines()[-1] == (
        f"scorelab train: error: training stopped at step 8: rank 0 could not write to {run} "
        "(its message says why)"
    )
    assert _temporary_files(run) == [] and read_checkpoint(ckpt)[1]["step"] == 4


@contextlib.contextmanager
def _small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real, tiny file system (tmpfs) mounted at where; skips the test where this process
    may not mount one (not root, or a container without CAP_SYS_ADMIN)."""
    import shutil
    import subprocess

    where.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_really_full_disk_stops_the_run_and_keeps_the_last_checkpoint(
    tmp_path, capsys, uninterrupted
):
    """The kernel's own ENOSPC: the run directory on a 64 KiB tmpfs holds one checkpoint (33 KB)
    but not a second beside it, so the save at step 8 fails inside safetensors' write. One
    line, exit 2; the step-4 checkpoint is intact and the space of the temporary file is given
    back (a second try would find the disk as before); copied elsewhere, it resumes to the
    uninterrupted run's losses."""
    import shutil

    with _small_tmpfs(tmp_path / "disk", "64k") as disk:
        run = disk / "run"
        capsys.readouterr()
        assert main(["train", *RING, "--out", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        ckpt = run / CHECKPOINT
        assert err == (
            f"scorelab train: error: training stopped at step 8: could not write its checkpoint "
            f"(No space left on device, ENOSPC); the last checkpoint, {ckpt} (step 4), is "
            "intact; resume from it once the cause is fixed"
        ), err
        assert _temporary_files(run) == []
        assert read_checkpoint(ckpt)[1]["step"] == 4
        assert load_run(run).step == 4
        # the failed temporary file's space is free again (the write had filled the disk)
        assert shutil.disk_usage(disk).free >= 12 * 1024, shutil.disk_usage(disk)
        copy = tmp_path / "copy"
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".lock"))
    assert main(["train", "--out", str(copy), "--resume", "--no-progress"]) == 0
    assert _losses(copy) == _losses(uninterrupted)
