"""Stopping a run cleanly on a signal: finish the step, write a checkpoint, raise Preempted.

Schedulers send SIGTERM before they kill a job (SLURM can send SIGUSR1 ahead of time with
`--signal=USR1@120`); Ctrl-C sends SIGINT. While Trainer.fit runs, StopSignals replaces their
handlers with one that only records the signal; the loop reads the record between steps, so
the checkpoint is written in the normal flow, never from inside a handler, and a second
signal during the save only updates the record. `kill -9` (SIGKILL) cannot be caught: the
atomic checkpoint write then leaves the previous checkpoint behind.

Exit statuses for the command line: 75 (EX_TEMPFAIL in sysexits.h, "temporary failure, try
again") after SIGTERM or SIGUSR1, so a wrapper can requeue the job on 75; 130 (128 + SIGINT,
what shells report for Ctrl-C) after SIGINT.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType

from scorelab.errors import ScorelabError

EX_TEMPFAIL = 75
EX_INTERRUPTED = 128 + signal.SIGINT
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None)) if s is not None
)


class Preempted(ScorelabError):
    """A stop signal ended training after a completed step; checkpoint is None when it could
    not be written (error says why)."""

    def __init__(
        self,
        step: int,
        checkpoint: Path | None,
        signum: int,
        *,
        rank: int = 0,
        error: str | None = None,
    ) -> None:
        self.step, self.checkpoint, self.signum = step, checkpoint, int(signum)
        self.rank, self.error = rank, error
        what = "interrupted" if self.signum == signal.SIGINT else "preempted"
        if checkpoint is not None:
            written = f"checkpoint {checkpoint} written"
        else:
            written = f"no checkpoint could be written ({error})"
        super().__init__(f"{what} at step {step}: {written}")

    @property
    def exit_status(self) -> int:
        """130 for Ctrl-C, 75 (EX_TEMPFAIL: retry) for a scheduler's SIGTERM or SIGUSR1."""
        return EX_INTERRUPTED if self.signum == signal.SIGINT else EX_TEMPFAIL


class StopSignals:
    """Records SIGINT, SIGTERM and SIGUSR1 while entered; restores the previous handlers on
    exit. Handlers are installed only from the main thread (signal.signal fails elsewhere)
    and never over a signal that is ignored (SIG_IGN, e.g. SIGINT under nohup)."""

    def __init__(self) -> None:
        self.received = 0  # the highest signal number recorded (0: none), as ranks agree on it
        self.saving = False  # set around checkpoint writes: then every signal is only recorded
        self._sigints = 0
        self._previous: dict[int, object] = {}
        self._lock = threading.Lock()

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop as the signal would (from any thread, e.g. where no handler can be
        installed)."""
        with self._lock:
            self.received = max(self.received, int(signum))

    def clear(self) -> None:
        self.received, self._sigints = 0, 0

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self._sigints += 1
            if self._sigints > 1 and not self.saving:
                # Ctrl-C twice: the user will not wait for the step in progress
                raise KeyboardInterrupt
        self.received = max(self.received, int(signum))

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            previous = signal.getsignal(sig)
            if previous is signal.SIG_IGN:
                continue  # ignored on purpose: keep it so
            self._previous[sig] = previous
            signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for sig, previous in self._previous.items():
            # None: a handler installed outside Python, which cannot be put back
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]
        self._previous.clear()
