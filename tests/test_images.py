"""Image loaders on generated files: folders (labels, modes, sizes), uint8 .npy, bad inputs."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

from scorelab.data import is_image_source, load_images
from scorelab.data.images import random_hflip, to_uint8
from scorelab.errors import DataError


def _png(path, size=(8, 8), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def test_folder_with_class_subfolders_gives_labels_and_unit_range(tmp_path):
    _png(tmp_path / "cats" / "a.png", value=0)
    _png(tmp_path / "cats" / "b.PNG", value=255)  # upper-case suffix counts
    _png(tmp_path / "dogs" / "c.png", value=255)
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    s = load_images(str(tmp_path))
    assert s.x.shape == (3, 1, 8, 8) and s.x.dtype == torch.float32
    assert s.classes == ("cats", "dogs") and s.labels.tolist() == [0, 0, 1]
    assert float(s.x[0].max()) == -1.0 and float(s.x[1].min()) == 1.0
    assert "1 other files skipped" in s.note


def test_rgb_folder_resized_and_centre_cropped(tmp_path):
    for i in range(3):
        _png(tmp_path / f"{i}.jpg", size=(20, 12), mode="RGB", value=40 * i)
    s = load_images(str(tmp_path), image_size=8)
    assert s.x.shape == (3, 3, 8, 8) and s.labels is None
    assert s.x.min() >= -1 and s.x.max() <= 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "no images found"),
        (lambda p: (_png(p / "a.png"), _png(p / "b.png", mode="RGB")), "mixed image modes"),
        (lambda p: (_png(p / "a.png"), _png(p / "b.png", size=(4, 4))), "different sizes"),
        (lambda p: _png(p / "a.png", size=(8, 6)), "not square"),
        (lambda p: (p.mkdir(), (p / "x.png").write_bytes(b"garbage")), "cannot read as an image"),
    ],
)
def test_bad_folders_give_one_line_errors(tmp_path, make, message):
    folder = tmp_path / "imgs"
    make(folder)
    with pytest.raises(DataError, match=message):
        load_images(str(folder))


def test_uint8_npy_grey_and_rgb(tmp_path):
    grey = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "g.npy", grey)
    s = load_images(str(tmp_path / "g.npy"))
    assert s.x.shape == (5, 1, 8, 8)
    assert np.array_equal(to_uint8(s.x)[..., 0], grey)  # the [-1, 1] map round-trips exactly
    rgb = np.zeros((4, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "c.npy", rgb)
    assert load_images(str(tmp_path / "c.npy"), image_size=8).x.shape == (4, 3, 8, 8)
    assert is_image_source(str(tmp_path / "c.npy"))


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.zeros((4, 8, 8), dtype=np.float32), "must be uint8"),
        (np.zeros((4, 8, 8, 5), dtype=np.uint8), "expected uint8 images"),
        (np.zeros((0, 8, 8), dtype=np.uint8), "empty"),
        (np.zeros((2, 8, 6), dtype=np.uint8), "not square"),
    ],
)
def test_bad_image_npy(tmp_path, arr, message):
    np.save(tmp_path / "d.npy", arr)
    with pytest.raises(DataError, match=message):
        load_images(str(tmp_path / "d.npy"))


def test_vector_npy_is_not_image_data(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((10, 2), dtype=np.float32))
    assert not is_image_source(str(tmp_path / "v.npy"))


def fake_sklearn(monkeypatch, n=40):
    """A stand-in for sklearn.datasets.load_digits: (n, 8, 8) levels 0..16, labels 0..9."""
    rng = np.random.default_rng(0)
    bunch = types.SimpleNamespace(
        images=rng.integers(0, 17, (n, 8, 8)).astype(np.float64), target=np.arange(n) % 10
    )
    datasets = types.ModuleType("sklearn.datasets")
    datasets.load_digits = lambda: bunch
    datasets.__spec__ = importlib.machinery.ModuleSpec("sklearn.datasets", None)
    sklearn = types.ModuleType("sklearn")
    sklearn.__spec__ = importlib.machinery.ModuleSpec("sklearn", None)
    sklearn.datasets = datasets
    monkeypatch.setitem(sys.modules, "sklearn", sklearn)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", datasets)
    return bunch


def test_digits_scaled_to_unit_range_with_labels(monkeypatch):
    bunch = fake_sklearn(monkeypatch)
    s = load_images("digits")
    assert s.x.shape == (40, 1, 8, 8)
    assert torch.allclose(s.x[:, 0].double(), torch.from_numpy(bunch.images / 8 - 1), atol=1e-6)
    assert s.labels.tolist() == list(bunch.target) and s.classes == tuple("0123456789")


def test_digits_without_scikit_learn_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match="pip install scikit-learn"):
        load_images("digits")


def test_hflip_flips_about_half():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1000, 1, 1, 4)
    y = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = (y[:, 0, 0, 0] == 3).float().mean()
    assert 0.4 < float(flipped) < 0.6
    assert torch.equal(y.sort(dim=-1).values, x)
