"""Digits on a CPU budget: scorelab's U-Net against diffusers' UNet2DModel + DDPMScheduler.

What it measures
----------------
1. Speed options: training steps/s of scorelab's U-Net (batch 64, 8x8) with each CPU option
   alone: 1 vs 2 threads, channels_last, bf16 autocast, torch.compile.
2. A race at equal wall-clock budget (--budget seconds of training each, 2 threads):
   scorelab (`scorelab.runs.train`, the same code as `scorelab train --data digits`) and, as a
   peer in the same process, diffusers' UNet2DModel with DDPMScheduler.add_noise, the same
   parameter count (within 3%), batch, Adam learning rate, warm-up, clipping and EMA.
   scorelab's run is the digits preset (configs/digits.json, `scorelab train --config
   digits`: the U-Net, batch 64, lr 2e-3, warm-up 100, EMA 0.999) with the budget's steps and
   no checkpoints or sample grids during training; the peer takes the same numbers from it.
   Both learn eps with the DDPM linear schedule (T = 1000) and sample 1,000 images with DDIM,
   50 steps (scorelab's ddim; diffusers' DDIMScheduler).
3. Quality of each 1,000 samples against a reference half of the data, next to the floor
   (the other half of the data against the same reference): Frechet distance and KID in the
   features of a small classifier trained on the reference half (its accuracy on the other
   half is printed), precision/recall (k = 3) in the same features.

Run
---
    .venv/bin/python benchmarks/digits.py               # --budget 600: about 25 minutes
    .venv/bin/python benchmarks/digits.py --budget 90   # a shorter race (labelled as such)
    .venv/bin/python benchmarks/digits.py --speed-race 3  # steps/s only, interleaved repeats

--data picks another scorelab image source (default digits, which needs scikit-learn);
--stand-in renders a digits-like labelled set with Pillow's font when scikit-learn is absent
(labelled in the table). diffusers is optional (pip install -e '.[bench]'); without it only
scorelab runs. Writes --out (default benchmarks/results/digits.md) and prints it; the sample
grids go beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images import count_params, peer_sample, peer_unet, train_peer_loop  # noqa: E402
from _machine import cpu_model  # noqa: E402

from scorelab.config import RunConfig, apply_overrides  # noqa: E402
from scorelab.data import load_images  # noqa: E402
from scorelab.evaluation.features import classifier_features, load_or_train_classifier  # noqa: E402
from scorelab.evaluation.images import save_image_grid  # noqa: E402
from scorelab.evaluation.metrics import (  # noqa: E402
    frechet_distance,
    kernel_inception_distance,
    precision_recall,
)
from scorelab.presets import config_file_overrides  # noqa: E402
from scorelab.reports.metrics import draw_samples, split_reference  # noqa: E402
from scorelab.runs import load_run, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_SAMPLES, SAMPLE_STEPS = 1000, 50
# scorelab's samplers at the same 50 steps; the first is the peer's (DDIM) and makes the grid
SAMPLERS = ("ddim", "dpm-solver++", "ddpm")
# the recipe of both models: the digits preset (configs/digits.json). Its U-Net has one
# residual block per level and no attention: on 8x8 digits on 2 cores, steps/s buys more than
# width (attention at 4x4 cost ~40% of the step time in a probe)
PRESET = "digits"


def run_config(data: str, steps: int, **train: object) -> RunConfig:
    """The digits preset on data for steps steps, with no checkpoints or sample grids during
    training (the benchmark times the training loop); keyword arguments set more train.*
    settings. The schedule is pinned to the peer's (DDPMScheduler: linear, T = 1000)."""
    return apply_overrides(RunConfig(), {
        **config_file_overrides(PRESET),
        "data": data, "schedule.name": "linear", "schedule.T": 1000,
        "train.steps": steps, "train.ckpt_every": 10**9, "train.sample_every": 0,
        "train.log_every": 50, **{f"train.{k}": v for k, v in train.items()},
    })  # fmt: skip


# the peer's loop and the report take the same numbers from the preset
_RECIPE = run_config("digits", 1)
MODEL = _RECIPE.model
BATCH, LR, WARMUP = _RECIPE.train.batch_size, _RECIPE.train.lr, _RECIPE.train.warmup
EMA, CLIP = _RECIPE.train.ema_decay, _RECIPE.train.grad_clip


def stand_in_digits(folder: Path, n: int = 1797, seed: int = 0) -> Path:
    """Digits 0-9 drawn with Pillow's bitmap font, randomly shifted, rotated and scaled, then
    box-filtered to 8x8 and quantized to 17 grey levels like scikit-learn's; one sub-folder
    per class."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    font = ImageFont.load_default()
    for i in range(n):
        label = i % 10
        img = Image.new("L", (32, 32), 0)
        ImageDraw.Draw(img).text((10, 6), str(label), fill=255, font=font)
        img = img.resize((64, 64), Image.Resampling.BILINEAR)
        img = img.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BILINEAR)
        s = rng.uniform(0.85, 1.05)
        box = 64 * (1 - s) / 2 + rng.uniform(-3, 3, 2)
        img = img.crop((box[0] + 8, box[1] + 4, box[0] + 8 + 48 * s, box[1] + 4 + 48 * s))
        arr = np.asarray(img.resize((8, 8), Image.Resampling.BOX), dtype=np.float64)
        arr = np.round(arr / max(arr.max(), 1) * 16) * 255 / 16
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.astype(np.uint8)).save(folder / str(label) / f"{i}.png")
    return folder


def speed(x: torch.Tensor, steps: int, threads: int) -> list[tuple[str, float, str]]:
    """Steps/s of scorelab's Trainer with each CPU option alone, after a few warm-up steps."""
    from scorelab.build import build_model
    from scorelab.objectives import diffusion_loss
    from scorelab.processes import make_schedule
    from scorelab.training import Trainer

    schedule = make_schedule("linear", T=1000)
    model_cfg = dataclasses.replace(MODEL, in_channels=1, image_size=8)

    def loss_fn(net, x0, generator):
        return diffusion_loss(net, x0, schedule=schedule, generator=generator)

    options = [
        (f"{threads} thread(s), fp32 (the race's setting)", threads, {}),
        (f"{3 - threads} thread(s)", 3 - threads, {}),
        ("channels_last", threads, {"channels_last": True}),
        ("bf16 autocast", threads, {"precision": "bf16"}),
        ("torch.compile", threads, {"compile": True}),
    ]
    rows = []
    for name, n_threads, extra in options:
        torch.set_num_threads(n_threads)
        note = ""
        try:
            torch.manual_seed(0)
            cfg = run_config("-", 3, **extra).train
            with tempfile.TemporaryDirectory() as tmp:
                trainer = Trainer(build_model(model_cfg, 1000), loss_fn, x, cfg, Path(tmp), {},
                                  progress=False)  # fmt: skip
                t0 = time.perf_counter()
                trainer.fit()  # warm-up (and compilation)
                warm = time.perf_counter() - t0
                trainer.cfg = dataclasses.replace(cfg, steps=3 + steps)
                t0 = time.perf_counter()
                trainer.fit()
                rate = steps / (time.perf_counter() - t0)
            if extra.get("compile"):
                note = f"3 warm-up steps incl. compilation: {warm:.0f}s"
        except Exception as e:  # an option the machine lacks is a row, not a crash
            rate, note = float("nan"), f"failed: {type(e).__name__}: {str(e)[:80]}"
        rows.append((name, rate, note))
        print(f"  {name}: {rate:.2f} steps/s {note}", flush=True)
    torch.set_num_threads(threads)
    return rows


def train_peer(x: torch.Tensor, budget: float, seed: int = 0, max_steps: int | None = None):
    """diffusers' UNet2DModel + DDPMScheduler, the same recipe, for budget seconds (or
    max_steps steps)."""
    torch.manual_seed(seed)
    net = peer_unet(MODEL, 8)
    trained = train_peer_loop(net, x, budget, _RECIPE.train, seed=seed, max_steps=max_steps)

    def sample(n: int) -> torch.Tensor:
        return peer_sample(trained.ema, n, (1, 8, 8), "ddim", SAMPLE_STEPS)

    return trained.steps, trained.seconds, count_params(net), sample


def speed_race(x: torch.Tensor, data: str, repeats: int, steps: int) -> str:
    """Steps/s of the two training loops, interleaved (scorelab, peer, scorelab, ...), each
    timed over its loop alone; the medians and their ratio, as a markdown table."""
    ours, theirs = [], []
    for r in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            res = train(run_config(data, steps), Path(tmp) / "r", progress=False,
                        log=lambda m: None, pictures=False)  # fmt: skip
        ours.append(res.step / res.seconds)
        peer_steps, peer_s, _, _ = train_peer(x, math.inf, seed=r, max_steps=steps)
        theirs.append(peer_steps / peer_s)
        print(f"  repeat {r + 1}: scorelab {ours[-1]:.2f}, peer {theirs[-1]:.2f} steps/s",
              flush=True)  # fmt: skip
    a, b = float(np.median(ours)), float(np.median(theirs))
    return "\n".join([
        f"Interleaved speed race: {repeats} repeats of {steps} steps each, "
        f"{torch.get_num_threads()} threads; each loop timed alone (model build excluded).",
        "",
        "| loop | median steps/s | all repeats |",
        "|---|---:|---|",
        f"| scorelab Trainer | {a:.2f} | {', '.join(f'{v:.2f}' for v in ours)} |",
        f"| diffusers UNet2DModel loop | {b:.2f} | {', '.join(f'{v:.2f}' for v in theirs)} |",
        f"| ratio scorelab / peer | {a / b:.3f} | |",
        "",
    ])  # fmt: skip


def quality(features, reference, samples) -> dict[str, float]:
    f_s, f_r = features(samples), features(reference)
    kid, _ = kernel_inception_distance(f_s, f_r, generator=torch.Generator().manual_seed(0))
    p, r = precision_recall(f_r, f_s)
    return {"fd": frechet_distance(f_s, f_r), "kid": kid, "precision": p, "recall": r}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=600, help="training seconds per model")
    parser.add_argument("--data", default="digits", help="scorelab image source (default digits)")
    parser.add_argument("--stand-in", action="store_true", help="render stand-in digits")
    parser.add_argument("--speed-steps", type=int, default=30, help="timed steps per speed row")
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads of the race (default: 2)"
    )
    parser.add_argument(
        "--speed-race",
        type=int,
        default=0,
        metavar="R",
        help="only the interleaved steps/s race, R repeats of 10 x --speed-steps steps (writes "
        "digits_speed.md beside --out)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "digits.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.speed_race:
        steps = 10 * args.speed_steps
        text = speed_race(load_images(args.data).x, args.data, args.speed_race, steps)
        args.out.with_name("digits_speed.md").write_text("# Digits: training speed\n\n" + text)
        print(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="scorelab-digits-"))
    data, data_note = args.data, args.data
    if args.stand_in:
        data = str(stand_in_digits(work / "stand-in"))
        data_note = "stand-in digits rendered with Pillow's font (scikit-learn was not installed)"
    image_set = load_images(data)
    x, labels = image_set.x, image_set.labels
    print(f"data: {data_note}: {tuple(x.shape)}", flush=True)

    print("speed options:", flush=True)
    speed_rows = speed(x, args.speed_steps, args.threads)

    print(f"scorelab: training for {args.budget:.0f}s", flush=True)
    # the same clock as the peer's loop: stop when the budget is spent (--max-seconds), with
    # the cosine decay following the elapsed time
    result = train(
        run_config(data, 10**7, max_seconds=args.budget), work / "scorelab", progress=False,
        log=lambda m: None, pictures=False,
    )  # fmt: skip
    run = load_run(work / "scorelab")
    ours = {}
    for sampler in SAMPLERS:
        t0 = time.perf_counter()
        x_s = draw_samples(run, N_SAMPLES, seed=1, sampler=sampler, steps=SAMPLE_STEPS)
        ours[sampler] = (x_s, time.perf_counter() - t0)

    reference, held_out, ref_labels, held_labels = split_reference(x, labels)
    if ref_labels is None:
        raise SystemExit("the benchmark's features need labelled images (digits or class folders)")
    classifier, info = load_or_train_classifier(
        work, reference, ref_labels, held_out, held_labels, log=lambda m: None
    )
    features = classifier_features(classifier)
    rows = [
        ("data vs data (floor)", None, None, None, quality(features, reference, held_out)),
    ]
    params = sum(p.numel() for p in run.model.parameters())
    for sampler, (x_s, sample_s) in ours.items():
        rows.append(
            (
                f"scorelab U-Net, {sampler}",
                params,
                result.step / result.seconds,
                (result.step, result.seconds, sample_s),
                quality(features, reference, x_s),
            )
        )
    save_image_grid(ours["ddim"][0][:100], args.out.with_name("digits_samples.png"), nrow=10)

    try:
        import diffusers
    except ImportError:
        diffusers = None
        print("diffusers is not installed: the peer is skipped", flush=True)
    if diffusers is not None:
        print(f"diffusers: training for {args.budget:.0f}s", flush=True)
        peer_steps, peer_s, peer_params, peer_sample = train_peer(x, args.budget)
        t0 = time.perf_counter()
        theirs = peer_sample(N_SAMPLES)
        peer_sample_s = time.perf_counter() - t0
        rows.append(
            (
                f"diffusers {diffusers.__version__} UNet2DModel",
                peer_params,
                peer_steps / peer_s,
                (peer_steps, peer_s, peer_sample_s),
                quality(features, reference, theirs),
            )
        )
        save_image_grid(theirs[:100], args.out.with_name("digits_samples_diffusers.png"), nrow=10)

    text = report(args, data_note, speed_rows, rows, info, len(reference), len(held_out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def report(args, data_note, speed_rows, rows, info, n_ref, n_held) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Digits on a CPU budget: scorelab vs diffusers",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}.",
        f"Data: {data_note}. **Budget: {args.budget:.0f} s of training per model** "
        f"(the benchmark's goal is stated for 600 s). Batch {BATCH}, Adam lr {LR}, warm-up "
        f"{WARMUP}, EMA {EMA}, clip {CLIP}; DDPM linear schedule, T = 1000, eps objective; "
        f"{N_SAMPLES} samples each with DDIM, {SAMPLE_STEPS} steps (scorelab also with "
        f"DPM-Solver++ and ancestral DDPM at {SAMPLE_STEPS} steps). Each model trains until "
        "its budget is spent (scorelab: --max-seconds; the peer: the same clock in its loop).",
        f"Metrics against a reference half of the data ({n_ref} images) in the features of a "
        f"classifier trained on it (test accuracy on the other half: "
        f"{info['test_accuracy']:.3f}); the floor is the other half ({n_held}) against it.",
        "",
        "| model | params | steps/s | steps (s) | sampling s | FD | KID | precision | recall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, params, rate, run, q in rows:
        cells = [
            name,
            f"{params:,}" if params else "",
            f"{rate:.1f}" if rate else "",
            f"{run[0]} ({run[1]:.0f})" if run else "",
            f"{run[2]:.1f}" if run else "",
            f"{q['fd']:.3f}",
            f"{q['kid']:.4f}",
            f"{q['precision']:.3f}",
            f"{q['recall']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## CPU speed options (scorelab trainer, steps/s, each option alone)",
        "",
        "| option | steps/s | note |",
        "|---|---:|---|",
    ]
    lines += [f"| {n} | {r:.1f} | {note} |" for n, r, note in speed_rows]
    lines += [
        "",
        "Timings from one 2-core machine: differences under ~15% are within run-to-run noise.",
        "Samples: digits_samples.png (scorelab), digits_samples_diffusers.png (the peer).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
