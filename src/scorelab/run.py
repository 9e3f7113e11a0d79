"""A run directory: train into it, resume it, and load it back for sampling.

RUN_DIR/config.json         the resolved RunConfig (also inside every checkpoint)
RUN_DIR/checkpoint.safetensors, checkpoint.prev.safetensors   raw + EMA weights, state
RUN_DIR/metrics.csv         step, loss, grad_norm, lr, bad_steps, seconds
RUN_DIR/samples.png, trajectory.gif, trajectory_strip.png   image runs: EMA samples
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from scorelab.build import (
    build_data,
    build_eps_fn,
    build_image_data,
    build_model,
    build_schedule,
    check_image_model,
    check_objective,
    normalizer_of,
    sample_shape,
)
from scorelab.config import RunConfig, apply_overrides, config_differences
from scorelab.data import Normalizer, check_array, is_image_source
from scorelab.data.images import random_hflip
from scorelab.errors import CheckpointError, DataError, ScorelabError
from scorelab.objectives import diffusion_loss
from scorelab.processes import DiscreteSchedule
from scorelab.samplers import SampleResult, sample
from scorelab.training.checkpoint import (
    CHECKPOINT,
    atomic_write_bytes,
    load_state_dict_checked,
    read_checkpoint,
)
from scorelab.training.trainer import Trainer, TrainResult
from scorelab.typing import EpsFn

CONFIG = "config.json"
# keys a resumed run may change: the total step count and how often it logs/saves
RESUMABLE_KEYS = ("train.steps", "train.ckpt_every", "train.log_every")
# speed settings and pictures, which do not change what is learned, may change on resume too
RESUMABLE_KEYS += ("train.sample_every", "train.precision", "train.compile", "train.channels_last")
# and the split of the batch, so a run can move between 1 process x N micro-batches and N ranks
RESUMABLE_KEYS += ("train.micro_batches",)
# images live in [-1, 1] already: the model sees them as they are
IDENTITY = Normalizer((0.0,), 1.0)


def _prepare_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"  # one per process: ranks probe at once
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ScorelabError(f"cannot write to {out}: {e.strerror or e}") from None


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


def train(
    cfg: RunConfig,
    out: Path | str,
    *,
    resume_overrides: dict[str, object] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    pictures: bool = True,
) -> TrainResult:
    """Train a diffusion model into run dir out; with resume_overrides, continue it exactly."""
    out = Path(out)
    checkpoint = out / CHECKPOINT
    tensors, meta = None, None
    if resume_overrides is not None:
        if not checkpoint.is_file():
            raise CheckpointError(f"cannot resume: {out} holds no checkpoint ({CHECKPOINT})")
        tensors, meta = read_checkpoint(checkpoint)
        cfg = resolve_resume(RunConfig.from_dict(meta["config"]), resume_overrides)
    elif checkpoint.is_file():
        raise ScorelabError(f"{out} already holds a run; pass --resume or choose another --out")
    _prepare_dir(out)
    check_objective(cfg.objective)
    cfg.train.validate()
    images = is_image_source(cfg.data)
    if images:
        image_set = build_image_data(cfg)
        log(f"data: {image_set.note}, images {tuple(image_set.image_shape)}")
        data = image_set.x
        cfg = cfg.replace(model=check_image_model(cfg.model, image_set.image_shape))
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=IDENTITY.to_dict())
    else:
        if cfg.model.name == "unet":
            raise DataError(f"--model unet takes images; {cfg.data} is vector data (use mlp)")
        data = check_array(build_data(cfg), cfg.data)
        if cfg.normalizer is None:
            cfg = cfg.replace(normalizer=Normalizer.fit(data).to_dict())
        if cfg.model.dim != data.shape[1]:
            cfg = cfg.replace(model=dataclasses.replace(cfg.model, dim=data.shape[1]))
    schedule = build_schedule(cfg.schedule)
    torch.manual_seed(cfg.train.seed)  # the initial weights
    model = build_model(cfg.model, schedule.T)
    prediction = cfg.objective
    hflip = cfg.hflip

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        if hflip:
            x0 = random_hflip(x0, generator)
        return diffusion_loss(
            net, x0, schedule=schedule, prediction=prediction, generator=generator
        )

    run_cfg = cfg

    def write_samples(trainer: Trainer) -> None:
        write_pictures(
            run_cfg, trainer.ema.state_dict(), out, trajectory=trainer.step == run_cfg.train.steps
        )

    trainer = Trainer(
        model,
        loss_fn,
        normalizer_of(cfg).encode(data),
        cfg.train,
        out,
        cfg.to_dict(),
        progress=progress,
        on_sample=write_samples if images and pictures else None,
    )
    if tensors is not None and meta is not None:
        trainer.restore(tensors, meta, str(checkpoint))
        log(f"resumed from {checkpoint} at step {trainer.step}")
        if trainer.step >= cfg.train.steps:
            log(f"the run is already at step {trainer.step} of {cfg.train.steps}; nothing to do")
    if trainer.rank == 0:
        atomic_write_bytes(out / CONFIG, json.dumps(cfg.to_dict(), indent=2).encode())
    result = trainer.fit()
    if images and pictures and trainer.rank == 0 and cfg.train.sample_every == 0:
        write_samples(trainer)
    return result


def write_pictures(
    cfg: RunConfig,
    ema_state: dict[str, Tensor],
    out: Path,
    *,
    n: int = 64,
    steps: int = 50,
    trajectory: bool = True,
) -> None:
    """samples.png from EMA weights (DDIM, few steps: a preview), and the trajectory pictures."""
    from scorelab.evaluation.images import (
        save_image_grid,
        save_trajectory_gif,
        save_trajectory_strip,
    )

    schedule = build_schedule(cfg.schedule)
    model = build_model(cfg.model, schedule.T)
    model.load_state_dict({k: v.detach().cpu() for k, v in ema_state.items()})
    model.eval()
    result = sample(
        build_eps_fn(model, cfg, schedule),
        sample_shape(cfg.model, n),
        schedule,
        "ddim",
        min(steps, schedule.T),
        generator=torch.Generator().manual_seed(0),
        record_trajectory=trajectory,
    )
    save_image_grid(result.x, out / "samples.png")
    if trajectory and result.trajectory:
        save_trajectory_gif(result.trajectory, out / "trajectory.gif")
        save_trajectory_strip(result.trajectory, out / "trajectory_strip.png")


@dataclass
class Run:
    """A trained run loaded back: config, EMA (or raw) network, schedule, normalizer."""

    run_dir: Path
    config: RunConfig
    model: nn.Module
    schedule: DiscreteSchedule
    normalizer: Normalizer
    step: int

    @property
    def eps_fn(self) -> EpsFn:
        return build_eps_fn(self.model, self.config, self.schedule)

    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        sampler: str = "ddpm",
        steps: int | None = None,
        record_trajectory: bool = False,
        **options,
    ) -> tuple[Tensor, SampleResult]:
        """n samples in the data's own units, and the sampler's result (model units)."""
        if n < 1:
            raise ScorelabError(f"--n must be >= 1, got {n}")
        generator = torch.Generator().manual_seed(seed)
        result = sample(
            self.eps_fn,
            sample_shape(self.config.model, n),
            self.schedule,
            sampler,
            steps,
            generator=generator,
            record_trajectory=record_trajectory,
            **options,
        )
        x = self.normalizer.decode(result.x)
        if self.config.model.name == "unet":
            x = x.clamp(-1, 1)  # images: the data's range, as DDPM clips its final samples
        return x, result


def load_run(run_dir: Path | str, *, weights: str = "ema") -> Run:
    """Rebuild a run's model from its checkpoint's config; EMA weights by default."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if weights not in ("ema", "raw"):
        raise ScorelabError("weights must be 'ema' or 'raw'")
    prefix = "ema/" if weights == "ema" else "model/"
    tensors, meta = read_checkpoint(run_dir / CHECKPOINT, prefixes=(prefix,))
    cfg = RunConfig.from_dict(meta["config"])
    schedule = build_schedule(cfg.schedule)
    model = build_model(cfg.model, schedule.T)
    state = {k[len(prefix) :]: v for k, v in tensors.items()}
    load_state_dict_checked(model, state, f"the {weights} weights in {run_dir / CHECKPOINT}")
    model.eval()
    return Run(run_dir, cfg, model, schedule, normalizer_of(cfg), int(meta["step"]))
