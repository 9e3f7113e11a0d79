"""Pictures a person would rather look at than read: scatter plots, trajectories, loss curves."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch import Tensor  # noqa: E402

from scorelab.files import atomic_path  # noqa: E402


def axis_limits(
    *xs: Tensor, margin: float = 0.1
) -> tuple[tuple[float, float], tuple[float, float]]:
    lo = min(float(x[:, :2].min()) for x in xs)
    hi = max(float(x[:, :2].max()) for x in xs)
    pad = (hi - lo) * margin
    return (lo - pad, hi + pad), (lo - pad, hi + pad)


def save_figure(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def scatter_vs_data(samples: Tensor, data: Tensor, path: Path, title: str = "") -> Path:
    """Data and samples side by side on the same fixed axes (first two coordinates)."""
    xlim, ylim = axis_limits(samples, data)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, name, color in (
        (axes[0], data, "data", "tab:blue"),
        (axes[1], samples, "samples", "tab:orange"),
    ):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, color=color, linewidths=0)
        ax.set_title(f"{name} (n={len(pts)})")
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_aspect("equal")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def trajectory_panels(frames: Sequence[tuple[float, Tensor]], path: Path) -> Path:
    """The denoising trajectory x_t at a few times, from noise (t = T) to data (t = 0)."""
    xlim, ylim = axis_limits(*(x for _, x in frames))
    fig, axes = plt.subplots(1, len(frames), figsize=(2.6 * len(frames), 2.8))
    for ax, (t, x) in zip(axes, frames, strict=True):
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, linewidths=0, color="tab:purple")
        ax.set_title(f"t = {t:g}")
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def loss_curve(metrics_csv: Path, path: Path) -> Path:
    """The training loss (and learning rate) against the step, from metrics.csv."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    losses = [float(r["loss"]) for r in rows]
    ax.plot(steps, losses, lw=1, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if losses and min(losses) > 0:  # ism and ssm losses are bounded below but may be negative
        ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(steps, [float(r["lr"]) for r in rows], lw=1, color="tab:gray", ls="--")
    ax2.set_ylabel("learning rate", color="tab:gray")
    ax.set_title("training loss")
    return save_figure(fig, path)


def fd_curve(metrics_csv: Path, path: Path) -> Path | None:
    """The quality checks of metrics.csv (--eval-every): FD against the step, its floor dashed,
    training seconds on a second axis; None (nothing written) when the run has none."""
    with open(metrics_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r.get("fd") or "").strip()]
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [float(r["fd"]) for r in rows], marker="o", ms=3, lw=1, label="FD")
    ax.plot(steps, [float(r["fd_floor"]) for r in rows], ls="--", color="tab:gray", lw=1,
            label="floor (data vs data, same n)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("Frechet distance")
    seconds = [float(r["seconds"]) for r in rows]
    if len(rows) > 1 and steps[-1] > steps[0]:
        rate = (seconds[-1] - seconds[0]) / (steps[-1] - steps[0])
        top = ax.secondary_xaxis("top", functions=(lambda s: s * rate, lambda m: m / rate))
        top.set_xlabel("training seconds (approx.)")
    ax.legend()
    ax.set_title("sample quality while training", pad=24 if len(rows) > 1 else 6)
    return save_figure(fig, path)


def vlb_breakdown(per_t_nats: Sequence[float], path: Path, title: str = "") -> Path:
    """The mean VLB term against t: L_{t-1} for t = 2..T on a log axis, L_0 and L_T noted."""
    T = len(per_t_nats) - 1
    l0, lT, kl = per_t_nats[0], per_t_nats[-1], per_t_nats[1:-1]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = list(range(2, T + 1))
    ax.plot(steps, [max(v, 1e-12) for v in kl], lw=1, label="$L_{t-1}$ (KL, nats)")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("mean term (nats, model units)")
    ax.set_title(title or "VLB per step")
    ax.legend(title=f"$L_0$ = {l0:.3g}, $L_T$ = {lT:.3g}", loc="upper right")
    return save_figure(fig, path)


def guidance_tradeoff(
    curves: dict[str, Sequence[tuple[float, float, float]]], path: Path, floor_fd: float = 0.0
) -> Path:
    """Accuracy and FD against the guidance scale, one line per kind of guidance.

    curves maps a name ("classifier s", "CFG w") to (scale, accuracy, fd) points.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    for name, points in curves.items():
        scales = [p[0] for p in points]
        left.plot(scales, [p[1] for p in points], "o-", label=name)
        right.plot(scales, [p[2] for p in points], "o-", label=name)
    left.axhline(0.95, color="grey", ls=":", lw=1, label="goal 0.95")
    left.set(xlabel="guidance scale", ylabel="clean-classifier accuracy", ylim=(0, 1.02))
    if floor_fd > 0:
        right.axhline(floor_fd, color="grey", ls=":", lw=1, label="held-out data (floor)")
    right.set(xlabel="guidance scale", ylabel="per-class FD", yscale="log")
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return save_figure(fig, path)
