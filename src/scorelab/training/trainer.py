"""A model-agnostic training loop: Adam, warm-up and cosine decay, clipping, EMA, checkpoints.

The loop draws batches from an in-memory tensor with one torch.Generator that also feeds the
loss' noise, so the whole run is a function of the seed, and a checkpoint (weights, EMA,
optimizer, generator state, step, log accumulators) resumes it exactly. A step whose loss or
gradient norm is not finite is skipped and counted; several in a row stop the run. SIGINT,
SIGTERM and SIGUSR1 stop it after the step in progress, with a checkpoint at that step
(preemption.py); a smoothed loss far above its best is reported, not stopped (spikes.py).
A checkpoint (or metrics.csv) write that fails stops the run with a CheckpointError naming
the cause and the checkpoint on disk, which the failed write leaves intact (checkpoint.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from scorelab.config import TrainConfig
from scorelab.errors import CheckpointError, ScorelabError
from scorelab.files import atomic_write_bytes, os_error_cause, remove_stale_temporaries
from scorelab.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    describe_last_checkpoint,
    flatten_state,
    load_state_dict_checked,
    save_checkpoint,
    unflatten_state,
)
from scorelab.training.distributed import all_reduce_max, all_reduce_mean, local_device, world
from scorelab.training.ema import EMA
from scorelab.training.preemption import Preempted, StopSignals
from scorelab.training.spikes import LossSpikes

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]
METRICS = "metrics.csv"
# diverging (0/1, spikes.py) came last, after the first six: readers look columns up by name
RUN_FILES = (CHECKPOINT, PREVIOUS, METRICS)  # what a Trainer writes in its run directory
COLUMNS = ["step", "loss", "grad_norm", "lr", "bad_steps", "seconds", "diverging"]
# the quality checks' columns (on_eval, cfg.eval_every): blank in rows without one
EVAL_COLUMNS = ["fd", "fd_floor"]
COLUMNS += EVAL_COLUMNS
# what rank 0 all-reduces in place of a signal number when a write failed: above them all
WRITE_FAILED = 1000


def use_deterministic_algorithms() -> None:
    """PyTorch's deterministic kernels (cuBLAS needs its workspace setting before first use)."""
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


class TrainingDiverged(ScorelabError):
    """The loss or gradients stayed non-finite for several steps in a row."""


def lr_at(step: int, cfg: TrainConfig, seconds: float = 0.0) -> float:
    """Linear warm-up over cfg.warmup steps, then cosine decay to min_lr_ratio * lr.

    With a time cap (cfg.max_seconds > 0) the decay follows the larger of the step fraction
    and the fraction seconds / max_seconds, so a run cut by the clock still ends its decay.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    progress = (step - cfg.warmup) / span
    if cfg.max_seconds > 0:
        progress = max(progress, seconds / cfg.max_seconds)
    progress = min(progress, 1.0)
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


def _complete_rows(path: Path) -> list[dict[str, str]]:
    """metrics.csv's rows that were written whole: the last line counts only when its newline
    is there, and a row with a missing or non-numeric step is skipped."""
    with open(path, newline="") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    rows = []
    for row in csv.DictReader(lines):
        if None in row.values() or not (row.get("step") or "").isdigit():
            continue
        rows.append(row)
    return rows


class Trainer:
    """Trains model on data with loss_fn(model, batch, generator) -> (B,); with labels (N,),
    loss_fn(model, batch, generator, batch_labels), the labels indexed like the data."""

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
        on_sample: Callable[[Trainer], None] | None = None,
        on_eval: Callable[[Trainer], dict[str, float]] | None = None,
        labels: Tensor | None = None,
    ) -> None:
        cfg.validate()
        if labels is not None and labels.shape != (data.shape[0],):
            raise ScorelabError(f"{tuple(labels.shape)} labels for {data.shape[0]} examples")
        self.rank, self.world_size = world()
        self.device = local_device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ScorelabError("--device cuda: no CUDA device is available here")
        if cfg.precision == "fp16" and self.device.type != "cuda":
            raise ScorelabError("--precision fp16 needs a CUDA device; use bf16 on the CPU")
        if cfg.batch_size % (cfg.micro_batches * self.world_size):
            raise ScorelabError(
                f"--batch-size {cfg.batch_size} is not divisible by {self.world_size} processes "
                f"x {cfg.micro_batches} micro-batches"
            )
        if cfg.deterministic:
            use_deterministic_algorithms()
        model.to(self.device)
        if cfg.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model, self.loss_fn, self.data, self.cfg = model, loss_fn, data.to(self.device), cfg
        self.run_dir, self.config, self.progress = Path(run_dir), config, progress
        self.on_sample = on_sample
        if cfg.eval_every and on_eval is None:
            raise ScorelabError("--eval-every: this kind of run has no quality check")
        self.on_eval = on_eval
        self.labels = labels.to(self.device) if labels is not None else None
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        self.ema = EMA(model, cfg.ema_decay)
        self.generator = torch.Generator(device=self.data.device).manual_seed(cfg.seed)
        # what the loss calls: the model, wrapped for gradient averaging and compiled on demand
        self.net: nn.Module = model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)  # type: ignore[assignment]
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.step = 0
        self.stopping = False  # True from the run's last step on (steps or time reached)
        self.bad_steps = 0
        self.window = [0.0, 0, 0.0]  # loss sum, count, grad-norm sum since the last log row
        self.seconds = 0.0
        self.spikes = LossSpikes()
        self.stop_signals = StopSignals()
        self._row_step: int | None = None  # the step of metrics.csv's last row
        self._saved_step: int | None = None  # the step of this trainer's last checkpoint
        self._drop_row = False  # the restored step's row was written at a stop: provisional
        self._last_fd: float | None = None  # the progress bar's latest quality check

    # -- checkpoint state --------------------------------------------------------------
    def state(self, partial_row: bool = False) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Tensors and JSON metadata of a checkpoint; partial_row marks the metrics row at this
        step as one written at a stop, between the log_every rows (a resume drops it)."""
        tensors: dict[str, Tensor] = {f"model/{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"ema/{k}": v for k, v in self.ema.state_dict().items()})
        tensors["rng/generator"] = self.generator.get_state()
        # torch's own generators, which dropout draws from (every rank draws alike: seeded
        # alike, the same layers on batches of the same shape)
        tensors["rng/torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            tensors["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        optim = flatten_state(self.optimizer.state_dict(), "optim", tensors)
        meta = {
            "config": self.config,
            "step": self.step,
            "optimizer": optim,
            "trainer": {
                "bad_steps": self.bad_steps,
                "window": self.window,
                "seconds": self.seconds,
                "partial_row": partial_row,
                "spikes": self.spikes.state_dict(),
            },
        }
        return tensors, meta

    def save(self, partial_row: bool = False) -> Path:
        self.stop_signals.saving = True  # a second Ctrl-C now waits for the write
        try:
            tensors, meta = self.state(partial_row)
            path = save_checkpoint(self.run_dir, tensors, meta)
        finally:
            self.stop_signals.saving = False
        self._saved_step = self.step
        return path

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Stop as if signum had arrived (from any thread; fit installs no handlers outside the
        main thread)."""
        self.stop_signals.request(signum)

    def restore(self, tensors: dict[str, Tensor], meta: dict[str, Any], source: str) -> None:
        def strip(prefix):
            return {  # noqa: E731
                k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)
            }

        load_state_dict_checked(self.model, strip("model/"), f"the weights in {source}")
        self.ema.load_state_dict(strip("ema/"))
        self.optimizer.load_state_dict(unflatten_state(meta["optimizer"], tensors))
        self.generator.set_state(tensors["rng/generator"])
        if "rng/torch" in tensors:  # checkpoints written before it was kept have none
            torch.set_rng_state(tensors["rng/torch"])
        if "rng/cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng/cuda"], self.device)
        self.step = int(meta["step"])
        trainer = meta["trainer"]
        self.bad_steps, self.window = int(trainer["bad_steps"]), list(trainer["window"])
        self.seconds = float(trainer["seconds"])
        self._drop_row = bool(trainer.get("partial_row", False))
        if "spikes" in trainer:  # checkpoints before the spike check have none
            self.spikes.load_state_dict(trainer["spikes"])

    # -- the loop ----------------------------------------------------------------------
    def _open_log(self) -> Any:
        """Open metrics.csv for appending, dropping rows after the restored step (and the row
        at it when that was written at a stop). The rows kept replace the file atomically
        before it is appended to, so a crash now or later leaves every row up to the
        checkpoint; a row that a killed process left half-written is dropped."""
        path = self.run_dir / METRICS
        rows = []
        if self.step > 0 and path.is_file():
            last = self.step - 1 if self._drop_row else self.step
            rows = [r for r in _complete_rows(path) if int(r["step"]) <= last]
        self._row_step = int(rows[-1]["step"]) if rows else None
        self._drop_row = False
        text = io.StringIO(newline="")
        kept = csv.DictWriter(text, fieldnames=COLUMNS)
        kept.writeheader()
        kept.writerows(rows)
        remove_stale_temporaries(self.run_dir, RUN_FILES)  # this process is the one writer
        atomic_write_bytes(path, text.getvalue().encode())
        f = open(path, "a", newline="")  # noqa: SIM115 (kept open for the whole run)
        return f, csv.DictWriter(f, fieldnames=COLUMNS)

    def fit(self) -> TrainResult:
        """Train to cfg.steps (or cfg.max_seconds). SIGINT, SIGTERM or SIGUSR1 end the run
        after the step in progress, with a checkpoint and a metrics row at the step reached:
        Preempted is raised. Ctrl-C twice (outside a checkpoint write) stops at once."""
        with self.stop_signals:
            try:
                return self._fit()
            finally:
                self.stop_signals.clear()

    def _fit(self) -> TrainResult:
        cfg, model = self.cfg, self.model
        try:
            f, writer = self._open_log() if self.rank == 0 else (None, None)
        except OSError as e:
            raise self._write_failed(str(self.run_dir / METRICS), e) from None
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            disable=not self.progress or not sys.stderr.isatty() or self.rank != 0,
            unit="step",
            dynamic_ncols=True,
        )
        in_a_row, loss_value = 0, float("nan")
        start = time.perf_counter() - self.seconds
        # the clock every rank agrees on (the mean over ranks), so that all ranks use the same
        # learning rate and stop at the same step under a time cap
        elapsed, capped = self.seconds, cfg.max_seconds > 0
        model.train()
        try:
            while True:
                # between steps, and after the last one, every rank reads the same decision
                signum = int(all_reduce_max(float(self.stop_signals.received), self.device))
                if signum == WRITE_FAILED:
                    raise CheckpointError(
                        f"training stopped at step {self.step}: rank 0 could not write to "
                        f"{self.run_dir} (its message says why)"
                    )
                if signum:
                    self.seconds = time.perf_counter() - start
                    self._preempt(signum, f, writer, bar)
                if self.step >= cfg.steps or (capped and elapsed >= cfg.max_seconds):
                    break
                lr = lr_at(self.step, cfg, elapsed)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss_value, grad_norm = self._gradient()
                if math.isfinite(loss_value) and math.isfinite(grad_norm):
                    if self.scaler is not None:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    self.ema.update(model, self.step)
                    if self.spikes.update(loss_value, past_warmup=self.step >= cfg.warmup):
                        self._warn_diverging()
                    in_a_row = 0
                    self.window[0] += loss_value
                    self.window[1] += 1
                    self.window[2] += grad_norm
                elif self.scaler is not None and math.isfinite(loss_value):
                    self.scaler.update()  # fp16 overflow: the scaler lowers its scale and skips
                else:
                    in_a_row += 1
                    self.bad_steps += 1
                    if in_a_row >= cfg.max_bad_steps:
                        raise TrainingDiverged(self._diverged_message(in_a_row))
                self.step += 1
                bar.update(1)
                if capped:
                    elapsed = all_reduce_mean([time.perf_counter() - start], self.device)[0]
                last = self.step == cfg.steps or (capped and elapsed >= cfg.max_seconds)
                self.stopping = last  # on_sample may draw more at the run's last step
                checked = {}
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or last):
                    checked, pause = self._evaluate()
                    start += pause  # the clock and the time cap count training only
                if self.step % cfg.log_every == 0 or last:
                    self.seconds = time.perf_counter() - start
                    self._log(writer, lr, bar, checked)
                if self.rank == 0 and (self.step % cfg.ckpt_every == 0 or last):
                    self.seconds = time.perf_counter() - start
                    f.flush()
                    try:
                        self.save()
                    except OSError as e:
                        raise self._write_failed("its checkpoint", e) from None
                every = cfg.sample_every
                if (
                    self.rank == 0
                    and self.on_sample is not None
                    and every > 0
                    and (self.step % every == 0 or last)
                ):
                    self.on_sample(self)
        except OSError as e:  # another write: metrics.csv, pictures
            raise self._write_failed(f"to {self.run_dir}", e) from None
        finally:
            bar.close()
            if f is not None:
                # rows are flushed before each checkpoint; after a failed write, closing
                # (which flushes) fails the same way and must not hide the first error
                with contextlib.suppress(OSError):
                    f.close()
        self.stopping = True
        return TrainResult(
            self.step, loss_value, self.bad_steps, self.seconds, self.run_dir / CHECKPOINT
        )

    def _preempt(self, signum: int, f: Any, writer: csv.DictWriter | None, bar: tqdm) -> NoReturn:
        """Stop at the step reached: a checkpoint and a metrics row at it, then Preempted."""
        # a row between the log_every ones: the checkpoint keeps the window it averages and
        # marks it provisional, so a resumed run drops it and writes an uninterrupted run's rows
        partial = self.step > 0 and self._row_step != self.step
        checkpoint: Path | None = self.run_dir / CHECKPOINT
        error = None
        if self.rank == 0 and (partial or self._saved_step != self.step):
            f.flush()
            try:
                checkpoint = self.save(partial_row=partial)
            except (OSError, ScorelabError) as e:
                checkpoint, error = None, str(e)
        if partial:
            self._log(writer, lr_at(self.step - 1, self.cfg, self.seconds), bar)
        if f is not None:
            f.flush()
        self.stopping = True
        all_reduce_max(0.0, self.device)  # a barrier: no rank exits before the checkpoint exists
        raise Preempted(self.step, checkpoint, signum, rank=self.rank, error=error)

    def _evaluate(self) -> tuple[dict[str, float], float]:
        """Rank 0's quality check at this step, and the seconds it took (every rank gets them,
        to leave them out of its clock). torch's global generators are restored after it, so
        the run goes on exactly as without it."""
        began, checked = time.perf_counter(), {}
        if self.rank == 0 and self.on_eval is not None:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                checked = self.on_eval(self)
            unknown = set(checked) - set(EVAL_COLUMNS)
            if unknown:
                raise ScorelabError(f"a quality check returned unknown columns {sorted(unknown)}")
            if self.progress and checked:
                shown = ", ".join(f"{k} {v:.4g}" for k, v in checked.items())
                tqdm.write(f"step {self.step}: {shown}")
        pause = all_reduce_max(time.perf_counter() - began, self.device)
        return checked, pause

    def _write_failed(self, what: str, error: OSError) -> CheckpointError:
        """One line for a write that failed (disk full, I/O error, read-only folder): the
        cause and the checkpoint on disk, read from the file, to resume from."""
        if self.world_size > 1 and self.rank == 0:  # the others wait at the next stop decision
            all_reduce_max(float(WRITE_FAILED), self.device)
        cause = os_error_cause(error)
        words, step = describe_last_checkpoint(self.run_dir)
        then = "; resume from it once the cause is fixed" if step is not None else ""
        return CheckpointError(
            f"training stopped at step {self.step}: could not write {what} ({cause}); {words}"
            + then
        )

    def _warn_diverging(self) -> None:
        if self.rank != 0:
            return
        s = self.spikes
        tqdm.write(
            f"warning: the training loss is diverging at step {self.step + 1}: its moving "
            f"average {s.smoothed:.4g} is {s.ratio:.1f}x its least value {s.best:.4g} after "
            f"warm-up; try a lower --lr than {self.cfg.lr:g}",
            file=sys.stderr,
        )

    def _loss(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        x0 = self.data[idx]
        extra = () if self.labels is None else (self.labels[idx],)
        if self.cfg.channels_last and x0.ndim == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        dtype = torch.float16 if self.cfg.precision == "fp16" else torch.bfloat16
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.cfg.precision != "fp32"):
            loss = self.loss_fn(self.net, x0, generator, *extra).mean()
        return loss.float()  # the loss and its gradient's scale stay in float32

    def _gradient(self) -> tuple[float, float]:
        """One step's gradient in the .grad fields: (loss, gradient norm before clipping).

        One shard (one process, no micro-batches) draws its noise from the run's generator.
        Otherwise the global batch is split into shards k = 0..S-1 (examples k, k+S, ...),
        shard k draws its noise from a generator seeded with (a per-step seed + k), and the
        gradients are averaged over shards: S processes with one micro-batch each make the
        same step as one process with S micro-batches.
        """
        cfg, params = self.cfg, [p for p in self.model.parameters() if p.requires_grad]
        idx = torch.randint(
            self.data.shape[0], (cfg.batch_size,), generator=self.generator, device=self.device
        )
        self.optimizer.zero_grad(set_to_none=True)
        shards = cfg.micro_batches * self.world_size
        if shards == 1:
            loss = self._loss(idx, self.generator)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                return loss_value, float("nan")
            self._backward(loss)
            return loss_value, self._clip(params)
        step_seed = int(torch.randint(2**62, (1,), generator=self.generator, device=self.device))
        losses = []
        for j in range(cfg.micro_batches):
            k = self.rank * cfg.micro_batches + j
            generator = torch.Generator(device=self.device).manual_seed(step_seed + k)
            last = j == cfg.micro_batches - 1
            sync = contextlib.nullcontext() if last or self.world_size == 1 else self.net.no_sync()
            with sync:
                loss = self._loss(idx[k::shards], generator)
                # NaN gradients reach every rank through the all-reduce, so all skip together
                self._backward(loss / cfg.micro_batches)
            losses.append(loss.item())
        (loss_value,) = all_reduce_mean([sum(losses) / len(losses)], self.device)
        return loss_value, self._clip(params)

    def _backward(self, loss: Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _clip(self, params: list[nn.Parameter]) -> float:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        return clip_grad_norm(params, self.cfg.grad_clip)

    def _log(
        self, writer: csv.DictWriter | None, lr: float, bar: tqdm, checked: dict | None = None
    ) -> None:
        total, count, grad_total = self.window
        mean = total / count if count else float("nan")
        self._row_step = self.step
        if writer is None:
            self.window = [0.0, 0, 0.0]
            return
        writer.writerow(
            {
                "step": self.step,
                "loss": f"{mean:.6g}",
                "grad_norm": f"{grad_total / count if count else float('nan'):.4g}",
                "lr": f"{lr:.4g}",
                "bad_steps": self.bad_steps,
                "seconds": f"{self.seconds:.3f}",
                "diverging": int(self.spikes.diverging),
                **{k: f"{v:.6g}" for k, v in (checked or {}).items()},
            }
        )
        flag = {"diverging": "yes"} if self.spikes.diverging else {}
        if checked and "fd" in checked:
            self._last_fd = checked["fd"]
        if self._last_fd is not None:
            flag["fd"] = f"{self._last_fd:.3g}"
        bar.set_postfix(loss=f"{mean:.4f}", lr=f"{lr:.2g}", **flag, refresh=False)
        self.window = [0.0, 0, 0.0]

    def _diverged_message(self, n: int) -> str:
        good = [p for p in (self.run_dir / CHECKPOINT, self.run_dir / PREVIOUS) if p.is_file()]
        where = f"last good checkpoint: {good[0]}" if good else "no checkpoint was written yet"
        return (
            f"the loss or gradient was NaN/inf for {n} steps in a row at step {self.step + 1} "
            f"({self.bad_steps} bad steps in all); {where}. Try a lower --lr."
        )
