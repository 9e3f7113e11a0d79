"""Built-in datasets, .npy loading and its clear errors, and the normalizer."""

import numpy as np
import pytest
import torch

from scorelab.data import DATASETS, Normalizer, check_array, load_dataset, load_npy
from scorelab.errors import DataError


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_builtin_datasets_are_finite_2d_and_seeded(name):
    a = load_dataset(name, 1000, seed=3)
    b = load_dataset(name, 1000, seed=3)
    c = load_dataset(name, 1000, seed=4)
    assert a.shape == (1000, 2) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.std(0).min() > 0.3  # spread out, not collapsed


def test_checkerboard_lies_on_black_squares():
    x = load_dataset("checkerboard", 5000)
    assert (x.abs() <= 2).all()
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert (parity == parity[0]).all()


def test_ring_modes():
    x = load_dataset("ring", 8000)
    r = x.norm(dim=1)
    assert abs(float(r.mean()) - 2.0) < 0.05


def test_npy_round_trip(tmp_path):
    arr = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float64)
    np.save(tmp_path / "x.npy", arr)
    x = load_dataset(str(tmp_path / "x.npy"))
    assert x.shape == (50, 3) and torch.allclose(x, torch.from_numpy(arr).float())


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.zeros((0, 2)), "empty"),
        (np.zeros(5), "2-D"),
        (np.zeros((2, 2, 2)), "2-D"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite"),
        (np.array([[1.0, np.inf]]), "NaN or infinite"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_arrays_are_clear_errors(tmp_path, arr, message):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(DataError, match=message):
        load_npy(tmp_path / "bad.npy")


def test_pickled_npy_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="not a plain numeric"):
        load_npy(tmp_path / "obj.npy")


def test_unknown_and_missing(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'spiral'; choose one of"):
        load_dataset("spiral")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(str(tmp_path / "none.npy"))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="cannot read|not a plain"):
        load_dataset(str(tmp_path / "junk.npy"))


def test_normalizer_round_trip():
    x = torch.randn(100, 2) * torch.tensor([3.0, 1.0]) + torch.tensor([5.0, -1.0])
    nz = Normalizer.fit(x)
    z = nz.encode(x)
    assert torch.allclose(z.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(nz.decode(z), x, atol=1e-5)
    assert Normalizer.from_dict(nz.to_dict()) == nz
    assert check_array(x).shape == (100, 2)
