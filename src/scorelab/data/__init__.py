"""Data: built-in 2-D distributions, .npy arrays and images (digits, IDX files such as
Fashion-MNIST, folders, .npy); DATASETS names the built-in 2-D ones."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from scorelab.data.arrays import check_array, load_labels, load_npy
from scorelab.data.images import (
    IMAGE_DATASET_NAMES,
    IMAGE_DATASETS,
    ImageSet,
    is_image_source,
    load_images,
    load_test_split,
)
from scorelab.data.normalize import Normalizer
from scorelab.data.toy import TOY_DATASETS, TOY_LABELS
from scorelab.errors import DataError

DATASETS = dict(TOY_DATASETS)


def load_dataset(name: str, n: int = 20_000, *, seed: int = 0) -> Tensor:
    """A built-in dataset by name (n points drawn with seed) or a .npy file path: (N, d)."""
    if name in DATASETS:
        if n < 1:
            raise DataError(f"n must be positive, got {n}")
        return DATASETS[name](n, torch.Generator().manual_seed(seed)).float()
    if name.endswith(".npy") or Path(name).suffix:
        return load_npy(name)
    raise DataError(
        f"unknown dataset {name!r}; choose one of: {', '.join([*DATASETS, *IMAGE_DATASET_NAMES])}, "
        "a folder of images or a path to a .npy file"
    )


def load_dataset_labels(
    name: str, n: int = 20_000, *, seed: int = 0, labels: str | None = None
) -> Tensor | None:
    """The class labels (N,) of load_dataset(name, n, seed=seed): a labelled built-in (the
    ring's components), or the .npy file labels; None when the data carry none."""
    if labels is not None:
        return load_labels(labels, load_dataset(name, n, seed=seed).shape[0])
    if name in TOY_LABELS:
        return TOY_LABELS[name](n, torch.Generator().manual_seed(seed))
    return None


__all__ = [
    "DATASETS",
    "IMAGE_DATASETS",
    "IMAGE_DATASET_NAMES",
    "ImageSet",
    "Normalizer",
    "check_array",
    "is_image_source",
    "load_dataset",
    "load_dataset_labels",
    "load_labels",
    "load_images",
    "load_test_split",
    "load_npy",
]
