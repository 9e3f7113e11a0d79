"""A model-agnostic training loop: Adam, warm-up and cosine decay, clipping, EMA, checkpoints.

The loop draws batches from an in-memory tensor with one torch.Generator that also feeds the
loss' noise, so the whole run is a function of the seed, and a checkpoint (weights, EMA,
optimizer, generator state, step, log accumulators) resumes it exactly. A step whose loss or
gradient norm is not finite is skipped and counted; several in a row stop the run.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scorelab.config import TrainConfig
from scorelab.errors import ScorelabError
from scorelab.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    flatten_state,
    load_state_dict_checked,
    save_checkpoint,
    unflatten_state,
)
from scorelab.training.ema import EMA

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]
METRICS = "metrics.csv"
COLUMNS = ["step", "loss", "grad_norm", "lr", "bad_steps", "seconds"]


class TrainingDiverged(ScorelabError):
    """The loss or gradients stayed non-finite for several steps in a row."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over cfg.warmup steps, then cosine decay to min_lr_ratio * lr."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = min((step - cfg.warmup) / span, 1.0)
    ratio = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * ratio


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Scale gradients to a global L2 norm of at most max_norm; return the norm before.

    Like torch's clip_grad_norm_, but it multiplies only when the norm is too large (most
    steps it is not) and returns a float, which the loop needs anyway.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    if math.isfinite(norm) and norm > max_norm:
        torch._foreach_mul_(grads, max_norm / (norm + 1e-6))
    return norm


@dataclass
class TrainResult:
    step: int
    final_loss: float
    bad_steps: int
    seconds: float
    checkpoint: Path


class Trainer:
    """Trains model on data with loss_fn(model, batch, generator) -> (B,)."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Tensor,
        cfg: TrainConfig,
        run_dir: Path,
        config: dict[str, Any],
        *,
        progress: bool = True,
    ) -> None:
        cfg.validate()
        self.model, self.loss_fn, self.data, self.cfg = model, loss_fn, data, cfg
        self.run_dir, self.config, self.progress = Path(run_dir), config, progress
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.ema = EMA(model, cfg.ema_decay)
        self.generator = torch.Generator(device=data.device).manual_seed(cfg.seed)
        self.step = 0
        self.bad_steps = 0
        self.window = [0.0, 0, 0.0]  # loss sum, count, grad-norm sum since the last log row
        self.seconds = 0.0

    # -- checkpoint state --------------------------------------------------------------
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors: dict[str, Tensor] = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema/{k}": v for k, v in self.ema.state_dict().items()})
        tensors["rng/generator"] = self.generator.get_state()
        optim = flatten_state(self.optimizer.state_dict(), "optim", tensors)
        meta = {
            "config": self.config,
            "step": self.step,
            "optimizer": optim,
            "trainer": {
                "bad_steps": self.bad_steps,
                "window": self.window,
                "seconds": self.seconds,
            },
        }
        return tensors, meta

    def save(self) -> Path:
        tensors, meta = self.state()
        return save_checkpoint(self.run_dir, tensors, meta)

    def restore(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
        def strip(prefix):
            return {  # noqa: E731
                k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
            }

        load_state_dict_checked(self.model, strip("model/"), f"the weights in {source}")
        self.ema.load_state_dict(strip("ema/"))
        self.optimizer.load_state_dict(unflatten_state(meta["optimizer"], tensors))
        self.generator.set_state(tensors["rng/generator"])
        self.step = int(meta["step"])
        trainer = meta["trainer"]
        self.bad_steps, self.window = int(trainer["bad_steps"]), list(trainer["window"])
        self.seconds = float(trainer["seconds"])

    # -- the loop ----------------------------------------------------------------------
    def _open_log(self) -> Any:
        """Open metrics.csv for appending, dropping rows after the restored step."""
        path = self.run_dir / METRICS
        rows = []
        if self.step > 0 and path.is_file():
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        f = open(path, "w", newline="")  # noqa: SIM115 (kept open for the whole run)
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        return f, writer

    def fit(self) -> TrainResult:
        cfg, model = self.cfg, self.model
        params = [p for p in model.parameters() if p.requires_grad]
        f, writer = self._open_log()
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not self.progress or not sys.stderr.isatty(),
            unit="step",
            dynamic_ncols=True,
        )
        in_a_row, loss_value = 0, float("nan")
        start = time.perf_counter() - self.seconds
        model.train()
        try:
            while self.step < cfg.steps:
                lr = lr_at(self.step, cfg)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                idx = torch.randint(
                    self.data.shape[0],
                    (cfg.batch_size,),
                    generator=self.generator,
                    device=self.data.device,
                )
                loss = self.loss_fn(model, self.data[idx], self.generator).mean()
                loss_value = loss.item()
                self.optimizer.zero_grad(set_to_none=True)
                grad_norm = float("nan")
                if math.isfinite(loss_value):
                    loss.backward()
                    grad_norm = clip_grad_norm(params, cfg.grad_clip)
                if math.isfinite(loss_value) and math.isfinite(grad_norm):
                    self.optimizer.step()
                    self.ema.update(model, self.step)
                    in_a_row = 0
                    self.window[0] += loss_value
                    self.window[1] += 1
                    self.window[2] += grad_norm
                else:
                    in_a_row += 1
                    self.bad_steps += 1
                    if in_a_row >= cfg.max_bad_steps:
                        raise TrainingDiverged(self._diverged_message(in_a_row))
                self.step += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    self.seconds = time.perf_counter() - start
                    self._log(writer, lr, bar)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps:
                    self.seconds = time.perf_counter() - start
                    f.flush()
                    self.save()
        finally:
            bar.close()
            f.close()
        return TrainResult(
            self.step, loss_value, self.bad_steps, self.seconds, self.run_dir / CHECKPOINT
        )

    def _log(self, writer: csv.DictWriter, lr: float, bar: tqdm) -> None:
        total, count, grad_total = self.window
        mean = total / count if count else float("nan")
        writer.writerow(
            {
                "step": self.step,
                "loss": f"{mean:.6g}",
                "grad_norm": f"{grad_total / count if count else float('nan'):.4g}",
                "lr": f"{lr:.4g}",
                "bad_steps": self.bad_steps,
                "seconds": f"{self.seconds:.3f}",
            }
        )
        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2g}", refresh=False)
        self.window = [0.0, 0, 0.0]

    def _diverged_message(self, n: int) -> str:
        good = [p for p in (self.run_dir / CHECKPOINT, self.run_dir / PREVIOUS) if p.is_file()]
        where = f"last good checkpoint: {good[0]}" if good else "no checkpoint was written yet"
        return (
            f"the loss or gradient was NaN/inf for {n} steps in a row at step {self.step + 1} "
            f"({self.bad_steps} bad steps in all); {where}. Try a lower --lr."
        )
