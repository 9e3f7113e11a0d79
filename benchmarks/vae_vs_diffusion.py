"""VAE vs diffusion at the same CPU budget, on the 2-D ring and on 8x8 digits (docs/theory.md §27).

What it measures
----------------
For each dataset, a diffusion model and a VAE each train until --budget seconds are spent
(--max-seconds; both through `scorelab.runs.train`, the code of `scorelab train`), then:
* samples: 1,000 each (diffusion: DDIM, 50 steps; VAE: decoder means at z ~ N(0, I)), with
  the sampling time and NFE;
* quality against a reference half of the data, next to the floor (the held-out half against
  the same reference): digits: FD and precision/recall (k = 3) in the features of a classifier
  trained on the reference half; ring: precision/recall and SWD in data space
  (scorelab.reports.metrics.evaluate_metrics);
* an NLL bound in data units on held-out data: diffusion: the VLB (all T = 1000 steps;
  digits: discretized decoder, a discrete probability); VAE: -ELBO and -IWAE_64 (digits:
  discretized-logistic decoder, a discrete probability);
* the VAE's aggregate-posterior diagnostic: KL(q(z) || p(z)) and MMD^2(q, p) with its floor;
* on digits, the `scorelab compare` report of the two runs (HTML and markdown, sample grids
  side by side) in benchmarks/results/vae_vs_diffusion_report/.
The aggregate-posterior argument (docs/theory.md §27) expects the VAE to have the lower
precision; the table says what happened.

Settings: each model starts from a preset (configs/): ring.json and vae-ring.json on the ring,
digits.json and vae-digits.json on the digits; SETUPS below names each and the few settings
the benchmark sets on top of it, and COMMON what all four share (the budget instead of a step
count, EMA 0.999, no checkpoints or sample grids during training).

Run
---
    .venv/bin/python benchmarks/vae_vs_diffusion.py --budget 60    # about 6 minutes on 2 cores

Digits need scikit-learn; without it a stand-in (digits drawn with Pillow's font, as in
benchmarks/digits.py) is used and labelled. Writes benchmarks/results/vae_vs_diffusion.md.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import cpu_model  # noqa: E402

from scorelab.config import RunConfig, apply_overrides  # noqa: E402
from scorelab.data import load_dataset, load_images  # noqa: E402
from scorelab.errors import DataError  # noqa: E402
from scorelab.evaluation.latent import prior_coverage  # noqa: E402
from scorelab.evaluation.nll import evaluate_nll  # noqa: E402
from scorelab.presets import config_file_overrides  # noqa: E402
from scorelab.reports.metrics import evaluate_metrics  # noqa: E402
from scorelab.runs import load_run, train  # noqa: E402
from scorelab.runs.vae import evaluate_vae_nll  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_SAMPLES, SAMPLE_STEPS, K = 1000, 50, 64
# what every model here gets on top of its preset: a step count no run reaches (the budget,
# --max-seconds, stops it), the same EMA decay for all four (the digits preset's 0.999; the
# ring presets leave the default, 0.995), no checkpoints or sample grids during training (the
# budget is training time), and the DDPM schedule pinned (linear, T = 1000)
COMMON = {
    "schedule.name": "linear", "schedule.T": 1000, "train.steps": 10**7,
    "train.ema_decay": 0.999, "train.ckpt_every": 10**9, "train.sample_every": 0,
    "train.log_every": 50,
}  # fmt: skip
SETUPS = {
    # dataset: {model: (preset, the benchmark's own settings on top of it and COMMON)}
    "ring": {
        # the ring preset: the default MLP, batch 512, lr 1e-2, warm-up 200
        "diffusion (MLP, eps, T=1000)": ("ring", {}),
        # the vae-ring preset (lr 3e-3; batch 512 and warm-up 200 by default) with a shallower
        # MLP than its default depth 3: depth 2, the VAE of the recorded results
        # (results/vae_vs_diffusion.md, 34,567 parameters); the latent size and decoder named,
        # as the label says (the preset leaves them to the data, which picks the same for
        # vectors: 2 and gaussian)
        "VAE (MLP, latent 2, Gaussian decoder)": (
            "vae-ring",
            {"model.depth": 2, "model.latent_dim": 2, "model.decoder": "gaussian"},
        ),
    },
    "digits": {
        # the digits preset: its U-Net, batch 64, lr 2e-3, warm-up 100, EMA 0.999
        "diffusion (U-Net, eps, T=1000)": ("digits", {}),
        # the vae-digits preset (conv, latent 16, logistic decoder, batch 64, lr 2e-3) with the
        # U-Net's warm-up, 100 (the preset leaves the default, 200), so that the two models on
        # the digits differ in the model only
        "VAE (conv, latent 16, logistic decoder)": ("vae-digits", {"train.warmup": 100}),
    },
}


def run_config(data: str, preset: str, settings: dict, budget: float) -> RunConfig:
    """preset on data with COMMON and the setup's own settings, until budget seconds are spent."""
    return apply_overrides(RunConfig(), {
        **config_file_overrides(preset), **COMMON, **settings,
        "data": data, "train.max_seconds": budget,
    })  # fmt: skip


def train_for(budget: float, work: Path, data: str, setup) -> tuple:
    """Train the model until budget seconds are spent (--max-seconds)."""
    quiet = {"progress": False, "log": lambda m: None, "pictures": False}
    result = train(run_config(data, *setup, budget), work / "run", **quiet)
    return load_run(work / "run"), result


def nll_rows(run, data: torch.Tensor) -> list[tuple[str, float, float]]:
    if run.config.model.name == "vae":
        reports = [
            evaluate_vae_nll(run, data, method="elbo", seed=1),
            evaluate_vae_nll(run, data, method="iwae", k=K, seed=1),
        ]
        names = ["-ELBO", f"-IWAE_{K}"]
    else:
        reports, names = [evaluate_nll(run, data, method="vlb", seed=1)], ["VLB"]
    return [(n, r.nll_nats, r.nll_bits_per_dim) for n, r in zip(names, reports, strict=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=60, help="training seconds per model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--n-nll", type=int, default=64, help="digits: images for the NLL")
    parser.add_argument("--out", type=Path, default=RESULTS / "vae_vs_diffusion.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="scorelab-vae-"))
    digits, digits_note = "digits", "scikit-learn digits (8x8, 17 levels)"
    try:
        load_images("digits")
    except DataError:
        from digits import stand_in_digits

        digits = str(stand_in_digits(work / "stand-in"))
        digits_note = "stand-in digits drawn with Pillow's font (scikit-learn was not installed)"
    tables = []
    for name, setups in SETUPS.items():
        data = digits if name == "digits" else name
        images = name == "digits"
        rows = []
        for label, setup in setups.items():
            print(f"{name}: {label}: training for {args.budget:.0f}s", flush=True)
            folder = work / name / label.split()[0]
            run, result = train_for(args.budget, folder, data, setup)
            t0 = time.perf_counter()
            x, nfe = [], 0
            for i in range(0, N_SAMPLES, 500):
                xi, res = run.sample(500, seed=i, sampler="ddim", steps=SAMPLE_STEPS)
                x.append(xi)
                nfe = res.nfe
            x = torch.cat(x)
            sample_s = time.perf_counter() - t0
            metrics = ("fd", "pr") if images else ("pr", "swd")
            q = evaluate_metrics(run, metrics, N_SAMPLES, samples=x, log=lambda m: None)
            held = (
                load_images(data).x[-args.n_nll :]
                if images
                else load_dataset("ring", 2000, seed=12345)
            )
            print(f"  {result.step} steps in {result.seconds:.0f}s; NLL", flush=True)
            nll = nll_rows(run, held)
            latent = None
            if run.config.model.name == "vae":
                mean, log_var = run.aggregate_posterior(0)
                latent = prior_coverage(mean, log_var, generator=torch.Generator().manual_seed(0))
            params = sum(p.numel() for p in run.model.parameters())
            rows.append((label, params, result, nfe, sample_s, q, nll, latent))
        tables.append((name, data, images, rows))
        if images:  # the side-by-side report of the two digits runs, pictures included
            from scorelab.reports.compare import compare_runs

            compare_runs(
                [work / name / label.split()[0] / "run" for label in setups],
                args.out.with_name("vae_vs_diffusion_report"),
                log=lambda m: None,
            )
    text = report(args, digits_note, tables)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def report(args, digits_note: str, tables) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# VAE vs diffusion at the same CPU budget",
        "",
        f"{now}; {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"Python {platform.python_version()}.",
        f"**Budget: {args.budget:.0f} s of training per model** (each stops when its "
        f"time is spent: --max-seconds). {N_SAMPLES} samples each: diffusion with DDIM, "
        f"{SAMPLE_STEPS} steps; "
        "VAE decoder means at z ~ N(0, I). Metrics against a reference half of the data; "
        "floor: the held-out half against the same reference. NLL bounds in data units on "
        f"held-out data (ring: 2,000 fresh points; digits: the last {args.n_nll} images, which "
        "both models also trained on): lower is better.",
        "",
    ]
    for name, _data, images, rows in tables:
        note = f" ({digits_note})" if images else " (8 Gaussians on a ring, 2-D)"
        lines += [f"## {name}{note}", ""]
        quality = ["FD", "precision", "recall"] if images else ["precision", "recall", "SWD"]
        keys = ["fd", "precision", "recall"] if images else ["precision", "recall", "swd"]
        header = ["model", "params", "steps (s)", "sampling s", "NFE", *quality]
        header += ["NLL bound: nats (bits/dim)"]
        lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
        floor = rows[0][5]
        lines.append(
            "| data vs data (floor) |  |  |  |  | "
            + " | ".join(f"{floor[k]['floor']:.3f}" for k in keys)
            + " |  |"
        )
        for label, params, result, nfe, sample_s, q, nll, _ in rows:
            bound = "; ".join(f"{n} {nats:.2f} ({bpd:.3f})" for n, nats, bpd in nll)
            cells = [
                label,
                f"{params:,}",
                f"{result.step} ({result.seconds:.0f})",
                f"{sample_s:.2f}",
                str(nfe),
                *[f"{q[k]['value']:.3f}" for k in keys],
                bound,
            ]
            lines.append("| " + " | ".join(cells) + " |")
        for label, *_, latent in rows:
            if latent is not None:
                lines += [
                    "",
                    f"{label}: aggregate posterior vs prior: KL(q(z) || p(z)) = "
                    f"{latent['kl']:.3f} nats, MMD^2(q, p) = {latent['mmd']:.4f} "
                    f"(p vs p floor {latent['mmd_floor']:.4f}).",
                ]
        lines.append("")
    lines += [
        "Reproduce: `make bench-vae` (or `.venv/bin/python benchmarks/vae_vs_diffusion.py "
        f"--budget {args.budget:.0f}`). A side-by-side report of any two runs with pictures: "
        "`scorelab compare RUN_A RUN_B --out report/`; the digits pair's report is in "
        "vae_vs_diffusion_report/ (index.html, report.md).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
