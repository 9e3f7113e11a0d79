"""Your diffusers checkpoint, sampled with scorelab: a DDPMPipeline on the 8x8 digits, sampled by
diffusers' schedulers and by scorelab's samplers (scorelab.load_diffusers) at the same NFE.

What it measures
----------------
1. A diffusers model: UNet2DModel in the digits preset's layout (configs/digits.json, the same
   peer as digits.py), trained by diffusers' own loop (DDPMScheduler.add_noise: linear betas,
   T = 1000, eps prediction) with the preset's recipe (batch, Adam learning rate and warm-up,
   gradient clipping, EMA) for --budget seconds on the digits less the --nll-n held out for
   the likelihood, and saved as a DDPMPipeline folder (DDPMScheduler, safetensors weights) in
   a temporary folder or --keep DIR. --pipeline DIR samples an existing folder instead (an
   8x8 one-channel model; its likelihood images are held out only if this script trained it).
2. --n samples at NFE 10, 20 and 50, each set from the same initial noise (in batches of
   --batch, batch i from the seed of its first sample's index, as _images.peer_sample and
   scorelab's draw_samples seed them):
   - by diffusers' schedulers on the UNet as diffusers loads the folder
     (DDPMPipeline.from_pretrained), each on the folder's betas and model settings and
     otherwise at its own defaults, set_timesteps(K): DDIMScheduler (DDIM: Song, Meng & Ermon
     2021), DPMSolverMultistepScheduler 2M and 3M (solver_order=3; DPM-Solver++: Lu et al.
     2022), UniPCMultistepScheduler (UniPC: Zhao et al. 2023), EulerDiscreteScheduler (Euler
     in sigma: Karras et al. 2022) and DDPMScheduler at 50 (ancestral: Ho et al. 2020);
   - by scorelab's samplers on the same folder opened by scorelab.load_diffusers: ddim,
     dpm-solver++ of order 2 and 3, heun-edm (Heun on Karras et al. 2022's grid, Algorithm 2:
     2 NFE a step and 1 on the last, so NFE 9, 19 and 49 in the columns 10, 20 and 50) and
     ddpm at 50.
   Final samples are clamped to [-1, 1]; the NFE reported is the count of network calls.
3. Quality: the Frechet distance of each set in the learned features of the project's small
   digits classifier, as digits.py: trained on the reference half of the data (its accuracy
   on the other half is printed), FD against that half; the floor is the held-out half against
   the same reference at the same n (at most the half's 898 images). For each NFE the best
   diffusers FD, the best scorelab FD and their ratio.
4. Likelihood: the ODE NLL (probability-flow ODE, Song et al. 2021: dequantized 8-bit data,
   Hutchinson trace with one probe, Dormand-Prince at rtol = atol = --nll-tol) of --nll-n
   held-out digits in bits/dim with its standard error and NFE, by scorelab on the folder:
   the same number as `scorelab eval DIR --nll ode --divergence hutchinson --data HELDOUT.npy
   --seed 1` (HELDOUT.npy: those images as uint8). diffusers offers no likelihood.
5. A same-noise check that scorelab reads the folder exactly: scorelab's ddim on diffusers'
   DDIM grid (spacing="leading") against DDIMScheduler from the same noise, the largest
   pixel difference, with diffusers' default step (the raw eps after clipping x0) and with
   use_clipped_model_output=True (eps re-derived from the clipped x0, as scorelab does).

Run
---
    .venv/bin/python benchmarks/interop.py                   # --budget 300: about 15 minutes
    .venv/bin/python benchmarks/interop.py --keep runs/ddpm-digits     # keep the pipeline
    .venv/bin/python benchmarks/interop.py --pipeline runs/ddpm-digits # sample it again
    .venv/bin/python benchmarks/interop.py --budget 15 --n 100 --nll-n 8 --out /tmp/s.md
                                          # a smoke run, about a minute (labelled as such)

Needs the diffusers extra (pip install -e '.[diffusers]') and scikit-learn. Torch threads:
--threads (default $OMP_NUM_THREADS, else 2). Writes --out (default
benchmarks/results/interop.md) and prints it.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _images import count_params, peer_sample, peer_scheduler, peer_unet, train_peer_loop  # noqa: E402
from _machine import cpu_model  # noqa: E402
from digits import MODEL, run_config  # noqa: E402

import scorelab  # noqa: E402
from scorelab.data import load_images  # noqa: E402
from scorelab.evaluation.features import classifier_features, load_or_train_classifier  # noqa: E402
from scorelab.evaluation.metrics import frechet_distance  # noqa: E402
from scorelab.evaluation.nll import evaluate_nll  # noqa: E402
from scorelab.reports.metrics import split_reference  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NFES = (10, 20, 50)
SEED = 0  # the noise of every set: batch i from SEED + i (i: the index of its first sample)
NLL_SEED = 1  # the dequantization and probe noise of the likelihood (scorelab eval's default)
SHAPE = (1, 8, 8)
# (row name, diffusers sampler (_images.PEER_SAMPLERS), scheduler options, NFEs)
DIFFUSERS_SETS = (
    ("DDIMScheduler", "ddim", {}, NFES),
    ("DPMSolverMultistepScheduler 2M", "dpm-solver++", {}, NFES),
    ("DPMSolverMultistepScheduler 3M", "dpm-solver++", {"solver_order": 3}, NFES),
    ("UniPCMultistepScheduler", "unipc", {}, NFES),
    ("EulerDiscreteScheduler", "euler", {}, NFES),
    ("DDPMScheduler", "ddpm", {}, (50,)),
)
# (row name, scorelab sampler, run.sample options, NFEs)
SCORELAB_SETS = (
    ("ddim", "ddim", {}, NFES),
    ("dpm-solver++, order 2", "dpm-solver++", {"order": 2}, NFES),
    ("dpm-solver++, order 3", "dpm-solver++", {"order": 3}, NFES),
    # the grid uniform in t that diffusers' multistep solvers use (--spacing uniform)
    (
        "dpm-solver++, order 2, uniform grid",
        "dpm-solver++",
        {"order": 2, "spacing": "uniform"},
        NFES,
    ),
    (
        "dpm-solver++, order 3, uniform grid",
        "dpm-solver++",
        {"order": 3, "spacing": "uniform"},
        NFES,
    ),
    ("unipc, order 2", "unipc", {"order": 2}, NFES),
    ("unipc, order 2, uniform grid", "unipc", {"order": 2, "spacing": "uniform"}, NFES),
    ("heun-edm", "heun-edm", {}, NFES),
    ("ddpm", "ddpm", {}, (50,)),
)
# scorelab samplers that call the network twice a step and once on the last
TWO_CALL = ("heun-edm", "ode-heun")


def scorelab_steps(sampler: str, nfe: int) -> int:
    """The steps that give at most nfe network calls."""
    return (nfe + 1) // 2 if sampler in TWO_CALL else nfe


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] as 8-bit levels 0..255 (float): the grid the dequantized ODE
    likelihood's bins are on (the digits' 17 levels, k * 255 / 16 rounded)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round()


@dataclass
class SampleSet:
    side: str  # "diffusers" or "scorelab"
    name: str
    nfe_column: int
    nfe: float  # network calls per sample trajectory
    seconds: float
    x: torch.Tensor = field(repr=False)
    fd: float = float("nan")


class CountCalls:
    """A network that counts its calls (diffusers' NFE)."""

    def __init__(self, net: torch.nn.Module) -> None:
        self.net, self.calls = net, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.net(*args, **kwargs)


def train_pipeline(x: torch.Tensor, budget: float, folder: Path) -> dict:
    """Train the digits peer by diffusers' loop for budget seconds and save it as a
    DDPMPipeline folder; what the report says about the training."""
    from diffusers import DDPMPipeline, DDPMScheduler

    recipe = run_config("digits", 1).train
    torch.manual_seed(SEED)
    net = peer_unet(MODEL, SHAPE[-1], in_channels=SHAPE[0])
    trained = train_peer_loop(net, x, budget, recipe, seed=SEED)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    pipe = DDPMPipeline(unet=trained.ema.eval(), scheduler=scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    return {
        "steps": trained.steps,
        "seconds": trained.seconds,
        "params": count_params(net),
        "recipe": recipe,
        "n_train": x.shape[0],
    }


@torch.no_grad()
def diffusers_set(unet, config, name, sampler, options, nfe, n, batch) -> SampleSet:
    counted = CountCalls(unet)
    t0 = time.perf_counter()
    x = peer_sample(counted, n, SHAPE, sampler, nfe, seed=SEED, batch=batch, config=config,
                    **options)  # fmt: skip
    seconds = time.perf_counter() - t0
    batches = -(-n // batch)
    return SampleSet("diffusers", name, nfe, counted.calls / batches, seconds, x)


@torch.no_grad()
def scorelab_set(run, name, sampler, options, nfe, n, batch) -> SampleSet:
    parts, calls = [], []
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        x, result = run.sample(min(batch, n - i), seed=SEED + i, sampler=sampler,
                               steps=scorelab_steps(sampler, nfe), **options)  # fmt: skip
        parts.append(x.clamp(-1, 1))
        calls.append(result.nfe)
    seconds = time.perf_counter() - t0
    return SampleSet("scorelab", name, nfe, float(np.mean(calls)), seconds, torch.cat(parts))


@torch.no_grad()
def same_noise_check(run, unet, config, steps: int, n: int) -> tuple[float, float]:
    """The largest |difference| between scorelab's ddim on diffusers' DDIM grid and
    DDIMScheduler from the same noise: (diffusers' default step, use_clipped_model_output)."""
    ours, _ = run.sample(n, seed=SEED, sampler="ddim", steps=steps, spacing="leading")
    out = []
    for clipped in (False, True):
        scheduler = peer_scheduler("ddim", steps, config=config)
        xt = torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(SEED))
        for t in scheduler.timesteps:
            eps = unet(xt, t).sample
            xt = scheduler.step(eps, t, xt, use_clipped_model_output=clipped).prev_sample
        out.append(float((xt.clamp(-1, 1) - ours.clamp(-1, 1)).abs().max()))
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300, help="training seconds (default 300)")
    parser.add_argument("--n", type=int, default=1000, help="samples per set (default 1000)")
    parser.add_argument("--batch", type=int, default=250, help="samples per batch (default 250)")
    parser.add_argument(
        "--nll-n", type=int, default=200, help="held-out digits of the ODE NLL (default 200)"
    )
    parser.add_argument(
        "--nll-tol",
        type=float,
        default=1e-5,
        help="the ODE solver's rtol = atol (default 1e-5, scorelab eval's; larger only for a "
        "smoke run)",
    )
    parser.add_argument(
        "--pipeline", type=Path, default=None, help="an existing DDPMPipeline folder: no training"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="save the trained pipeline here (default: a temp dir)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("OMP_NUM_THREADS") or 2),
        help="torch threads (default: $OMP_NUM_THREADS, else 2)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "interop.md")
    args = parser.parse_args()
    if args.pipeline is not None and args.keep is not None:
        parser.error("--keep saves a pipeline this script trains; --pipeline trains none")
    if args.n < 2 or args.batch < 1 or not 1 <= args.nll_n <= 898:
        parser.error("--n must be >= 2, --batch >= 1 and --nll-n in 1..898")
    torch.set_num_threads(args.threads)
    try:
        import diffusers
        from diffusers import DDPMPipeline
    except ImportError:
        raise SystemExit(
            "this benchmark needs diffusers: .venv/bin/pip install -e '.[diffusers]'"
        ) from None

    images = load_images("digits")
    reference, held_out, ref_labels, held_labels = split_reference(images.x, images.labels)
    # the likelihood's images: the first --nll-n of the held-out half (on the 8-bit grid,
    # written to HELDOUT.npy below), left out of training
    train_x = torch.cat([reference, held_out[args.nll_n :]])
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scorelab-interop-") as tmp:
        work = Path(tmp)
        training = None
        if args.pipeline is not None:
            folder = args.pipeline
        else:
            folder = args.keep or work / "pipeline"
            print(
                f"diffusers: training for {args.budget:.0f}s on {len(train_x)} digits", flush=True
            )
            training = train_pipeline(train_x, args.budget, folder)
            print(f"  {training['steps']} steps; saved {folder}", flush=True)
        heldout_npy = (
            args.keep.with_name(args.keep.name + "-heldout.npy") if args.keep else work / "h.npy"
        )
        np.save(heldout_npy, to_8bit(held_out[: args.nll_n, 0]).to(torch.uint8).numpy())
        # read back as `scorelab eval --data HELDOUT.npy` reads it: the same numbers
        nll_x = load_images(str(heldout_npy)).x

        pipe = DDPMPipeline.from_pretrained(folder, use_safetensors=True)
        unet, config = pipe.unet.eval(), dict(pipe.scheduler.config)
        run = scorelab.load_diffusers(folder)
        if tuple(run.shape) != SHAPE:
            raise SystemExit(f"{folder}: a {tuple(run.shape)} model; this benchmark needs {SHAPE}")

        sets: list[SampleSet] = []
        for name, sampler, options, nfes in DIFFUSERS_SETS:
            for nfe in nfes:
                sets.append(diffusers_set(unet, config, name, sampler, options, nfe, args.n,
                                          args.batch))  # fmt: skip
                print(f"  diffusers {name} @ {nfe}: {sets[-1].seconds:.1f}s", flush=True)
        for name, sampler, options, nfes in SCORELAB_SETS:
            for nfe in nfes:
                sets.append(scorelab_set(run, name, sampler, options, nfe, args.n, args.batch))
                print(f"  scorelab {name} @ {nfe}: {sets[-1].seconds:.1f}s", flush=True)
        check_n = min(args.n, args.batch)
        checks = {k: same_noise_check(run, unet, config, k, check_n) for k in NFES}

        classifier, info = load_or_train_classifier(
            work, reference, ref_labels, held_out, held_labels, log=lambda m: None
        )
        features = classifier_features(classifier)
        f_ref = features(reference)
        n_floor = min(args.n, len(held_out))
        floor = frechet_distance(features(held_out[:n_floor]), f_ref)
        for s in sets:
            s.fd = frechet_distance(features(s.x), f_ref)

        print(f"ODE NLL of {args.nll_n} held-out digits", flush=True)
        nll = evaluate_nll(run, nll_x, method="ode", seed=NLL_SEED, divergence="hutchinson",
                           rtol=args.nll_tol, atol=args.nll_tol)  # fmt: skip

    context = {
        "diffusers": diffusers.__version__,
        "training": training,
        "folder": args.pipeline or args.keep,
        "heldout_npy": heldout_npy if args.keep else None,
        "info": info,
        "n_ref": len(reference),
        "n_floor": n_floor,
        "total_s": time.perf_counter() - began,
    }
    text = report(args, context, sets, floor, checks, nll)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def _cell(s: SampleSet | None, value: str) -> str:
    """value, with the set's real NFE where it is not its column's; "-" for no set."""
    if s is None:
        return "-"
    return value if s.nfe == s.nfe_column else f"{value} (NFE {s.nfe:g})"


def report(args, ctx, sets, floor, checks, nll) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tr, threads = ctx["training"], torch.get_num_threads()
    command = shlex.join([".venv/bin/python", "benchmarks/interop.py", *sys.argv[1:]])
    smoke = args.n < 1000 or args.nll_n < 200 or args.nll_tol > 1e-5
    smoke = smoke or (tr is not None and args.budget < 300)
    lines = [
        "# Your diffusers checkpoint, sampled with scorelab (digits 8x8)",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, diffusers {ctx['diffusers']}, "
        f"{threads} thread{'s' if threads > 1 else ''}, Python {platform.python_version()}; "
        f"{ctx['total_s']:.0f} s in all. Command: `{command}`."
        + (" **A smoke run: shorter than the benchmark's settings.**" if smoke else ""),
        "",
    ]
    if tr is not None:
        r = tr["recipe"]
        lines.append(
            f"Model: diffusers UNet2DModel ({tr['params']:,} parameters, the digits preset's "
            f"layout) trained by diffusers' own loop (DDPMScheduler.add_noise, linear betas, "
            f"T = 1000, eps prediction) for **{args.budget:.0f} s** ({tr['steps']} steps, "
            f"{tr['steps'] / tr['seconds']:.1f} steps/s) on {tr['n_train']} digits (all but "
            f"the {args.nll_n} likelihood images); batch {r.batch_size}, Adam lr {r.lr}, "
            f"warm-up {r.warmup}, clip {r.grad_clip}, EMA {r.ema_decay}; saved with "
            "DDPMPipeline.save_pretrained (DDPMScheduler, safetensors)"
            + (f" in {ctx['folder']}." if ctx["folder"] else " in a temporary folder.")
        )
    else:
        lines.append(
            f"Model: the existing DDPMPipeline folder {ctx['folder']} (not trained here; the "
            "likelihood images are held out only if this script trained it)."
        )
    lines += [
        "",
        f"Samples: {args.n} per set in batches of {args.batch}, every set from the same "
        "initial noise. diffusers: its schedulers on the UNet of DDPMPipeline.from_pretrained, "
        "each on the folder's betas and model settings and otherwise its own defaults, "
        "set_timesteps(K), final samples clamped to [-1, 1]. scorelab: "
        "`run = scorelab.load_diffusers(DIR)`, `run.sample(n, seed=..., sampler=S, steps=K)` "
        "(the samplers of `scorelab sample DIR --sampler S --steps K`; heun-edm with "
        "steps = (K + 1) / 2). FD in the features of the digits classifier trained on the "
        f"reference half ({ctx['n_ref']} images; test accuracy on the other half "
        f"{ctx['info']['test_accuracy']:.3f}); the floor is {ctx['n_floor']} held-out images "
        "against the same reference. NFE: network calls per sample.",
        "",
        "| side | sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
        "|---|---|" + "---:|" * len(NFES),
        "| data | held-out half vs reference (floor) | "
        + " | ".join(f"{floor:.3f}" for _ in NFES)
        + " |",
    ]
    table = {(s.side, s.name, s.nfe_column): s for s in sets}
    rows = [(n, "diffusers") for n, *_ in DIFFUSERS_SETS]
    rows += [(n, "scorelab") for n, *_ in SCORELAB_SETS]
    for name, side in rows:
        got = [table.get((side, name, k)) for k in NFES]
        cells = [_cell(s, f"{s.fd:.3f}" if s else "") for s in got]
        lines.append(f"| {side} | {name} | " + " | ".join(cells) + " |")
    best = {}
    for side in ("diffusers", "scorelab"):
        best[side] = [min((s for s in sets if s.side == side and s.nfe_column == k),
                          key=lambda s: s.fd) for k in NFES]  # fmt: skip
        cells = [f"{s.fd:.3f} ({s.name})" for s in best[side]]
        lines.append(f"| **best** | {side} | " + " | ".join(cells) + " |")
    ratio = [b.fd / a.fd for a, b in zip(best["diffusers"], best["scorelab"], strict=True)]
    lines.append(
        "| **ratio** | best scorelab / best diffusers | "
        + " | ".join(f"{v:.3f}" for v in ratio)
        + " |"
    )
    lines += [
        "",
        "Sampling seconds per set:",
        "",
        "| side | sampler | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
        "|---|---|" + "---:|" * len(NFES),
    ]
    for name, side in rows:
        got = [table.get((side, name, k)) for k in NFES]
        cells = [f"{s.seconds:.1f}" if s else "-" for s in got]
        lines.append(f"| {side} | {name} | " + " | ".join(cells) + " |")
    settings = nll.settings
    cli = (
        f"scorelab eval DIR --nll ode --divergence hutchinson --data HELDOUT.npy --seed "
        f"{NLL_SEED} --rtol {args.nll_tol:g} --atol {args.nll_tol:g} --format json"
    )
    where = (
        f" (HELDOUT.npy: {ctx['heldout_npy']})"
        if ctx["heldout_npy"]
        else " (HELDOUT.npy: these images as uint8 (N, 8, 8); --keep DIR writes DIR-heldout.npy)"
    )
    lines += [
        "",
        f"**Likelihood** (scorelab only: diffusers offers no likelihood): the ODE NLL of "
        f"{nll.n} held-out digits, {nll.nll_bits_per_dim:.4f} ± {nll.stderr_bits_per_dim:.4f} "
        f"bits/dim ({nll.nll_nats:.2f} ± {nll.stderr_nats:.2f} nats per image), NFE "
        f"{nll.nfe}, {nll.seconds:.0f} s; dequantized 8-bit data, Hutchinson trace "
        f"({settings.get('probes', 1)} probe), Dormand-Prince rtol = atol = "
        f"{args.nll_tol:g}, t0 = {settings['t0']:g}. The same number from the command line: "
        f"`{cli}`{where}.",
        "",
        "Same-noise check: scorelab's ddim on diffusers' DDIM grid (spacing=\"leading\") "
        f"against DDIMScheduler from the same noise, {min(args.n, args.batch)} samples, the "
        "largest pixel difference. scorelab re-derives eps from the clipped x0 (the folder's "
        "clip_sample); diffusers' DDIM step moves along the network's own eps unless "
        "use_clipped_model_output=True.",
        "",
        "| DDIMScheduler step | " + " | ".join(f"NFE {k}" for k in NFES) + " |",
        "|---|" + "---:|" * len(NFES),
        "| default | " + " | ".join(f"{checks[k][0]:.2e}" for k in NFES) + " |",
        "| use_clipped_model_output=True | "
        + " | ".join(f"{checks[k][1]:.2e}" for k in NFES)
        + " |",
        "",
        "Note: both sides sample the same network from the same noise; only the solver "
        "differs. The grids differ too: diffusers' DDIM and DDPM use 'leading' spacing, its "
        "DPM-Solver, UniPC and Euler 'linspace' (their defaults); scorelab's ddim and ddpm a "
        "uniform grid from T, dpm-solver++ a grid uniform in log-SNR (its default) or, in the "
        "rows so named, uniform in t (`--spacing uniform`, diffusers' linspace), heun-edm "
        "Karras' sigma grid (rho = 7).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
