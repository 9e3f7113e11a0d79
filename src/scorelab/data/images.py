"""Image data: scikit-learn's 8x8 digits, Fashion-MNIST and other IDX files (data/idx.py),
folders of PNG/JPEG files, uint8 .npy arrays.

Every loader returns an ImageSet: x of shape (N, C, S, S), float32, grey levels mapped
linearly onto [-1, 1] (0 -> -1, the maximum level -> 1), and integer labels when the source
has them (digit classes; sub-folder names). Everything is held in memory as one tensor: the
data sets this is for are small, and a tensor index is far faster than a Python loader.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scorelab.data.idx import (
    IDX_DATASETS,
    is_idx_images,
    labels_path_for,
    official_test_file,
    read_idx_images,
    read_idx_labels,
    split_images_file,
)
from scorelab.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# Pillow modes by family: a folder must hold one family (converting grey to RGB or RGB to
# grey behind the user's back changes what the model learns)
_GREY = {"1", "L", "LA", "I", "I;16", "F"}
_COLOUR = {"RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"}


@dataclass(frozen=True)
class ImageSet:
    """Images (N, C, S, S) in [-1, 1]; labels (N,) int64 or None; class names by label."""

    x: Tensor
    labels: Tensor | None = None
    classes: tuple[str, ...] = ()
    note: str = ""
    split: str = ""  # a named data set's official split ("train", "test"); "" for others

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


def to_unit_range(x: Tensor, max_level: float) -> Tensor:
    """Grey levels 0..max_level -> [-1, 1]."""
    return x.float() * (2.0 / max_level) - 1.0


def to_uint8(x: Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded and clipped."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def digits(image_size: int | None = None) -> ImageSet:
    """scikit-learn's 1,797 handwritten digits, 8x8, 17 grey levels (0..16), labels 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "--data digits needs scikit-learn, which ships the digits (no download): "
            "pip install scikit-learn"
        ) from None
    bunch = load_digits()
    x = to_unit_range(torch.as_tensor(bunch.images, dtype=torch.float32), 16.0)[:, None]
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    if image_size is not None and image_size != 8:
        x = _resize_tensor(x, image_size)
    return ImageSet(x, labels, tuple(str(i) for i in range(10)), "sklearn digits")


def _resize_tensor(x: Tensor, size: int) -> Tensor:
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


def _fit_square(img, size: int):
    """Resize the shorter side to size (Lanczos), then crop the centre square."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.LANCZOS)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _stack(arrays: list[np.ndarray], sizes: Counter, source: str, image_size: int | None):
    if image_size is None:
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
            raise DataError(f"{source}: images of different sizes ({listed}); pass --image-size")
        ((w, h),) = sizes
        if w != h:
            raise DataError(f"{source}: images are {w}x{h}, not square; pass --image-size")
    return np.stack(arrays)


def load_folder(path: str | Path, image_size: int | None = None) -> ImageSet:
    """PNG/JPEG/... files under path (any case of suffix); labels from sub-folder names."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    skipped = len(files) - len(images)
    if not images:
        raise DataError(
            f"{root}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, any case; "
            f"{skipped} other files skipped)"
        )
    families: dict[str, list[Path]] = {"grey": [], "colour": []}
    arrays, sizes = [], Counter()
    for p in images:
        try:
            with Image.open(p) as img:
                img.load()
                mode = img.mode
                if mode in _GREY:
                    family, img = "grey", img.convert("L")
                elif mode in _COLOUR:
                    family, img = "colour", img.convert("RGB")
                else:
                    raise DataError(f"{p}: unsupported image mode {mode}")
                sizes[img.size] += 1
                if image_size is not None:
                    img = _fit_square(img, image_size)
                arrays.append(np.asarray(img, dtype=np.uint8))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{p}: cannot read as an image ({type(e).__name__})") from None
        families[family].append(p)
    if families["grey"] and families["colour"]:
        g, c = families["grey"], families["colour"]
        raise DataError(
            f"{root}: mixed image modes: {len(g)} grey (e.g. {g[0].name}) and {len(c)} colour "
            f"(e.g. {c[0].name}); convert them to one mode first"
        )
    arr = _stack(arrays, sizes, str(root), image_size)
    x = torch.from_numpy(arr)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    parents = [p.parent.relative_to(root) for p in images]
    labels, classes = None, ()
    if all(part != Path(".") for part in parents):
        classes = tuple(sorted({part.parts[0] for part in parents}))
        index = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([index[part.parts[0]] for part in parents], dtype=torch.int64)
    note = f"{len(images)} images read from {root}" + (
        f", {skipped} other files skipped" if skipped else ""
    )
    return ImageSet(to_unit_range(x.contiguous(), 255.0), labels, classes, note)


def load_image_npy(path: str | Path, image_size: int | None = None) -> ImageSet:
    """A uint8 array (N, H, W) or (N, H, W, C) with C in {1, 3}, read without unpickling."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read as a plain .npy array ({e})") from None
    if arr.dtype != np.uint8:
        raise DataError(f"{path}: image arrays must be uint8 (0..255), got dtype {arr.dtype}")
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[3] not in (1, 3)):
        raise DataError(
            f"{path}: expected uint8 images (N, H, W) or (N, H, W, C) with C 1 or 3, "
            f"got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{path}: the array is empty (shape {arr.shape})")
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if image_size is not None and arr.shape[1:3] != (image_size, image_size):
        arr = np.stack([np.asarray(_fit_square(Image.fromarray(a), image_size)) for a in arr])
    elif arr.shape[1] != arr.shape[2]:
        raise DataError(
            f"{path}: images are {arr.shape[2]}x{arr.shape[1]}, not square; pass --image-size"
        )
    x = torch.from_numpy(np.ascontiguousarray(arr))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return ImageSet(to_unit_range(x.contiguous(), 255.0), note=f"{len(arr)} images from {path}")


def load_idx(
    path: str | Path, image_size: int | None = None, *, classes: tuple[str, ...] = ()
) -> ImageSet:
    """An IDX images file (N, H, W) and the labels file beside it (X-labels-idx1-ubyte), read
    as one uint8 tensor and mapped onto [-1, 1]; classes default to the label numbers."""
    path = Path(path)
    x = read_idx_images(path)
    labels_path = labels_path_for(path)
    labels = read_idx_labels(labels_path)
    if labels.shape[0] != x.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels for the {x.shape[0]} images")
    n, _, h, w = x.shape
    if h != w:
        raise DataError(
            f"{path}: images are {w}x{h}, not square (scorelab's image models take square images)"
        )
    if not classes:
        classes = tuple(str(i) for i in range(int(labels.max()) + 1))
    x = to_unit_range(x, 255.0)
    if image_size is not None and image_size != h:
        x = _resize_tensor(x, image_size)
    return ImageSet(x, labels, classes, f"{n} images from {path}, labels from {labels_path.name}")


def load_idx_dataset(
    name: str,
    split: str = "train",
    image_size: int | None = None,
    *,
    data_dir: str | Path | None = None,
) -> ImageSet:
    """A split ("train" or "test") of a named IDX data set, found by idx.find_dataset_dir."""
    path = split_images_file(name, split, data_dir)
    s = load_idx(path, image_size, classes=IDX_DATASETS[name].classes)
    return dataclasses.replace(s, note=f"{name} {split} split: {s.note}", split=split)


IMAGE_DATASETS: dict[str, Callable[..., ImageSet]] = {"digits": digits}
# named image sets: the built-in ones and the IDX data sets (found on disk, --data-dir)
IMAGE_DATASET_NAMES = (*IMAGE_DATASETS, *IDX_DATASETS)


def is_image_source(name: str) -> bool:
    """Whether --data names image data: a named image set, a folder, an IDX images file, or a
    uint8 3/4-D .npy."""
    if name in IMAGE_DATASET_NAMES:
        return True
    path = Path(name)
    if path.is_dir() or is_idx_images(path):
        return True
    if path.suffix.lower() == ".npy" and path.is_file():
        try:
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError, EOFError):
            return False  # the vector loader explains what is wrong
        return arr.ndim in (3, 4)
    return False


def load_images(
    name: str, image_size: int | None = None, *, data_dir: str | None = None
) -> ImageSet:
    """A named image set (an IDX one's train split, looked for in data_dir first), a folder of
    images, an IDX images file or a uint8 .npy file."""
    if image_size is not None and image_size < 1:
        raise DataError(f"--image-size must be >= 1, got {image_size}")
    if name in IDX_DATASETS:
        return load_idx_dataset(name, "train", image_size, data_dir=data_dir)
    if name in IMAGE_DATASETS:
        return IMAGE_DATASETS[name](image_size)
    if Path(name).is_dir():
        return load_folder(name, image_size)
    if is_idx_images(Path(name)):
        return load_idx(name, image_size)
    if Path(name).suffix.lower() == ".npy":
        return load_image_npy(name, image_size)
    raise DataError(
        f"{name!r} is not image data: use {', '.join(IMAGE_DATASET_NAMES)}, a folder of images, "
        "an IDX images file or a uint8 .npy file"
    )


def load_test_split(
    name: str, image_size: int | None = None, *, data_dir: str | None = None
) -> ImageSet | None:
    """The official test split of image data that has one, held out from training: an IDX
    data set's t10k files, or the t10k file beside a train-images IDX file; else None."""
    if name in IDX_DATASETS:
        return load_idx_dataset(name, "test", image_size, data_dir=data_dir)
    path = Path(name)
    test = official_test_file(path) if is_idx_images(path) else None
    if test is None:
        return None
    return dataclasses.replace(load_idx(test, image_size), split="test")


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image (B, C, H, W) left-right with probability 1/2."""
    gen_device = generator.device if generator is not None else x.device
    flip = torch.rand(x.shape[0], generator=generator, device=gen_device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)
