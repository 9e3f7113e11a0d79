"""IDX files, the format of MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017).

An IDX file is a big-endian header and raw values: the magic number (two zero bytes, a type
code, 0x08 for unsigned bytes, and the rank), one uint32 per dimension, then the values in C
order; gzip-compressed or not (told by the gzip magic bytes, never by the suffix). Images are
rank 3 (N, H, W), labels rank 1 (N,), beside the images under the standard names
(X-images-idx3-ubyte -> X-labels-idx1-ubyte). A named data set in this format is found in
--data-dir, else in $SCORELAB_DATA_DIR, else where its Debian package installs it.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from scorelab.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UBYTE = 0x08  # the type code of unsigned bytes, the only one scorelab reads
IMAGES_MAGIC = 0x00000803  # uint8, rank 3: images (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, rank 1: labels (N,)
DATA_DIR_ENV = "SCORELAB_DATA_DIR"
# the standard names: images -> labels, for the releases' "-idx3-" and MNIST's ".idx3-"
_NAMING = (
    ("-images-idx3-ubyte", "-labels-idx1-ubyte"),
    ("-images.idx3-ubyte", "-labels.idx1-ubyte"),
)
_IDX_IMAGES_NAME = re.compile(r"idx3-ubyte(\.gz)?$")
SPLITS = {"train": "train", "test": "t10k"}  # a split -> its files' prefix
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)  # fmt: skip
# deflate compresses at most about 1032:1, so a gzip file of n bytes holds at most this
# many times n: a header that claims more is refused before any allocation
_DEFLATE_MAX_RATIO = 1032


@dataclass(frozen=True)
class IdxDataset:
    """A named data set of IDX files: the train and t10k (test) splits, images and labels."""

    name: str
    package: str  # the Debian package that installs it
    system_dir: Path
    classes: tuple[str, ...]

    def install_hint(self) -> str:
        files = ", ".join(
            f"{prefix}-{kind}.gz"
            for prefix in SPLITS.values()
            for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
        )
        return (
            f"install it with `sudo apt-get install {self.package}`, or put the four IDX files "
            f"of its release ({files}) in a folder given by --data-dir"
        )


IDX_DATASETS = {
    "fashion-mnist": IdxDataset(
        "fashion-mnist",
        "dataset-fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
        FASHION_MNIST_CLASSES,
    )
}


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def _read_fully(f: BinaryIO, buffer: memoryview) -> int:
    """Fill buffer from f; the number of bytes read (less only at the end of the stream)."""
    got = 0
    while got < len(buffer):
        n = f.readinto(buffer[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _describe_magic(magic: int) -> str:
    if magic >> 16 != 0:
        return "not an IDX file"
    kind = {1: "labels", 3: "images"}.get(magic & 0xFF, f"rank {magic & 0xFF}")
    if (magic >> 8) & 0xFF != UBYTE:
        return f"an IDX file of type code 0x{(magic >> 8) & 0xFF:02x}, not unsigned bytes"
    return f"an IDX file of {kind}"


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file whose magic number must be `magic` (IMAGES_MAGIC or
    LABELS_MAGIC), read into one buffer; a truncated, overlong or foreign file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    rank = magic & 0xFF
    want = "uint8 images (N, H, W)" if magic == IMAGES_MAGIC else "uint8 labels (N,)"
    try:
        gz = _is_gzip(path)
        with path.open("rb") as raw:
            f: BinaryIO = gzip.GzipFile(fileobj=raw) if gz else raw  # type: ignore[assignment]
            head = f.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: empty or truncated before the IDX header ends")
            found = int.from_bytes(head, "big")
            if found != magic:
                raise DataError(
                    f"{path}: {_describe_magic(found)} (magic 0x{found:08x}), expected {want} "
                    f"(magic 0x{magic:08x})"
                )
            dims_bytes = f.read(4 * rank)
            if len(dims_bytes) < 4 * rank:
                raise DataError(f"{path}: truncated inside the IDX header")
            dims = tuple(int.from_bytes(dims_bytes[4 * i : 4 * i + 4], "big") for i in range(rank))
            size, header = math.prod(dims), 4 + 4 * rank
            if not gz and path.stat().st_size != header + size:
                have = path.stat().st_size
                raise DataError(_size_error(path, dims, header + size, have))
            if gz and header + size > _DEFLATE_MAX_RATIO * path.stat().st_size:
                raise DataError(
                    f"{path}: the header gives {_shape(dims)}, more than this gzip file can hold"
                )
            arr = np.empty(size, dtype=np.uint8)
            got = _read_fully(f, memoryview(arr))
            if got < size:
                raise DataError(_size_error(path, dims, header + size, header + got))
            if f.read(1):
                raise DataError(f"{path}: data continue past the {_shape(dims)} its header gives")
    except EOFError:
        raise DataError(f"{path}: the gzip stream ends early (a truncated file)") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return arr.reshape(dims)


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims)) + " bytes"


def _size_error(path: Path, dims: tuple[int, ...], want: int, have: int) -> str:
    what = "truncated" if have < want else "longer than its header says"
    return f"{path}: {what}: the header gives {_shape(dims)} ({want} in all), the data hold {have}"


def read_idx_images(path: str | Path) -> Tensor:
    """The images of an IDX file as one uint8 tensor (N, 1, H, W)."""
    arr = read_idx(path, IMAGES_MAGIC)
    if arr.size == 0:
        raise DataError(f"{path}: holds no images (shape {arr.shape})")
    return torch.from_numpy(arr)[:, None]


def read_idx_labels(path: str | Path) -> Tensor:
    """The labels of an IDX file as int64 (N,)."""
    return torch.from_numpy(read_idx(path, LABELS_MAGIC)).long()


def is_idx_images(path: Path) -> bool:
    """Whether path is a file named like IDX images (X-images-idx3-ubyte[.gz]) or starting
    with their magic number (read only to tell; reading it explains what is wrong)."""
    if not path.is_file():
        return False
    if _IDX_IMAGES_NAME.search(path.name):
        return True
    try:
        gz = _is_gzip(path)
        with path.open("rb") as raw:
            f = gzip.GzipFile(fileobj=raw) if gz else raw
            return int.from_bytes(f.read(4), "big") == IMAGES_MAGIC
    except (OSError, EOFError, zlib.error):
        return False


def _sibling(path: Path, stem: str) -> Path | None:
    """stem beside path, compressed like path if both exist."""
    gz = path.name.endswith(".gz")
    for name in (stem + ".gz", stem) if gz else (stem, stem + ".gz"):
        if (path.parent / name).is_file():
            return path.parent / name
    return None


def _base(path: Path) -> str:
    return path.name[:-3] if path.name.endswith(".gz") else path.name


def labels_path_for(images: Path) -> Path:
    """The labels file beside an IDX images file, by the standard naming."""
    base = _base(images)
    for old, new in _NAMING:
        if base.endswith(old):
            stem = base[: -len(old)] + new
            found = _sibling(images, stem)
            if found is None:
                raise DataError(f"{images}: no labels file beside it (looked for {stem}[.gz])")
            return found
    raise DataError(
        f"{images}: cannot tell which file holds its labels: name the pair "
        "X-images-idx3-ubyte and X-labels-idx1-ubyte (.gz or not)"
    )


def official_test_file(images: Path) -> Path | None:
    """The t10k images beside a train-images IDX file (the official test split), or None."""
    base = _base(images)
    train, test = SPLITS["train"], SPLITS["test"]
    if not base.startswith((train + "-", train + ".")):
        return None
    return _sibling(images, test + base[len(train) :])


def _images_in(folder: Path, split: str) -> Path | None:
    stem = f"{SPLITS[split]}-images-idx3-ubyte"
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def find_dataset_dir(dataset: IdxDataset, data_dir: str | Path | None = None) -> Path:
    """The folder holding a named data set's files: data_dir (its NAME/ subfolder or the files
    directly) if given; else $SCORELAB_DATA_DIR (the same), then the package's folder."""
    env = os.environ.get(DATA_DIR_ENV)
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise DataError(f"--data-dir {data_dir}: no such folder")
        candidates = [Path(data_dir) / dataset.name, Path(data_dir)]
    else:
        candidates = [Path(env) / dataset.name, Path(env)] if env else []
        candidates.append(dataset.system_dir)
    for folder in candidates:
        if _images_in(folder, "train") is not None:
            return folder
    unset = f" (${DATA_DIR_ENV} unset)" if data_dir is None and not env else ""
    raise DataError(
        f"{dataset.name} not found: no train-images-idx3-ubyte[.gz] in "
        f"{', '.join(map(str, candidates))}{unset}; {dataset.install_hint()}"
    )


def split_images_file(name: str, split: str, data_dir: str | Path | None = None) -> Path:
    """The images file of a named data set's split ("train" or "test")."""
    dataset = IDX_DATASETS[name]
    folder = find_dataset_dir(dataset, data_dir)
    found = _images_in(folder, split)
    if found is None:
        raise DataError(
            f"{folder}: no {SPLITS[split]}-images-idx3-ubyte[.gz], the {split} split of "
            f"{name}; {dataset.install_hint()}"
        )
    return found
