"""Pictures of image samples with Pillow alone: grids (PNG), the trajectory as a GIF and a strip.

Images come as (B, C, H, W) in [-1, 1]; small ones are enlarged with nearest-neighbour
resampling (an 8x8 digit becomes 32x32 pixels) so the pixels stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scorelab.data.images import to_uint8
from scorelab.files import atomic_path


def _zoom(size: int) -> int:
    return max(1, 64 // size) if size < 64 else 1


def grid_array(x: Tensor, nrow: int | None = None, pad: int | None = None, zoom: int | None = None):
    """A uint8 (H', W', C) picture of the images in rows of nrow, separated by pad white
    pixels (default: half a zoomed pixel, at least 2, so that digits that fill their frame
    still read as separate images)."""
    images = to_uint8(x)  # (B, H, W, C)
    b, h, w, c = images.shape
    zoom = _zoom(max(h, w)) if zoom is None else zoom
    pad = max(2, zoom // 2) if pad is None else pad
    images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    h, w = h * zoom, w * zoom
    nrow = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / nrow)
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + q * (w + pad)
        out[top : top + h, left : left + w] = img
    return out


def _pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def _write(img, path: Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, **kwargs)
    return path


def save_image_grid(x: Tensor, path: Path, nrow: int | None = None) -> Path:
    """Images (B, C, H, W) in [-1, 1] as one PNG grid."""
    return _write(_pil(grid_array(x, nrow)), path)


def save_trajectory_gif(
    frames: Sequence[tuple[float, Tensor]],
    path: Path,
    *,
    n: int = 16,
    duration_ms: int = 60,
    max_frames: int = 100,
) -> Path:
    """The denoising trajectory of the first n images, one grid per recorded step, as a GIF.

    At most max_frames frames, evenly spaced and always ending on the samples.
    """
    picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round())
    chosen = [frames[int(i)][1] for i in picks]
    pictures = [_pil(grid_array(x[:n].clamp(-1, 1))).convert("P") for x in chosen]
    # hold the final samples on screen a while before the loop restarts
    durations = [duration_ms] * (len(pictures) - 1) + [1500]
    return _write(
        pictures[0], path, save_all=True, append_images=pictures[1:], duration=durations, loop=0
    )


def save_trajectory_strip(
    frames: Sequence[tuple[float, Tensor]], path: Path, *, n: int = 8, columns: int = 10
) -> Path:
    """A strip of frames: one row per image, columns from noise (left) to the sample (right)."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(columns, len(frames))).round())
    chosen = [frames[int(i)][1][:n] for i in picks]
    b = chosen[0].shape[0]
    # rows are images, columns are times: interleave so the grid reads row by row
    stacked = torch.stack(chosen, dim=1).reshape(b * len(chosen), *chosen[0].shape[1:])
    return _write(_pil(grid_array(stacked.clamp(-1, 1), nrow=len(chosen))), path)
