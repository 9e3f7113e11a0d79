"""What the image benchmarks share (digits.py, fashion.py, interop.py): the diffusers peer.

The peer is diffusers' UNet2DModel shaped like scorelab's U-Net (the same widths, blocks per
level and attention resolutions, so about the same parameter count), trained by its own loop
on DDPMScheduler.add_noise (linear betas, T = 1000, eps prediction) with the recipe of the
scorelab run it is compared with (batch, Adam learning rate and warm-up, gradient clipping,
EMA), and sampled with diffusers' own schedulers. diffusers is imported only when called.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# diffusers' samplers: by scorelab's names where scorelab has the method (ddpm, ddim,
# dpm-solver++), by diffusers' otherwise (unipc: UniPCMultistepScheduler, euler:
# EulerDiscreteScheduler). DDPM and DDIM clip the predicted x0 to [-1, 1] (their defaults), the
# others do not (thresholding off, their default)
PEER_SAMPLERS = ("ddpm", "ddim", "dpm-solver++", "unipc", "euler")
# the scheduler settings that define a trained model (its betas, what the network predicts,
# its reverse variance, DDPM/DDIM's x0 clip): peer_scheduler keeps a folder's values of these
# and leaves every other setting (timestep spacing, solver type, ...) at the scheduler's default
MODEL_SCHEDULER_KEYS = (
    "num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas",
    "prediction_type", "variance_type", "clip_sample", "clip_sample_range", "thresholding",
    "rescale_betas_zero_snr",
)  # fmt: skip


def peer_unet(model, image_size: int, *, in_channels: int = 1, norm_num_groups: int = 32):
    """diffusers' UNet2DModel with the layout of a scorelab UNetConfig (model): block widths
    channels * channel_mult, res_blocks resnets per level, attention blocks at the levels
    whose resolution is in attn_resolutions, the same dropout; DDPM's 32 GroupNorm groups
    unless norm_num_groups says otherwise (one number for the whole net in diffusers)."""
    from diffusers import UNet2DModel

    down, res = [], image_size
    for level in range(len(model.channel_mult)):
        down.append("AttnDownBlock2D" if res in model.attn_resolutions else "DownBlock2D")
        if level < len(model.channel_mult) - 1:
            res //= 2
    up = [d.replace("Down", "Up") for d in reversed(down)]
    return UNet2DModel(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
        block_out_channels=tuple(model.channels * m for m in model.channel_mult),
        down_block_types=tuple(down), up_block_types=tuple(up),
        layers_per_block=model.res_blocks, dropout=model.dropout,
        norm_num_groups=norm_num_groups,
    )  # fmt: skip


def peer_scheduler(sampler: str, steps: int, *, T: int = 1000, config=None, **options):
    """The diffusers scheduler of a sampler name (PEER_SAMPLERS), set to steps steps: on DDPM's
    linear betas with T steps, or on the model settings (MODEL_SCHEDULER_KEYS) of config, a
    pipeline's scheduler config; options go to the scheduler (solver_order=3, ...)."""
    import inspect

    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    kinds = {
        "ddpm": DDPMScheduler,
        "ddim": DDIMScheduler,
        "dpm-solver++": DPMSolverMultistepScheduler,
        "unipc": UniPCMultistepScheduler,
        "euler": EulerDiscreteScheduler,
    }
    if sampler not in kinds:
        raise ValueError(f"unknown peer sampler {sampler!r}; choose from {', '.join(kinds)}")
    if config is None:
        settings = {"num_train_timesteps": T, "beta_schedule": "linear"}
        if sampler in ("ddpm", "ddim"):
            settings["clip_sample"] = True
    else:
        takes = inspect.signature(kinds[sampler].__init__).parameters
        settings = {k: config[k] for k in MODEL_SCHEDULER_KEYS if k in config and k in takes}
    scheduler = kinds[sampler](**settings, **options)
    scheduler.set_timesteps(steps)
    return scheduler


@torch.no_grad()
def peer_sample(
    net, n: int, shape: tuple[int, ...], sampler: str = "ddim", steps: int = 50, *,
    seed: int = 0, batch: int = 500, config=None, **options,
) -> torch.Tensor:  # fmt: skip
    """n samples (n, *shape) in [-1, 1] from a UNet2DModel, in batches; batch i starts from
    the noise of seed + i (and an ancestral sampler draws from the same generator). config and
    options: peer_scheduler's. The noise is scaled by the scheduler's init_noise_sigma and the
    network's input by its scale_model_input (identities except in Euler's sigma units)."""
    parts = []
    for i in range(0, n, batch):
        # fresh: the multistep ones keep state
        scheduler = peer_scheduler(sampler, steps, config=config, **options)
        g = torch.Generator().manual_seed(seed + i)
        xt = torch.randn((min(batch, n - i), *shape), generator=g) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            extra = {"generator": g} if sampler == "ddpm" else {}
            eps = net(scheduler.scale_model_input(xt, t), t).sample
            xt = scheduler.step(eps, t, xt, **extra).prev_sample
        parts.append(xt.clamp(-1, 1))
    return torch.cat(parts)


@dataclass
class PeerTraining:
    """What train_peer_loop returns: the EMA network, the steps and training seconds (quality
    checks excluded), and the checks [(step, seconds, {...})] on the way."""

    ema: torch.nn.Module
    steps: int
    seconds: float
    checks: list[tuple[int, float, dict]] = field(default_factory=list)


def train_peer_loop(
    net: torch.nn.Module,
    x: torch.Tensor,
    budget: float,
    train_cfg,
    *,
    seed: int = 0,
    max_steps: int | None = None,
    lr_fn: Callable[[int, float], float] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    eval_seconds: float = math.inf,
) -> PeerTraining:
    """Train a UNet2DModel on images x with DDPMScheduler.add_noise for budget seconds (or
    max_steps steps): scorelab's recipe from train_cfg (a TrainConfig: batch_size, lr, warmup,
    grad_clip, ema_decay with scorelab's warm-up of the decay). lr_fn(step, seconds) sets the
    learning rate (default: the linear warm-up, then constant); augment(x0, generator) changes
    each batch. evaluate(ema) runs every eval_seconds of training time and after the last
    step; its time is left out of the training clock and the budget."""
    from diffusers import DDPMScheduler

    batch, lr, warmup = train_cfg.batch_size, train_cfg.lr, train_cfg.warmup
    if lr_fn is None:

        def lr_fn(step: int, seconds: float) -> float:
            return lr * min(1.0, (step + 1) / warmup)

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ema = copy.deepcopy(net).requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    checks: list[tuple[int, float, dict]] = []

    def check(steps: int, seconds: float) -> float:
        """Run evaluate at this step; the seconds it took."""
        began = time.perf_counter()
        ema.eval()
        checks.append((steps, seconds, evaluate(ema)))
        return time.perf_counter() - began

    steps, start, paused, next_check = 0, time.perf_counter(), 0.0, eval_seconds
    net.train()
    while time.perf_counter() - start - paused < budget and (
        max_steps is None or steps < max_steps
    ):
        for group in opt.param_groups:
            group["lr"] = lr_fn(steps, time.perf_counter() - start - paused)
        x0 = x[torch.randint(x.shape[0], (batch,), generator=g)]
        if augment is not None:
            x0 = augment(x0, g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        loss = torch.nn.functional.mse_loss(net(scheduler.add_noise(x0, eps, t), t).sample, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg.grad_clip)
        opt.step()
        decay = min(train_cfg.ema_decay, (1 + steps) / (10 + steps))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        steps += 1
        elapsed = time.perf_counter() - start - paused
        if evaluate is not None and elapsed >= next_check and elapsed < budget:
            paused += check(steps, elapsed)
            while next_check <= elapsed:
                next_check += eval_seconds
    seconds = time.perf_counter() - start - paused
    if evaluate is not None:
        check(steps, seconds)
    return PeerTraining(ema, steps, seconds, checks)


def count_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def flops_of(step: Callable[[], None]) -> int:
    """The floating-point operations torch counts in one call of step (matmuls and
    convolutions, forward and backward: FlopCounterMode's rules)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate at torch's current thread count: the best of repeats
    size x size products, in GFLOP/s."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


__all__ = [
    "MODEL_SCHEDULER_KEYS",
    "PEER_SAMPLERS",
    "PeerTraining",
    "count_params",
    "flops_of",
    "matmul_gflops",
    "peer_sample",
    "peer_scheduler",
    "peer_unet",
    "train_peer_loop",
]
