"""Fashion-MNIST on a CPU budget: scorelab's U-Net against diffusers' UNet2DModel + DDPMScheduler.

What it measures
----------------
1. A race at equal training time (--budget seconds each, default 1200; 2 threads; one model
   after the other, each in its own child process):
   scorelab: `scorelab.runs.train` with the Fashion preset (configs/fashion.json, `scorelab
   train --config fashion`) on the image defaults, on all 60,000 training images, stopped by
   the clock (train.max_seconds; the cosine decay follows the elapsed time), with its quality
   check every K steps (train.eval_every, train.eval_n): FD of --eval-n EMA samples drawn with
   DPM-Solver++ 20 steps, in metrics.csv with its floor; the check's time is not training
   time.
   The peer: diffusers' UNet2DModel laid out like scorelab's U-Net (parameter count within
   15%; both printed) trained by its own loop on DDPMScheduler.add_noise (linear betas,
   T = 1000, eps) with the preset's batch, Adam learning rate, warm-up, cosine decay over the
   budget, gradient clipping and EMA, on the same images; at the cadence of scorelab's checks
   (the mean training seconds between them) it draws --eval-n EMA samples with
   DPMSolverMultistepScheduler, 20 steps, and takes their FD with the same probe
   (scorelab.reports.metrics.FDProbe on scorelab's run: the same reference images and
   feature classifier); that time is left out of its clock too. K is the steps scorelab
   trains in --budget / --evals seconds (default 10 checks), from a few timed steps.
2. Final quality of each model's EMA weights: --n samples (default 2000) with ancestral DDPM
   at --ddpm-steps (default 250), DDIM 50 and DPM-Solver++ 20 steps (scorelab's samplers;
   diffusers' DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler), each judged by
   `evaluate_metrics(run, "fd,kid,pr")`: FD, KID, precision and recall (k = 3) in the
   features of a classifier trained on 10,000 training images (its accuracy on the test
   split is printed), against those images, each next to its floor (the test split against
   them); sampling seconds per sampler.
3. Per model: steps/s; GFLOP/s achieved (the FLOPs of one training step, counted by
   torch.utils.flop_counter.FlopCounterMode, times steps/s) against this machine's fp32
   matmul rate (a 2048 x 2048 product, 2 threads); the peak resident memory of its process
   through training (data, model, optimizer and its quality checks); and time to quality:
   the training seconds at which scorelab's FD curve first reaches the peer's FD at the end of
   its budget (a check at or below it), and that time over the budget.

Run
---
    make bench-fashion                                   # --budget 1200: about 2 hours
    .venv/bin/python benchmarks/fashion.py --budget 300  # a shorter race (labelled as such)

Needs Fashion-MNIST (sudo apt-get install dataset-fashion-mnist, or --data-dir in scorelab)
and diffusers (pip install -e '.[bench]'). Writes --out (default
benchmarks/results/fashion.md) and prints it; fashion_fd.png (FD against training seconds),
fashion_samples.png and fashion_samples_diffusers.png (ancestral DDPM samples) go beside it.
The runs go to --workdir (default: a new temporary folder); the feature classifier is cached
there (features.safetensors) and reused by later runs given the same --workdir.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import math
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images import (  # noqa: E402
    count_params,
    flops_of,
    matmul_gflops,
    peer_sample,
    peer_unet,
    train_peer_loop,
)
from _machine import cpu_model  # noqa: E402

from scorelab.build import build_image_data, build_model_for, build_process  # noqa: E402
from scorelab.config import RunConfig, apply_overrides  # noqa: E402
from scorelab.evaluation.images import save_image_grid  # noqa: E402
from scorelab.nn.unet import norm_groups  # noqa: E402
from scorelab.presets import config_file_overrides, image_defaults  # noqa: E402
from scorelab.reports.metrics import FDProbe, draw_samples, evaluate_metrics  # noqa: E402
from scorelab.runs import load_run, resolve, train  # noqa: E402
from scorelab.runs.diffusion import make_loss_fn  # noqa: E402
from scorelab.training.trainer import lr_at  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PRESET, DATA = "fashion", "fashion-mnist"
THREADS = 2
FULL_BUDGET = 1200  # the budget the benchmark is stated for; less is a shorter race
PARAM_TOLERANCE = 0.15  # the peer's parameter count within 15% of scorelab's
EVAL_SAMPLER, EVAL_STEPS = "dpm-solver++", 20  # the quality checks' sampler, both sides
FEATURES = "features.safetensors"  # scorelab's cache of the feature classifier
# the final samples are drawn in batches of this many, both models: on 2 cores a 28x28 batch
# of ~100 costs ~40% less per image than draw_samples' default of 500 (cache-bound); the
# in-training checks keep scorelab's 500, and the peer's checks do the same
SAMPLE_BATCH = 100


def final_samplers(ddpm_steps: int) -> dict[str, int]:
    """The final samplers and their steps; the first makes the sample grids."""
    return {"ddpm": ddpm_steps, "ddim": 50, "dpm-solver++": 20}


def preset_overrides() -> tuple[dict, str]:
    """The Fashion preset on the image defaults, and how the report names it."""
    preset = config_file_overrides(PRESET)
    return {**image_defaults(), **preset}, f"the {PRESET} preset (configs/{PRESET}.json)"


def scorelab_config(budget: float, eval_every: int, eval_n: int, seed: int) -> RunConfig:
    """The Fashion preset on the image defaults, stopped by the clock alone after budget
    seconds, with a quality check about every eval_every steps (a multiple of log_every,
    which each check's metrics.csv row needs; log_every drops to eval_every when it is
    less) and no checkpoints on the way."""
    overrides, _ = preset_overrides()
    log_every = int(overrides.get("train.log_every", RunConfig().train.log_every))
    if eval_every < log_every:
        log_every = eval_every
    eval_every = max(1, round(eval_every / log_every)) * log_every
    return apply_overrides(RunConfig(), {
        **overrides, "data": DATA, "train.seed": seed,
        "train.steps": 10**7, "train.max_seconds": budget,
        "train.eval_every": eval_every, "train.eval_n": eval_n, "train.log_every": log_every,
        "train.ckpt_every": 10**9, "train.sample_every": 0,
    })  # fmt: skip


def peer_groups(cfg: RunConfig) -> int:
    """The peer's GroupNorm groups: as scorelab's U-Net, at least norm_group_size channels a
    group at its narrowest level (diffusers' default of 32 groups would give a 32-channel
    level one channel per group, which erases the time embedding), dividing every width."""
    m = cfg.model
    widths = [m.channels * k for k in m.channel_mult]
    groups = norm_groups(min(widths), m.norm_group_size or 1)
    while any(w % groups for w in widths):
        groups -= 1
    return groups


def peer_net(cfg: RunConfig):
    """The peer for a resolved scorelab config: its U-Net's layout in diffusers."""
    m = cfg.model
    return peer_unet(m, m.image_size, in_channels=m.in_channels, norm_num_groups=peer_groups(cfg))


def scorelab_step(cfg: RunConfig, x: torch.Tensor):
    """scorelab's model, and one training step of it on a batch of x (loss, backward)."""
    process = build_process(cfg)
    model = build_model_for(cfg, process).train()
    loss_fn = make_loss_fn(cfg, process)
    x0 = x[: cfg.train.batch_size]
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        loss_fn(model, x0, g).mean().backward()

    return model, step


def peer_step(net, x: torch.Tensor, batch: int):
    """One training step of the peer (its loss, backward) on a batch of x."""
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    x0, g = x[:batch], torch.Generator().manual_seed(0)

    def step() -> None:
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        out = net(scheduler.add_noise(x0, eps, t), t).sample
        torch.nn.functional.mse_loss(out, eps).backward()

    return step


def steps_per_second(model, step, lr: float, warm: int = 2, timed: int = 5) -> float:
    """A rough training rate (steps/s, Adam included) from a few steps after warm-up."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(warm + timed):
        if i == warm:
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        step()
        opt.step()
    return timed / (time.perf_counter() - t0)


def peak_rss_mib() -> float:
    """This process' peak resident memory so far: VmHWM of /proc/self/status, the high-water
    mark of this program's own memory (ru_maxrss would carry the parent's peak across fork
    and exec), else ru_maxrss (KiB on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """scorelab's quality checks from metrics.csv: step, training seconds, fd, fd_floor."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [
            {k: float(row[k]) for k in ("step", "seconds", "fd", "fd_floor")}
            for row in csv.DictReader(f)
            if row.get("fd")
        ]


def final_quality(run, sample, plan: dict, grid: Path, log) -> tuple[dict, float | None]:
    """Each final sampler: its samples (sample(sampler, steps)) timed and judged by
    evaluate_metrics on the scorelab run; the first sampler's grid; the classifier's test
    accuracy."""
    rows, accuracy, said = {}, None, set()

    def once(message: str) -> None:  # evaluate_metrics says the same for each sampler
        if message not in said:
            said.add(message)
            log(message)

    for i, (sampler, steps) in enumerate(final_samplers(plan["ddpm_steps"]).items()):
        log(f"sampling {plan['n']} images: {sampler}, {steps} steps")
        t0 = time.perf_counter()
        x = sample(sampler, steps)
        seconds = time.perf_counter() - t0
        if i == 0:
            save_image_grid(x[:100], grid, nrow=10)
        t0 = time.perf_counter()
        metrics = evaluate_metrics(run, "fd,kid,pr", plan["n"], samples=x, log=once)
        judged = time.perf_counter() - t0
        accuracy = metrics["fd"].get("classifier_test_accuracy", accuracy)
        rows[sampler] = {
            "steps": steps,
            "seconds": seconds,
            "metric_seconds": judged,
            **{k: {"value": r["value"], "floor": r["floor"]} for k, r in metrics.items()},
        }
        log(
            f"  {sampler}: {seconds:.1f}s, FD {metrics['fd']['value']:.4g} (metrics: {judged:.1f}s)"
        )
    return rows, accuracy


def side_scorelab(plan: dict) -> dict:
    """The scorelab side: train the preset, read its FD curve, sample and judge."""
    run_dir = Path(plan["run_dir"])
    cfg = RunConfig.from_dict(plan["config"])
    cache = Path(plan["cache"])
    if cache.is_file():  # the feature classifier of an earlier run in this --workdir
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cache, run_dir / FEATURES)
    print(f"scorelab: training for {plan['budget']:.0f}s", flush=True)
    result = train(cfg, run_dir, progress=False, pictures=False)
    peak = peak_rss_mib()
    if not cache.is_file() and (run_dir / FEATURES).is_file():
        shutil.copy2(run_dir / FEATURES, cache)
    run = load_run(run_dir)
    final, accuracy = final_quality(
        run,
        lambda sampler, steps: draw_samples(
            run,
            plan["n"],
            seed=plan["sample_seed"],
            sampler=sampler,
            steps=steps,
            batch=SAMPLE_BATCH,
        ),
        plan,
        Path(plan["grid"]),
        print,
    )
    return {
        "steps": result.step,
        "seconds": result.seconds,
        "peak_rss_mib": peak,
        "curve": read_curve(run_dir),
        "final": final,
        "classifier_accuracy": accuracy,
    }


def side_peer(plan: dict) -> dict:
    """The peer's side: train it on the scorelab run's images with the same recipe, checking
    its FD on the way with the scorelab run's probe; sample and judge."""
    run_dir = Path(plan["run_dir"])
    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    x = build_image_data(cfg).x
    shape = tuple(x.shape[1:])
    probe = FDProbe(cfg, run_dir, plan["eval_n"], log=print)
    torch.manual_seed(plan["seed"])
    net = peer_net(cfg)

    def check(ema) -> dict:
        samples = peer_sample(ema, probe.n, shape, EVAL_SAMPLER, EVAL_STEPS, seed=0)
        result = probe(samples)
        print(f"  peer check: FD {result['fd']:.4g} (floor {result['fd_floor']:.4g})", flush=True)
        return result

    augment = None
    if cfg.hflip:  # the preset's augmentation, as scorelab's loss applies it
        from scorelab.data.images import random_hflip

        augment = random_hflip
    print(f"diffusers: training for {plan['budget']:.0f}s", flush=True)
    trained = train_peer_loop(
        net, x, plan["budget"], cfg.train, seed=plan["seed"],
        lr_fn=lambda step, seconds: lr_at(step, cfg.train, seconds), augment=augment,
        evaluate=check, eval_seconds=plan["eval_seconds"],
    )  # fmt: skip
    peak = peak_rss_mib()
    del x
    run = load_run(run_dir)  # the data, held-out split and classifier of the judgement
    ema = trained.ema.eval()
    final, accuracy = final_quality(
        run,
        lambda sampler, steps: peer_sample(
            ema, plan["n"], shape, sampler, steps, seed=plan["sample_seed"], batch=SAMPLE_BATCH
        ),
        plan,
        Path(plan["grid"]),
        print,
    )
    curve = [
        {"step": s, "seconds": sec, "fd": r["fd"], "fd_floor": r["fd_floor"]}
        for s, sec, r in trained.checks
    ]
    return {
        "steps": trained.steps,
        "seconds": trained.seconds,
        "peak_rss_mib": peak,
        "curve": curve,
        "final": final,
        "classifier_accuracy": accuracy,
    }


def check_interval(curve: list[dict], budget: float) -> float:
    """The mean training seconds between the checks of a curve, its last check (at the end
    of the budget) left out; the budget when there is no other."""
    regular = curve[:-1]
    return regular[-1]["seconds"] / len(regular) if regular else budget


def time_to(curve: list[dict], target: float) -> float | None:
    """The training seconds of the first check at or below target FD (None: never)."""
    return next((p["seconds"] for p in curve if p["fd"] <= target), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--budget", type=float, default=FULL_BUDGET, help="training seconds per model"
    )
    parser.add_argument("--n", type=int, default=2000, help="final samples per sampler")
    parser.add_argument("--ddpm-steps", type=int, default=250, help="ancestral DDPM's steps")
    parser.add_argument("--eval-n", type=int, default=500, help="samples of each FD check")
    parser.add_argument(
        "--evals", type=int, default=10, help="FD checks over the budget (besides the last)"
    )
    parser.add_argument(
        "--eval-seconds",
        type=float,
        default=None,
        help="training seconds between FD checks: scorelab's eval_every is the steps it "
        "trains in that time (estimated beforehand), the peer checks at this interval "
        "(default: --budget / --evals for scorelab, and for the peer the interval scorelab "
        "achieved)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of both trainings")
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "fashion.md",
        help="the report (the plot and sample grids go beside it)",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the runs go (default: a temp dir)"
    )
    parser.add_argument("--side", choices=("scorelab", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--plan", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.side:  # a child: one side of the race, its results as JSON beside its plan
        plan = json.loads(args.plan.read_text())
        result = (side_scorelab if args.side == "scorelab" else side_peer)(plan)
        Path(plan["result"]).write_text(json.dumps(result, indent=1))
        return 0

    eval_seconds = args.eval_seconds or args.budget / max(args.evals, 1)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="scorelab-fashion-"))
    race = work / datetime.datetime.now().strftime("race-%Y%m%d-%H%M%S")
    race.mkdir(parents=True)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"runs in {race}", flush=True)

    # the machine's matmul rate; scorelab's config resolved against the data; both models'
    # FLOPs per training step; a rough steps/s of scorelab's that sets its eval_every
    peak_gflops = matmul_gflops()
    print(f"fp32 matmul, 2048x2048, {THREADS} threads: {peak_gflops:.1f} GFLOP/s", flush=True)
    probe_cfg = resolve(scorelab_config(args.budget, 1, args.eval_n, args.seed), log=print)
    image_set = build_image_data(probe_cfg)
    data_note = image_set.note
    model, step = scorelab_step(probe_cfg, image_set.x)
    ours_flops = flops_of(step)
    rate = steps_per_second(model, step, probe_cfg.train.lr)
    ours_params = count_params(model)
    torch.manual_seed(args.seed)
    net = peer_net(probe_cfg)
    theirs_params = count_params(net)
    theirs_flops = flops_of(peer_step(net, image_set.x, probe_cfg.train.batch_size))
    del model, net, image_set
    if abs(theirs_params / ours_params - 1) > PARAM_TOLERANCE:
        raise SystemExit(
            f"the peer has {theirs_params:,} parameters, scorelab's U-Net {ours_params:,}: "
            f"more than {PARAM_TOLERANCE:.0%} apart"
        )
    cfg = scorelab_config(args.budget, max(1, round(rate * eval_seconds)), args.eval_n, args.seed)
    print(
        f"scorelab ~{rate:.2f} steps/s: a check every {cfg.train.eval_every} steps (about "
        f"{eval_seconds:.0f}s)",
        flush=True,
    )

    plan = {
        "budget": args.budget, "n": args.n, "ddpm_steps": args.ddpm_steps,
        "eval_n": args.eval_n, "seed": args.seed, "sample_seed": 1000 + args.seed,
        "run_dir": str(race / "scorelab"), "cache": str(work / FEATURES),
        "config": cfg.to_dict(),
    }  # fmt: skip
    results = {}
    for side, grid in (
        ("scorelab", out.with_name("fashion_samples.png")),
        ("peer", out.with_name("fashion_samples_diffusers.png")),
    ):
        if side == "peer" and args.eval_seconds is None:
            # the peer checks at scorelab's achieved cadence, not at the estimate's
            eval_seconds = check_interval(results["scorelab"]["curve"], args.budget)
            print(f"the peer checks every {eval_seconds:.1f}s, as scorelab did", flush=True)
        side_plan = {
            **plan, "eval_seconds": eval_seconds, "grid": str(grid),
            "result": str(race / f"{side}.json"),
        }  # fmt: skip
        path = race / f"{side}.plan.json"
        path.write_text(json.dumps(side_plan, indent=1))
        subprocess.run([sys.executable, __file__, "--side", side, "--plan", str(path)], check=True)
        results[side] = json.loads(Path(side_plan["result"]).read_text())
    # the rate again on the quiet machine: the best of both (another process slows either)
    peak_gflops = max(peak_gflops, matmul_gflops())

    stored = RunConfig.from_dict(json.loads((race / "scorelab" / "config.json").read_text()))
    models = {
        "scorelab": {"params": ours_params, "flops": ours_flops, **results["scorelab"]},
        "peer": {"params": theirs_params, "flops": theirs_flops, **results["peer"]},
    }
    plot_curves(models, out.with_name("fashion_fd.png"), args.eval_n)
    preset_note = preset_overrides()[1]
    text = report(args, stored, data_note, preset_note, models, peak_gflops, eval_seconds)
    out.write_text(text)
    print(text)
    print(f"runs kept in {race}", flush=True)
    return 0


def plot_curves(models: dict, path: Path, eval_n: int) -> None:
    """FD against training seconds, both models, the floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = {"scorelab": "scorelab U-Net", "peer": "diffusers UNet2DModel"}
    for key, color in (("scorelab", "C0"), ("peer", "C1")):
        curve = models[key]["curve"]
        ax.plot(
            [p["seconds"] for p in curve], [p["fd"] for p in curve], "o-", color=color,
            label=names[key], markersize=4,
        )  # fmt: skip
    floor = models["scorelab"]["curve"][-1]["fd_floor"] if models["scorelab"]["curve"] else None
    if floor is not None:
        ax.axhline(floor, color="0.4", linestyle="--", label=f"floor (data vs data, n={eval_n})")
    ax.set_yscale("log")
    ax.set_xlabel("training seconds (quality checks excluded)")
    ax.set_ylabel(f"FD, {eval_n} EMA samples, DPM-Solver++ 20 steps")
    ax.set_title("Fashion-MNIST: FD over training time, 2 CPU threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def speed_settings(tr) -> str:
    """scorelab's CPU speed settings that the peer's loop does not have, as a clause."""
    on = [f"precision {tr.precision}"] if tr.precision != "fp32" else []
    on += [name for name in ("compile", "channels_last") if getattr(tr, name)]
    return f"; scorelab only: {', '.join(on)}" if on else ""


def report(
    args, cfg: RunConfig, data_note: str, preset_note: str, models: dict, peak: float,
    eval_seconds: float,
) -> str:  # fmt: skip
    import diffusers

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tr, m = cfg.train, cfg.model
    ours, theirs = models["scorelab"], models["peer"]
    accuracy = ours["classifier_accuracy"]
    race = (
        f"**Budget: {args.budget:.0f} s of training per model**"
        if args.budget >= FULL_BUDGET
        else f"**A shorter race: {args.budget:.0f} s of training per model** (the benchmark "
        f"is stated for {FULL_BUDGET} s)"
    )
    names = {
        "scorelab": "scorelab U-Net",
        "peer": f"diffusers {diffusers.__version__} UNet2DModel",
    }
    lines = [
        "# Fashion-MNIST on a CPU budget: scorelab vs diffusers",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, {THREADS} threads, Python "
        f"{platform.python_version()}.",
        f"Data: {data_note}. {race}, one model after the other, each in its own process.",
        f"Recipe ({preset_note}, on the image defaults): U-Net channels {m.channels}, "
        f"mult {list(m.channel_mult)}, {m.res_blocks} res block(s) per level, attention at "
        f"{list(m.attn_resolutions) or 'none'} (and the middle), dropout {m.dropout}; "
        f"{cfg.objective} objective, {cfg.schedule.name} schedule, T = {cfg.schedule.T}; "
        f"batch {tr.batch_size}, Adam lr {tr.lr}, warm-up {tr.warmup}, cosine decay over the "
        f"budget, clip {tr.grad_clip}, EMA {tr.ema_decay}"
        + (", random horizontal flips" if cfg.hflip else "")
        + speed_settings(tr)
        + f". The peer (UNet2DModel, the same layout, {peer_groups(cfg)} GroupNorm groups; "
        "DDPMScheduler linear T = 1000, eps) trains with the same numbers in its own loop.",
        f"Quality: the features of a classifier trained on 10,000 training images (test "
        f"accuracy {accuracy:.3f} on the 10,000-image test split, which is also the floor's "
        "held-out set).",
        "",
        "## Training",
        "",
        "| model | params | steps | train s | steps/s | GFLOP/step | GFLOP/s | of matmul "
        "peak | peak RSS (MiB) | FD at the end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("scorelab", "peer"):
        r = models[key]
        rate = r["steps"] / r["seconds"]
        achieved = r["flops"] * rate / 1e9
        end_fd = f"{r['curve'][-1]['fd']:.3f}" if r["curve"] else ""
        lines.append(
            f"| {names[key]} | {r['params']:,} | {r['steps']} | {r['seconds']:.0f} | "
            f"{rate:.2f} | {r['flops'] / 1e9:.2f} | {achieved:.1f} | {achieved / peak:.0%} | "
            f"{r['peak_rss_mib']:.0f} | {end_fd} |"
        )
    lines += [
        "",
        f"Matmul peak: {peak:.1f} GFLOP/s (fp32 2048 x 2048, {THREADS} threads, best of 5). "
        "FLOPs per step: FlopCounterMode over one forward and backward pass of a batch "
        "(matmuls, convolutions, attention; the optimizer not counted). Peak RSS: the "
        "high-water mark (VmHWM) of the model's own process up to the end of training (data, "
        "model, optimizer, quality checks and the feature probe included).",
        "",
        "## Time to quality",
        "",
    ]
    target = theirs["curve"][-1]["fd"] if theirs["curve"] else math.nan
    reached = time_to(ours["curve"], target)
    if reached is None:
        lines.append(
            f"scorelab's FD curve does not reach the peer's end-of-budget FD {target:.3f} "
            f"within its {args.budget:.0f} s (its last check: {ours['curve'][-1]['fd']:.3f})."
        )
    else:
        lines.append(
            f"scorelab's FD curve first reaches the peer's end-of-budget FD ({target:.3f}) at "
            f"**{reached:.0f} s** of training, {reached / args.budget:.2f} of the budget "
            "(the first check at or below it; checks every "
            f"{tr.eval_every} steps)."
        )
    back = time_to(theirs["curve"], ours["curve"][-1]["fd"]) if ours["curve"] else None
    lines.append(
        "The peer's curve reaches scorelab's end-of-budget FD "
        + (f"at {back:.0f} s." if back is not None else "not within its budget.")
    )
    lines += [
        "",
        f"Checks: FD of {args.eval_n} EMA samples (DPM-Solver++, 20 steps) against the "
        f"10,000 reference images; scorelab every {tr.eval_every} steps (train.eval_every), "
        f"the peer every {eval_seconds:.0f} s of training, both at the end; their time is "
        "not training time. Curves: fashion_fd.png.",
        "",
        "| model | checks: training s (FD) |",
        "|---|---|",
    ]
    for key in ("scorelab", "peer"):
        points = ", ".join(f"{p['seconds']:.0f} ({p['fd']:.2f})" for p in models[key]["curve"])
        lines.append(f"| {names[key]} | {points} |")
    lines += [
        "",
        f"## Final quality ({args.n} EMA samples per sampler)",
        "",
        "Each metric next to its floor (the test split against the same reference, up to "
        f"{args.n} images).",
        "",
        "| model | sampler | steps | sampling s | ms / image / step | FD (floor) | KID (floor) "
        "| precision (floor) | recall (floor) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key in ("scorelab", "peer"):
        for sampler, q in models[key]["final"].items():
            per = q["seconds"] / (args.n * q["steps"]) * 1e3

            def cell(k: str, digits: int, q=q) -> str:
                return f"{q[k]['value']:.{digits}f} ({q[k]['floor']:.{digits}f})"

            lines.append(
                f"| {names[key]} | {sampler} | {q['steps']} | {q['seconds']:.0f} | {per:.2f} | "
                f"{cell('fd', 3)} | {cell('kid', 4)} | {cell('precision', 3)} | "
                f"{cell('recall', 3)} |"
            )
    lines += [
        "",
        "Samplers: scorelab's own (ddpm ancestral respaced, ddim, dpm-solver++); the peer's "
        "diffusers DDPMScheduler (set_timesteps), DDIMScheduler and "
        f"DPMSolverMultistepScheduler, from its EMA weights; batches of {SAMPLE_BATCH}. Grids "
        "(ancestral DDPM, "
        f"{args.ddpm_steps} steps): fashion_samples.png (scorelab), "
        "fashion_samples_diffusers.png (the peer).",
        "Timings from one 2-core machine: differences under ~15% are within run-to-run noise.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
