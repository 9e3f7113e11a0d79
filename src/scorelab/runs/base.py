"""What every kind of run shares: the run directory, resuming it, the fit, and RunKind.

RUN_DIR/config.json               the resolved config (also inside every checkpoint)
RUN_DIR/checkpoint.safetensors    raw + EMA weights and the trainer's state (and .prev)
RUN_DIR/metrics.csv               step, loss, grad_norm, lr, bad_steps, seconds, diverging,
                                  fd, fd_floor (quality checks, --eval-every)
RUN_DIR/loss.png, fd.png          the training loss; FD against the step (with its floor)
RUN_DIR/.lock                     the writer lock, held while training (pid and host of the
                                  holder; training/runlock.py)

A kind of run (diffusion, VAE, noise-aware classifier) is one module implementing RunKind;
scorelab.runs registers them and dispatches on the stored config.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import Tensor, nn

from scorelab.config import RunConfig, apply_overrides, config_differences
from scorelab.data import Normalizer
from scorelab.errors import CheckpointError, ScorelabError
from scorelab.files import atomic_write_bytes
from scorelab.training.checkpoint import CHECKPOINT, read_checkpoint
from scorelab.training.runlock import LOCK, holding_run_lock
from scorelab.training.trainer import Trainer, TrainResult

CONFIG = "config.json"
# keys a resumed run may change: the total step count and how often it logs/saves
RESUMABLE_KEYS = ("train.steps", "train.max_seconds", "train.ckpt_every", "train.log_every")
# speed settings and pictures, which do not change what is learned, may change on resume too
RESUMABLE_KEYS += ("train.sample_every", "train.precision", "train.compile", "train.channels_last")
RESUMABLE_KEYS += ("train.deterministic",)
# and the quality checks, which draw from their own generators
RESUMABLE_KEYS += ("train.eval_every", "train.eval_n")
# and the split of the batch, so a run can move between 1 process x N micro-batches and N ranks
RESUMABLE_KEYS += ("train.micro_batches",)
# images live in [-1, 1] already: the model sees them as they are
IDENTITY = Normalizer((0.0,), 1.0)

Log = Callable[[str], None]


@dataclass
class Prepared:
    """A config resolved against its data (the objective, the network fitted to the data's
    shape, normalization, conditioning, ...), and the data it was resolved on: what `fit`
    trains on and what `scorelab train --dry-run` prints. data is None only for a tsm run
    whose Langevin samples are not drawn yet (a dry run)."""

    cfg: Any
    data: Tensor | None = None
    labels: Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class RunKind(Protocol):
    """One kind of run: how its config is recognised and fitted to the data, how it trains
    into a run directory and how it is loaded back."""

    name: str  # "diffusion", "vae", "classifier"
    models: tuple[str, ...]  # the --model names it trains
    nll_methods: tuple[str, ...]  # the --nll methods it offers
    config_type: type  # RunConfig or ClassifierConfig: from_dict, to_dict

    def owns(self, config: dict[str, Any]) -> bool:
        """Whether a config (a stored config.json, or cfg.to_dict()) is of this kind."""
        ...

    def resolve(self, cfg: Any, *, image_shape: tuple[int, int, int] | None, dim: int) -> Any:
        """The config fitted to its data (images (C, H, W), else vectors of size dim), checked."""
        ...

    def prepare(self, cfg: Any, *, log: Log, out: Path | None = None) -> Prepared:
        """resolve with the data's facts: load the data, fit the config to it; pure apart from
        reading the data (out: where a kind may write data it makes, e.g. Langevin samples;
        None: a dry run, which writes nothing)."""
        ...

    def train(
        self,
        cfg: Any,
        out: Path,
        tensors: dict[str, Tensor] | None,
        meta: dict | None,
        *,
        progress: bool,
        log: Log,
        pictures: bool,
    ) -> TrainResult:
        """prepare, build and fit into out; with a checkpoint's tensors and meta, continue it
        exactly."""
        ...

    def load(
        self, run_dir: Path, cfg: Any, state: dict[str, Tensor], meta: dict, *, weights: str
    ) -> Any:
        """The trained run from its config and weights (state: one prefix, stripped)."""
        ...

    def is_image(self, cfg: Any) -> bool:
        """Whether the run models images (N, C, H, W) rather than vectors (N, d)."""
        ...

    def describe(self, cfg: Any) -> str:
        """One line for tables: the kind, its network and what it trains on."""
        ...

    def nll(self, run: Any, data: Tensor, *, methods=None, seed: int = 0, **options) -> list:
        """NLLReports of data (data units) by each method (None: the bounds `compare` shows);
        options it does not use are ignored (k: IWAE's; divergence, probes, rtol, atol: the
        ODE's)."""
        ...


def prepare_dir(out: Path) -> None:
    """Create out and check that this process can write there."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ScorelabError(f"cannot write to {out}: {e.strerror or e}") from None


@contextlib.contextmanager
def writing_run(out: Path) -> Iterator[None]:
    """prepare_dir(out), then hold its writer lock for the block (one writer per run
    directory). When the block fails before it wrote anything (a refused setting or data set),
    a folder this call created is removed again, lock file and all: bad input leaves nothing."""
    existed = out.exists()
    prepare_dir(out)
    try:
        with holding_run_lock(out):
            yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                if {p.name for p in out.iterdir()} <= {LOCK}:
                    (out / LOCK).unlink(missing_ok=True)
                    out.rmdir()
        raise


def resolve_resume(stored: RunConfig, overrides: dict[str, object]) -> RunConfig:
    """The stored config with the allowed overrides; other differences are an error."""
    changed = apply_overrides(stored, overrides)
    diffs = [
        d
        for d in config_differences(stored.to_dict(), changed.to_dict())
        if not d.startswith(RESUMABLE_KEYS)
    ]
    if diffs:
        raise CheckpointError(
            "the run's stored config does not match the flags given to --resume: "
            + "; ".join(diffs)
            + " (stored vs given)"
        )
    return changed


def read_stored(
    run_dir: Path, prefix: str
) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Any]]:
    """A run directory's stored config (as written), the weights under prefix ("ema/" or
    "model/", the prefix stripped) and the checkpoint's metadata."""
    tensors, meta = read_checkpoint(run_dir / CHECKPOINT, prefixes=(prefix,))
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{run_dir / CHECKPOINT} holds no run config")
    state = {k[len(prefix) :]: v for k, v in tensors.items()}
    return meta["config"], state, meta


def fit_run(
    cfg: Any,
    model: nn.Module,
    loss_fn: Callable[..., Tensor],
    data: Tensor,
    out: Path,
    tensors: dict[str, Tensor] | None,
    meta: dict | None,
    *,
    resumed_from: Path | str,
    progress: bool,
    log: Log,
    write_samples: Callable[[Trainer], None] | None = None,
    evaluate: Callable[[Trainer], dict[str, float]] | None = None,
    labels: Tensor | None = None,
) -> TrainResult:
    """The part every kind of run shares: a Trainer on the (encoded) data, restored from a
    checkpoint when one is given, config.json written by rank 0, the fit, and the pictures
    at the end when none were written on the way (sample_every 0). evaluate: the quality
    check every cfg.train.eval_every steps (rank 0; the Trainer's on_eval)."""
    trainer = Trainer(
        model, loss_fn, data, cfg.train, out, cfg.to_dict(), progress=progress,
        on_sample=write_samples, on_eval=evaluate, labels=labels,
    )  # fmt: skip
    if tensors is not None and meta is not None:
        trainer.restore(tensors, meta, str(resumed_from))
        log(f"resumed from {resumed_from} at step {trainer.step}")
        if trainer.step >= cfg.train.steps:
            log(f"the run is already at step {trainer.step} of {cfg.train.steps}; nothing to do")
    if trainer.rank == 0:
        try:
            atomic_write_bytes(out / CONFIG, json.dumps(cfg.to_dict(), indent=2).encode())
        except OSError as e:  # disk full, read-only: the old config.json, if any, is intact
            raise ScorelabError(f"cannot write {out / CONFIG}: {e.strerror or e}") from None
    result = trainer.fit()
    if write_samples is not None and trainer.rank == 0 and cfg.train.sample_every == 0:
        write_samples(trainer)
    return result


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "IDENTITY",
    "RESUMABLE_KEYS",
    "RunKind",
    "fit_run",
    "prepare_dir",
    "read_stored",
    "resolve_resume",
    "writing_run",
]
