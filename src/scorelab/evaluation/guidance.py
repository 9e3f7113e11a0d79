"""Guidance sweeps: samples of every class at several guidance scales, and their pictures.

Images: one PNG grid, a row per class, a block of n samples per scale (left to right in the
order given, separated by a white column). 2-D: a scatter panel per scale, coloured by the
requested class, over the data in grey. Every cell uses the same seed, so a row shows the same
noise pushed harder toward its class as the scale grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from scorelab.errors import ScorelabError


def guidance_sweep(
    run,
    classes: Sequence[int],
    scales: Sequence[float],
    n: int,
    *,
    classifier=None,
    seed: int = 0,
    **sample_options,
) -> list[tuple[float, Tensor, Tensor]]:
    """[(scale, samples (len(classes) n, *), labels)] in the data's units; scale is the
    classifier scale s with a classifier, else the classifier-free weight w (cfg)."""
    if not scales:
        raise ScorelabError("--scales must list at least one scale")
    y = torch.tensor(list(classes), dtype=torch.long).repeat_interleave(n)
    out = []
    for scale in scales:
        guidance = {"classifier": classifier, "scale": scale} if classifier else {"cfg": scale}
        x, _ = run.sample(len(y), seed=seed, y=y, **guidance, **sample_options)
        out.append((float(scale), x, y))
    return out


def save_sweep_images(sweep: list[tuple[float, Tensor, Tensor]], n: int, path: Path) -> Path:
    """Rows: classes; columns: n samples per scale, a white column between scales."""
    from scorelab.evaluation.images import save_image_grid

    k = len(sweep[0][2]) // n
    blocks = [x.reshape(k, n, *x.shape[1:]) for _, x, _ in sweep]
    spacer = torch.ones_like(blocks[0][:, :1])
    cells = []
    for i, block in enumerate(blocks):
        cells += [block] if i == 0 else [spacer, block]
    grid = torch.cat(cells, dim=1)  # (classes, columns, C, H, W)
    return save_image_grid(grid.reshape(-1, *grid.shape[2:]), path, nrow=grid.shape[1])


def save_sweep_scatter(
    sweep: list[tuple[float, Tensor, Tensor]], data: Tensor, path: Path, what: str
) -> Path:
    """A panel per scale: samples coloured by their requested class over the data (grey)."""
    from scorelab.evaluation.plots import axis_limits, plt, save_figure

    xlim, ylim = axis_limits(data, *(x for _, x, _ in sweep))
    fig, axes = plt.subplots(1, len(sweep), figsize=(3.2 * len(sweep), 3.4), squeeze=False)
    for ax, (scale, x, y) in zip(axes[0], sweep, strict=True):
        ax.scatter(data[:, 0], data[:, 1], s=1, color="0.8", linewidths=0)
        ax.scatter(x[:, 0], x[:, 1], s=2, c=y, cmap="tab10", vmin=0, vmax=9, linewidths=0)
        ax.set_title(f"{what} = {scale:g}")
        ax.set_xlim(xlim)
        ax.set_ylim(ylim)
        ax.set_aspect("equal")
    return save_figure(fig, path)


__all__ = ["guidance_sweep", "save_sweep_images", "save_sweep_scatter"]
