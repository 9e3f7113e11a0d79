"""Training throughput: scorelab's Trainer vs a bare PyTorch loop, beside the CPU's matmul rate.

What it measures
    steps/s of scorelab.training.Trainer.fit() and of a bare PyTorch loop doing the same work
    in the same process: the same MLP (scorelab.nn.MLP, dim 2, depth 3, widths 128 and 256),
    batch 512, Adam, the same loss (scorelab.objectives.diffusion_loss, eps-prediction, the
    linear schedule with T = 1000), the same data (20,000 normalized points of the ring
    dataset) and the same seeds. The bare loop samples indices, computes the loss, zero_grad,
    backward, optimizer.step() -- no EMA, no clipping, no logging. The Trainer runs with its
    real defaults (warm-up + cosine learning rate, loss.item() finite check, gradient clipping,
    EMA, a metrics.csv row every 25 steps) into a temporary run dir, progress bar off, and
    checkpoints only once, after its last step.

    Each repeat trains a fresh model for --steps steps; the two loops alternate (bare, trainer,
    trainer, bare, ...) so that drift in the machine's load hits both alike. The table gives the
    median steps/s over the repeats (and the best one, the least disturbed by other processes),
    and the ratio scorelab / bare of the medians (the goal: >= 0.95), and "paired": the median
    of each scorelab run over the bare run beside it, steadier when the load drifts. "loop" is
    the Trainer's own clock (TrainResult.seconds: the steps, log rows included); "fit" is the
    wall time of the whole fit() call, which adds opening metrics.csv and the final checkpoint.

    Achieved GFLOP/s counts 2 * in * out FLOPs per sample for every nn.Linear of the model (the
    time-embedding MLP included; the elementwise ops are left out) and a training step as 3x
    the forward pass. Beside it: float32 matmul GFLOP/s on this CPU, for the shape of one
    hidden layer of the MLP at batch 512 and for 2048 x 2048 @ 2048 x 2048 (best of 5 blocks).

Run it
    .venv/bin/python benchmarks/train_throughput.py              # about 2-3 minutes on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --steps 1500 --repeats 4 --out /tmp/t.md
    .venv/bin/python benchmarks/train_throughput.py --threads 1  # steadier on a busy machine

The markdown table goes to stdout and to --out (benchmarks/results/train_throughput.md).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from _machine import cpu_model  # benchmarks/ is on sys.path when run as a script
from torch import Tensor, nn

from scorelab.config import TrainConfig
from scorelab.data import Normalizer, load_dataset
from scorelab.nn import MLP
from scorelab.objectives import diffusion_loss
from scorelab.processes import make_schedule
from scorelab.training import Trainer

DIM, DEPTH, BATCH, N_DATA, SEED = 2, 3, 512, 20_000, 0
WIDTHS = (128, 256)
WARMUP_STEPS = 50
GOAL = 0.95
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "train_throughput.md"

LossFn = Callable[[nn.Module, Tensor, torch.Generator], Tensor]


@dataclass
class Timing:
    """Seconds per repeat: the bare loop, the Trainer's own loop clock, the whole fit() call."""

    bare: list[float]
    loop: list[float]
    fit: list[float]


def forward_flops_per_sample(model: nn.Module) -> int:
    """2 * in * out for every nn.Linear: the multiply-adds of one sample's forward pass."""
    return sum(
        2 * m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear)
    )


def make_model(width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)  # the initial weights, as scorelab.runs.train seeds them
    return MLP(DIM, width, DEPTH)


def make_loss() -> LossFn:
    schedule = make_schedule("linear")

    def loss_fn(net: nn.Module, x0: Tensor, generator: torch.Generator) -> Tensor:
        return diffusion_loss(net, x0, schedule=schedule, prediction="eps", generator=generator)

    return loss_fn


def bare_loop(width: int, data: Tensor, loss_fn: LossFn, cfg: TrainConfig, steps: int) -> float:
    """Seconds for `steps` plain PyTorch steps: indices, loss, zero_grad, backward, step."""
    model = make_model(width, cfg.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    generator = torch.Generator(device=data.device).manual_seed(cfg.seed)
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(data.shape[0], (cfg.batch_size,), generator=generator)
        loss = loss_fn(model, data[idx], generator).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def trainer_loop(
    width: int, data: Tensor, loss_fn: LossFn, cfg: TrainConfig, steps: int
) -> tuple[float, float]:
    """(the Trainer's own loop seconds, wall seconds of fit()) for `steps` steps."""
    model = make_model(width, cfg.seed)
    run_cfg = TrainConfig(
        steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed, ckpt_every=steps
    )
    with tempfile.TemporaryDirectory(prefix="scorelab-bench-") as run_dir:
        trainer = Trainer(model, loss_fn, data, run_cfg, Path(run_dir), {}, progress=False)
        start = time.perf_counter()
        result = trainer.fit()
        wall = time.perf_counter() - start
    if result.step != steps or result.bad_steps:
        raise RuntimeError(
            f"the Trainer stopped at {result.step} with {result.bad_steps} bad steps"
        )
    return result.seconds, wall


def time_width(width: int, data: Tensor, steps: int, repeats: int) -> Timing:
    """Alternate the two loops (A B B A A B ...) for `repeats` rounds after a warm-up of each."""
    loss_fn = make_loss()
    cfg = TrainConfig(batch_size=BATCH, seed=SEED)
    bare_loop(width, data, loss_fn, cfg, WARMUP_STEPS)
    trainer_loop(width, data, loss_fn, cfg, WARMUP_STEPS)
    timing = Timing([], [], [])
    for r in range(repeats):
        for side in ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare"):
            if side == "bare":
                timing.bare.append(bare_loop(width, data, loss_fn, cfg, steps))
            else:
                loop, fit = trainer_loop(width, data, loss_fn, cfg, steps)
                timing.loop.append(loop)
                timing.fit.append(fit)
        print(
            f"  width {width}, repeat {r + 1}/{repeats}: bare {steps / timing.bare[-1]:.1f}, "
            f"scorelab {steps / timing.loop[-1]:.1f} steps/s",
            file=sys.stderr,
        )
    return timing


def matmul_gflops(m: int, k: int, n: int, min_seconds: float = 0.3, blocks: int = 5) -> float:
    """Float32 GFLOP/s of (m, k) @ (k, n): the best of `blocks` timing blocks."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    flops = 2 * m * k * n
    torch.matmul(a, b, out=out)
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.05:
        torch.matmul(a, b, out=out)
        calls += 1
    per_block = max(1, int(calls * min_seconds / 0.05))
    rates = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(per_block):
            torch.matmul(a, b, out=out)
        rates.append(flops * per_block / (time.perf_counter() - start) / 1e9)
    return max(rates)


def report(
    timings: dict[int, Timing], flops: dict[int, int], matmuls: dict[str, float], steps: int
) -> str:
    def rate(seconds: list[float]) -> tuple[float, float]:
        return steps / statistics.median(seconds), steps / min(seconds)

    repeats = len(next(iter(timings.values())).bare)
    header = (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} · torch {torch.__version__} · "
        f"{torch.get_num_threads()} threads · CPU: {cpu_model()} ({_cores()} cores) · "
        f"{steps} steps x {repeats} repeats per loop, batch {BATCH}"
    )
    lines = [
        "# Training throughput: scorelab Trainer vs a bare PyTorch loop",
        "",
        header,
        "",
        f"MLP(dim={DIM}, depth={DEPTH}), Adam, diffusion_loss (eps, linear schedule), "
        f"{N_DATA:,} ring points, same seeds. steps/s: median over the repeats (best one in "
        "brackets). ratio = median scorelab / median bare; paired = median over repeats of "
        "scorelab / the bare run next to it; best = best scorelab / best bare. loop = the "
        "Trainer's own clock; fit = the whole fit() call, whose extra ms are opening "
        "metrics.csv and the final checkpoint. "
        "GFLOP/s in brackets: % of the float32 matmul rate of one hidden layer (below).",
        "",
        "| width | params | MFLOP/step | bare steps/s | scorelab loop steps/s | ratio | paired "
        "| best | scorelab fit steps/s | ratio fit | fit extra ms | bare GFLOP/s "
        "| scorelab GFLOP/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for width, t in timings.items():
        step_flops = 3 * flops[width] * BATCH
        (bare, bare_best), (loop, loop_best), (fit, _) = rate(t.bare), rate(t.loop), rate(t.fit)
        paired = statistics.median(b / lp for b, lp in zip(t.bare, t.loop, strict=True))
        extra_ms = 1e3 * statistics.median(f - lp for f, lp in zip(t.fit, t.loop, strict=True))
        params = sum(p.numel() for p in make_model(width, SEED).parameters())
        layer = matmuls[_layer_shape(width)]
        bare_gf, loop_gf = bare * step_flops / 1e9, loop * step_flops / 1e9
        lines.append(
            f"| {width} | {params:,} | {step_flops / 1e6:.0f} | {bare:.1f} ({bare_best:.1f}) "
            f"| {loop:.1f} ({loop_best:.1f}) | **{loop / bare:.3f}** | {paired:.3f} "
            f"| {loop_best / bare_best:.3f} "
            f"| {fit:.1f} | {fit / bare:.3f} | {extra_ms:.1f} "
            f"| {bare_gf:.1f} ({100 * bare_gf / layer:.0f}%) "
            f"| {loop_gf:.1f} ({100 * loop_gf / layer:.0f}%) |"
        )
        verdicts.append(
            f"width {width}: {'met' if loop / bare >= GOAL else 'NOT met'} ({loop / bare:.3f})"
        )
    lines += [
        "",
        f"Goal scorelab/bare >= {GOAL} (ratio of the medians, loop clock): "
        + "; ".join(verdicts)
        + ".",
        "",
        "| float32 matmul (best of 5) | GFLOP/s |",
        "|---|---:|",
        *(f"| {shape} | {g:.1f} |" for shape, g in matmuls.items()),
        "",
        "FLOPs: 2·in·out per nn.Linear per sample (time embedding included, elementwise ops not), "
        "a training step counted as 3x the forward pass. Timings share the CPU with whatever "
        "else runs on the machine; on a busy one, compare the paired ratio and the best runs.",
    ]
    return "\n".join(lines) + "\n"


def _layer_shape(width: int) -> str:
    return f"{BATCH}x{width} @ {width}x{width}"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=6, help="timed repeats of each loop")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown file to write")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    raw = load_dataset("ring", N_DATA, seed=SEED)
    data = Normalizer.fit(raw).encode(raw)  # as scorelab.runs.train feeds the Trainer

    timings, flops = {}, {}
    for width in WIDTHS:
        flops[width] = forward_flops_per_sample(make_model(width, SEED))
        timings[width] = time_width(width, data, args.steps, args.repeats)
    matmuls = {_layer_shape(w): matmul_gflops(BATCH, w, w) for w in WIDTHS}
    matmuls["2048x2048 @ 2048x2048"] = matmul_gflops(2048, 2048, 2048)

    text = report(timings, flops, matmuls, args.steps)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
