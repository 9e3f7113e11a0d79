"""Loading and checking user arrays: a .npy file of shape (N, d), finite, non-empty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scorelab.errors import DataError


def check_array(x: np.ndarray | Tensor, source: str = "data") -> Tensor:
    """Return x as a float32 (N, d) tensor, or raise DataError saying what is wrong."""
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    ):
        raise DataError(f"{source}: expected a numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"{source}: expected a 2-D array (N, d), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{source}: the array is empty (shape {arr.shape})")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = int(bad.any(axis=1).sum())
        raise DataError(f"{source}: {rows} of {arr.shape[0]} rows hold NaN or infinite values")
    return torch.from_numpy(arr)


def load_npy(path: str | Path) -> Tensor:
    """Read an (N, d) numeric .npy file without unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DataError(f"{path}: not a plain numeric .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read as .npy ({e})") from None
    return check_array(arr, str(path))


def load_labels(path: str | Path, n: int) -> Tensor:
    """Read integer class labels (N,) from a .npy file beside N data rows: int64, >= 0."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a plain .npy array ({e})") from None
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        raise DataError(
            f"{path}: labels must be a 1-D integer array, got dtype {arr.dtype} shape {arr.shape}"
        )
    if len(arr) != n:
        raise DataError(f"{path}: {len(arr)} labels for {n} data rows")
    if len(arr) and arr.min() < 0:
        raise DataError(f"{path}: labels must be >= 0, found {int(arr.min())}")
    return torch.from_numpy(arr.astype(np.int64))
