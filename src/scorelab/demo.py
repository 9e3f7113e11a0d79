"""The one-command demo: train on the ring of Gaussians, sample, draw, and measure.

The ring is an exact Gaussian mixture (scorelab.oracle), so the demo can print, beside the
sliced Wasserstein distance of the samples to held-out data, the floor a perfect model reaches
(the same distance between two independent data sets) and the true log-density of the samples.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from scorelab.config import RunConfig, apply_overrides
from scorelab.data import load_dataset
from scorelab.errors import ScorelabError
from scorelab.evaluation import loss_curve, scatter_vs_data, sliced_wasserstein, trajectory_panels
from scorelab.files import atomic_write_bytes
from scorelab.oracle import ring_mixture
from scorelab.runs import CONFIG, load_run, train

FRAME_TIMES = (1000, 400, 200, 100, 50, 0)


def run_demo(
    out: Path, *, steps: int = 3000, n: int = 4000, seed: int = 0, progress: bool = True
) -> dict:
    out = Path(out)
    run_dir = out / "run"
    if run_dir.exists():
        if not (run_dir / CONFIG).is_file():
            raise ScorelabError(f"{run_dir} exists and is not a scorelab run; choose another --out")
        shutil.rmtree(run_dir)  # the demo's own previous run
    cfg = apply_overrides(RunConfig(), {"data": "ring", "train.steps": steps, "train.seed": seed})
    t0 = time.perf_counter()
    result = train(cfg, run_dir, progress=progress)
    train_seconds = time.perf_counter() - t0

    run = load_run(run_dir)
    t0 = time.perf_counter()
    samples, sampled = run.sample(n, seed=seed + 100, record_trajectory=True)
    sample_seconds = time.perf_counter() - t0
    held_out = load_dataset("ring", n, seed=seed + 1)
    other = load_dataset("ring", n, seed=seed + 2)
    sw = sliced_wasserstein(samples, held_out)
    floor = sliced_wasserstein(other, held_out)
    mixture = ring_mixture()
    metrics = {
        "steps": result.step,
        "final_loss": result.final_loss,
        "train_seconds": round(train_seconds, 2),
        "sample_seconds": round(sample_seconds, 2),
        "nfe": sampled.nfe,
        "n": n,
        "sliced_wasserstein": sw,
        "sliced_wasserstein_floor": floor,
        "ratio_to_floor": sw / floor,
        "mean_true_log_density_samples": float(mixture.log_prob(samples.double()).mean()),
        "mean_true_log_density_data": float(mixture.log_prob(held_out.double()).mean()),
    }

    scatter_vs_data(
        samples,
        held_out,
        out / "samples.png",
        f"ring: DDPM, {sampled.nfe} steps; SW {sw:.3f} (floor {floor:.3f})",
    )
    traj = sampled.trajectory or []
    frames = [min(traj, key=lambda f, t=t: abs(f[0] - t)) for t in FRAME_TIMES]
    decoded = [(t, run.normalizer.decode(x)) for t, x in frames]
    trajectory_panels(decoded, out / "trajectory.png")
    loss_curve(run_dir / "metrics.csv", out / "loss.png")
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2).encode())

    print("\n| metric | value |\n|---|---|")
    print(f"| training | {result.step} steps in {train_seconds:.1f} s |")
    print(f"| sampling | {n} samples, {sampled.nfe} NFE in {sample_seconds:.1f} s |")
    print(f"| sliced Wasserstein to held-out data | {sw:.4f} |")
    print(f"| floor (data vs data, n={n}) | {floor:.4f} |")
    print(f"| ratio to floor | {sw / floor:.2f} |")
    print(
        f"| mean true log-density: samples / data | "
        f"{metrics['mean_true_log_density_samples']:.3f} / "
        f"{metrics['mean_true_log_density_data']:.3f} |"
    )
    print(f"\npictures: {out / 'samples.png'}, {out / 'trajectory.png'}, {out / 'loss.png'}")
    return metrics
