"""Guidance on digits: classifier guidance (scale s) and classifier-free guidance (weight w).

What it measures
----------------
One class-conditional U-Net trained with label dropout (--cond-drop 0.1) and one noise-aware
classifier p_phi(y | x_t, t) (the U-Net encoder of `scorelab train-classifier`), each for a
share of --budget seconds of CPU training on the reference half of the data. The U-Net is the
digits-conditional preset (configs/digits-conditional.json: the digits U-Net, batch 64,
lr 2e-3, warm-up 100, EMA 0.999, --cond-drop 0.1); the classifier takes its encoder and
training settings from the digits preset (configs/digits.json); both stop by the clock, with
no checkpoints or sample grids on the way. Then, for each
classifier scale s (guiding the model's unconditional, null-class eps) and each CFG weight w,
--per-class samples of every class (DDIM, 50 steps), scored by a separately trained clean
classifier (evaluation/features.py, the one FD uses; its held-out accuracy is printed):

- accuracy: the fraction of samples the clean classifier assigns to the requested class;
- FD / precision / recall (k = 3) of each class's samples against that class's reference
  data, in the clean classifier's features, averaged over the classes;
- the unguided row (s = 0): the unconditional model's samples against all reference data, the
  FD that guided samples should stay within 2x of (the benchmark's goal), and the floor: the
  held-out half of each class against its reference half.

Run
---
    .venv/bin/python benchmarks/guidance.py                     # --budget 900, 100 per class
    .venv/bin/python benchmarks/guidance.py --budget 120 --per-class 30   # a quick look

Writes benchmarks/results/guidance.md (and guidance.png, accuracy and FD against the scale)
and prints the table. Needs scikit-learn for the digits.
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
from scorelab.data import load_images  # noqa: E402
from scorelab.evaluation.features import classifier_features  # noqa: E402
from scorelab.evaluation.features import train_classifier as train_clean  # noqa: E402
from scorelab.evaluation.images import save_image_grid  # noqa: E402
from scorelab.evaluation.metrics import frechet_distance, precision_recall  # noqa: E402
from scorelab.evaluation.plots import guidance_tradeoff  # noqa: E402
from scorelab.presets import config_file_overrides  # noqa: E402
from scorelab.reports.metrics import split_reference  # noqa: E402
from scorelab.runs import load_run, train  # noqa: E402
from scorelab.runs.classifier import ClassifierConfig, load_classifier, train_classifier  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SAMPLE_STEPS = 50


def run_config(preset: str, data: str, labels: str, seconds: float) -> RunConfig:
    """A preset on data and labels, trained until seconds are spent (--max-seconds), with no
    checkpoints or sample grids on the way; the schedule pinned to DDPM's (linear, T = 1000)."""
    return apply_overrides(RunConfig(), {
        **config_file_overrides(preset),
        "data": data, "labels": labels, "schedule.name": "linear", "schedule.T": 1000,
        "train.steps": 10**7, "train.max_seconds": seconds, "train.ckpt_every": 10**9,
        "train.sample_every": 0, "train.log_every": 50,
    })  # fmt: skip


def configs(data: str, labels: str, budget: float) -> tuple[RunConfig, ClassifierConfig]:
    """The conditional U-Net (digits-conditional preset, 70% of the budget) and the noise-aware
    classifier (the digits preset's U-Net as its encoder and its training settings, 30%)."""
    cfg = run_config("digits-conditional", data, labels, 0.7 * budget)
    base = run_config("digits", data, labels, 0.3 * budget)
    cls_cfg = ClassifierConfig(
        data=data, labels=labels, model=base.model, schedule=base.schedule, train=base.train
    )
    return cfg, cls_cfg


def score(features, clean, x: torch.Tensor, y: torch.Tensor, ref, ref_y) -> dict[str, float]:
    """Accuracy of the clean classifier, and per-class FD / precision / recall, averaged."""
    with torch.no_grad():
        accuracy = float((clean(x).argmax(1) == y).float().mean())
    fds, ps, rs = [], [], []
    for k in y.unique().tolist():
        f_s, f_r = features(x[y == k]), features(ref[ref_y == k])
        fds.append(frechet_distance(f_s, f_r))
        p, r = precision_recall(f_r, f_s)
        ps.append(p)
        rs.append(r)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    # pooled: all classes' samples against all reference data, the unguided row's footing
    pooled = frechet_distance(features(x), features(ref))
    return {"accuracy": accuracy, "fd": mean(fds), "precision": mean(ps), "recall": mean(rs),
            "fd_pooled": pooled}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=900, help="training seconds in all")
    parser.add_argument("--per-class", type=int, default=100, help="samples per class")
    parser.add_argument("--scales", default="0,1,3,10", help="classifier scales s")
    parser.add_argument("--weights", default="0,1,3", help="CFG weights w")
    parser.add_argument(
        "--clean-epochs", type=int, default=60, help="epochs of the clean classifier (default 60)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "guidance.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="scorelab-guidance-"))
    images = load_images("digits")
    ref, held, ref_y, held_y = split_reference(images.x, images.labels)
    # the diffusion model and the noise-aware classifier learn from the reference half only
    import numpy as np

    np.save(work / "ref.npy", ((ref[:, 0].clamp(-1, 1) + 1) * 127.5).round().byte().numpy())
    np.save(work / "ref_labels.npy", ref_y.numpy())
    data = str(work / "ref.npy")
    print(f"digits: {len(ref)} reference, {len(held)} held out; budget {args.budget:.0f}s")

    t0 = time.perf_counter()
    clean, clean_accuracy = train_clean(ref, ref_y, held, held_y, epochs=args.clean_epochs)
    features = classifier_features(clean)
    print(f"clean classifier: held-out accuracy {clean_accuracy:.3f}", flush=True)

    # the U-Net gets 70% of the budget and the noise-aware classifier 30%, each stopped by
    # the clock (--max-seconds)
    cfg, cls_cfg = configs(data, str(work / "ref_labels.npy"), args.budget)
    result = train(cfg, work / "run", progress=False, log=lambda m: None, pictures=False)
    steps = result.step
    print(f"conditional U-Net: {steps} steps in {result.seconds:.0f}s", flush=True)
    cls_result, acc_rows = train_classifier(cls_cfg, work / "cls", progress=False, log=print)
    cls_steps = cls_result.step
    print(f"noise-aware classifier: {cls_steps} steps in {cls_result.seconds:.0f}s", flush=True)
    run, noisy = load_run(work / "run"), load_classifier(work / "cls")

    n, classes = args.per_class, int(ref_y.max()) + 1
    y = torch.arange(classes).repeat_interleave(n)
    opts = {"sampler": "ddim", "steps": SAMPLE_STEPS, "seed": 1}
    rows, curves = [], {"classifier s": [], "CFG w": []}
    x_uncond, _ = run.sample(len(y), **opts)
    with torch.no_grad():
        spread = torch.bincount(clean(x_uncond).argmax(1), minlength=classes).float()
    unguided_fd = frechet_distance(features(x_uncond), features(ref))
    floor = score(features, clean, held, held_y, ref, ref_y)
    rows.append(("floor: held-out data", floor, 0.0))
    for s in [float(v) for v in args.scales.split(",")]:
        t = time.perf_counter()
        x, _ = run.sample(len(y), y=y, classifier=noisy, scale=s, **opts)
        rows.append((f"classifier s = {s:g}", score(features, clean, x, y, ref, ref_y),
                     time.perf_counter() - t))  # fmt: skip
        curves["classifier s"].append((s, rows[-1][1]["accuracy"], rows[-1][1]["fd"]))
        print(rows[-1], flush=True)
    weights = [float(v) for v in args.weights.split(",")]
    for w in weights:
        t = time.perf_counter()
        x, _ = run.sample(len(y), y=y, cfg=w, **opts)
        label = "conditional (CFG w = 0)" if w == 0 else f"CFG w = {w:g}"
        rows.append((label, score(features, clean, x, y, ref, ref_y), time.perf_counter() - t))
        curves["CFG w"].append((w, rows[-1][1]["accuracy"], rows[-1][1]["fd"]))
        if w == max(weights):
            save_image_grid(x.view(classes, n, *x.shape[1:])[:, :10].flatten(0, 1),
                            args.out.with_name("guidance_samples.png"), nrow=10)  # fmt: skip
        print(rows[-1], flush=True)
    total = time.perf_counter() - t0
    guidance_tradeoff(curves, args.out.with_suffix(".png"), floor_fd=floor["fd"])

    lines = [
        "# Guidance on digits: classifier guidance and classifier-free guidance",
        "",
        f"{datetime.date.today()}, {cpu_model()}, {args.threads} threads, torch "
        f"{torch.__version__}, Python {platform.python_version()}; `benchmarks/guidance.py "
        f"--budget {args.budget:g} --per-class {n} --clean-epochs {args.clean_epochs}` "
        f"({total:.0f}s in all).",
        "",
        f"**Budget**: {args.budget:g}s of CPU training in all (conditional U-Net {steps} steps "
        f"with --cond-drop 0.1, 70% of the budget; noise-aware classifier {cls_steps} steps, "
        f"30%), {n} samples per class (DDIM, {SAMPLE_STEPS} steps); the full run is "
        "--per-class 1000. Plot: guidance.png; CFG samples at the largest w (a row per "
        "class): guidance_samples.png.",
        "",
        f"Clean classifier (features for FD/PR, judge of accuracy): held-out accuracy "
        f"{clean_accuracy:.3f}. Noise-aware classifier accuracy: "
        + ", ".join(f"t {r['t_lo']}-{r['t_hi']}: {r['accuracy']:.2f}" for r in acc_rows[::3])
        + ".",
        "",
        "| guidance | accuracy | FD (per class) | FD (pooled) | precision | recall | sampling s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r, secs in rows:
        lines.append(
            f"| {name} | {r['accuracy']:.3f} | {r['fd']:.2f} | {r['fd_pooled']:.2f} | "
            f"{r['precision']:.3f} | {r['recall']:.3f} | {secs:.0f} |"
        )
    best = [(name, r) for name, r, _ in rows[1:] if r["accuracy"] >= 0.95]
    lines += [
        "",
        f"Unguided (s = 0 model, unconditional samples against all reference data): FD "
        f"{unguided_fd:.2f}; its classes as the clean classifier sees them: "
        f"{', '.join(str(int(c)) for c in spread)}.",
        "",
        "Per-class FD compares ~n samples with ~90 reference images of one class, so small-n "
        "bias dominates it (see the floor row); the pooled FD puts all classes' samples "
        f"({len(y)}) against all reference data, the footing of the unguided FD, and is what "
        "the goal compares.",
        "",
        "Goal (>= 95% accuracy at some scale with FD within 2x of unguided): "
        + (
            "met by " + ", ".join(f"{name} (pooled FD {r['fd_pooled']:.2f})" for name, r in best
                                  if r["fd_pooled"] <= 2 * unguided_fd)
            if any(r["fd_pooled"] <= 2 * unguided_fd for _, r in best)
            else "not met at this budget"
        )
        + ".",
        "",
    ]  # fmt: skip
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
