"""Kinds of run and their entry points: train a run directory, resume it, load it back.

Every kind (diffusion, the VAE baseline, the noise-aware classifier) is one module with one
RunKind (scorelab.runs.base); a run directory's stored config says which kind it is, so
`resume` and `load_run` need only the directory. The file format is the same for all:
config.json and checkpoint.safetensors (with the config in its metadata). Training and
resuming hold the directory's writer lock (training/runlock.py): one writer per run directory;
readers (load_run) never take it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from scorelab.config import RunConfig
from scorelab.errors import CheckpointError, ScorelabError
from scorelab.runs.base import (
    CHECKPOINT,
    CONFIG,
    RESUMABLE_KEYS,
    RunKind,
    read_stored,
    resolve_resume,
    writing_run,
)
from scorelab.runs.classifier import CLASSIFIER, NoisyClassifier
from scorelab.runs.diffusers import DiffusersRun, is_diffusers_dir, load_diffusers
from scorelab.runs.diffusion import DIFFUSION, Run
from scorelab.runs.vae import VAE_KIND, VAERun
from scorelab.training.checkpoint import read_checkpoint
from scorelab.training.trainer import TrainResult

KINDS: dict[str, RunKind] = {kind.name: kind for kind in (DIFFUSION, VAE_KIND, CLASSIFIER)}


def kind_of(cfg: Any) -> RunKind:
    """The kind of a config: a RunConfig, a ClassifierConfig or a stored config dict."""
    config = cfg if isinstance(cfg, dict) else cfg.to_dict()
    for kind in KINDS.values():
        if kind.owns(config):
            return kind
    name = (config.get("model") or {}).get("name")
    models = [m for kind in KINDS.values() for m in kind.models]
    raise ScorelabError(f"unknown model {name!r}; choose one of: {', '.join(models)}")


def is_image(cfg: Any) -> bool:
    """Whether a run of this config models images (N, C, H, W) rather than vectors (N, d)."""
    return kind_of(cfg).is_image(cfg)


def resolve(cfg: Any, *, log: Callable[[str], None] = print) -> Any:
    """The config a new run of cfg would store in its config.json, resolved against its data
    (objective, network fitted to the data, normalization, conditioning, ...), with no
    training and nothing written: `scorelab train --dry-run`."""
    return kind_of(cfg).prepare(cfg, log=log).cfg


def train(
    cfg: Any,
    out: Path | str,
    *,
    resume_overrides: dict[str, object] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """Train a new run of cfg's kind into run dir out (resume_overrides: as resume(out, ...)),
    holding out's writer lock for the whole run (a second writer is refused)."""
    if resume_overrides is not None:
        return resume(out, resume_overrides, progress=progress, log=log, pictures=pictures)
    out = Path(out)
    with writing_run(out):
        return _train_new(cfg, out, progress=progress, log=log, pictures=pictures)


def resume(
    out: Path | str,
    overrides: dict[str, object] | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """Continue the run in out exactly, with its stored config and the allowed overrides
    (RESUMABLE_KEYS: the step count, how often it logs and saves, speed settings), holding
    out's writer lock for the whole run."""
    out = Path(out)
    if not (out / CHECKPOINT).is_file():
        raise CheckpointError(f"cannot resume: {out} holds no checkpoint ({CHECKPOINT})")
    with writing_run(out):
        return _resume(out, overrides, progress=progress, log=log, pictures=pictures)


def resume_or_train(
    out: Path | str,
    overrides: dict[str, object],
    new_config: Callable[[], Any],
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """`scorelab train --resume auto`: continue the run in out as resume(out, overrides) when
    out holds a checkpoint, else train new_config() into it, decided under out's writer
    lock; so one command, rerun by torchrun --max-restarts, starts a run and continues it."""
    out = Path(out)
    with writing_run(out):
        if (out / CHECKPOINT).is_file():
            return _resume(out, overrides, progress=progress, log=log, pictures=pictures)
        log(f"{out} holds no checkpoint: starting a new run")
        return _train_new(new_config(), out, progress=progress, log=log, pictures=pictures)


def _train_new(cfg: Any, out: Path, **options: Any) -> TrainResult:
    if (out / CHECKPOINT).is_file():
        raise ScorelabError(f"{out} already holds a run; pass --resume or choose another --out")
    return kind_of(cfg).train(cfg, out, None, None, **options)


def _resume(out: Path, overrides: dict[str, object] | None, **options: Any) -> TrainResult:
    tensors, meta = read_checkpoint(out / CHECKPOINT)
    kind = kind_of(meta.get("config") or {})
    cfg = kind.config_type.from_dict(meta["config"])
    if isinstance(cfg, RunConfig):  # the flags a resumed run may change (a classifier refuses)
        target = cfg.score.target
        if target and (overrides or {}).get("score.target") != target:
            # a run directory is data: the code it names is imported only when the user names
            # it too (a config.json from elsewhere could name any importable module)
            raise ScorelabError(
                f"this run trains on the score function {target!r} named in its config.json; "
                f"scorelab does not import code named by a run directory: pass --target "
                f"{target} to resume it"
            )
        cfg = resolve_resume(cfg, overrides or {})
    return kind.train(cfg, out, tensors, meta, **options)


def load_run(run_dir: Path | str, *, weights: str = "ema") -> Any:
    """A trained run from its directory, EMA weights by default: a Run (diffusion), a VAERun
    (which samples and evaluates the same way) or a NoisyClassifier, as its config says; a
    local diffusers DDPM folder opens as a DiffusersRun (runs/diffusers.py)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if weights not in ("ema", "raw"):
        raise ScorelabError("weights must be 'ema' or 'raw'")
    if not (run_dir / CHECKPOINT).exists() and is_diffusers_dir(run_dir):
        if weights != "ema":
            raise ScorelabError(f"{run_dir} is a diffusers model: it holds one set of weights")
        return load_diffusers(run_dir)
    config, state, meta = read_stored(run_dir, "ema/" if weights == "ema" else "model/")
    kind = kind_of(config)
    cfg = kind.config_type.from_dict(config)
    return kind.load(run_dir, cfg, state, meta, weights=weights)


__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "KINDS",
    "DiffusersRun",
    "RESUMABLE_KEYS",
    "NoisyClassifier",
    "Run",
    "RunKind",
    "VAERun",
    "is_image",
    "kind_of",
    "load_diffusers",
    "load_run",
    "resolve",
    "resume",
    "resume_or_train",
    "train",
]
