"""IDX files (MNIST's format) and Fashion-MNIST: the reader on files written here, byte for
byte; the named data set's lookup (--data-dir, $SCORELAB_DATA_DIR, the package's folder);
training and eval on a tiny fake copy, whose t10k split is eval's held-out set; every bad
input as one line through the CLI; and the real installed files where the package is there."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import scorelab.runs.diffusion as diffusion
from scorelab.cli import main
from scorelab.config import overrides_from_dict
from scorelab.data import is_image_source, load_images, load_test_split
from scorelab.data.idx import (
    DATA_DIR_ENV,
    IDX_DATASETS,
    find_dataset_dir,
    labels_path_for,
    read_idx_images,
    read_idx_labels,
)
from scorelab.errors import DataError
from scorelab.evaluation.metrics import energy_distance
from tests.helpers import cli_fails

SYSTEM = IDX_DATASETS["fashion-mnist"].system_dir
TINY = [
    "--steps", "2", "--channels", "8", "--channel-mult", "1,2", "--res-blocks", "1",
    "--attn-res", "none", "--batch-size", "4", "--no-progress",
]  # fmt: skip


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file's bytes: magic (uint8 of arr's rank unless given), dims, values."""
    magic = 0x0800 | arr.ndim if magic is None else magic
    dims = b"".join(struct.pack(">I", d) for d in arr.shape)
    return struct.pack(">I", magic) + dims + arr.astype(np.uint8).tobytes()


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = True) -> Path:
    data = idx_bytes(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_pair(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz=True):
    """PREFIX-images-idx3-ubyte[.gz] and PREFIX-labels-idx1-ubyte[.gz] in folder."""
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz=gz)
    return write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, gz=gz)


def pixels(n: int, side: int, step: int = 7) -> np.ndarray:
    """n side x side images of known values: (k * step) mod 256 in C order."""
    return ((np.arange(n * side * side) * step) % 256).reshape(n, side, side).astype(np.uint8)


def fake_fashion(folder: Path, *, n_train: int = 12, n_test: int = 10) -> Path:
    """A tiny Fashion-MNIST: 28x28 random grey images, labels 0..3, train and t10k."""
    rng = np.random.default_rng(0)
    write_pair(folder, "train", rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 4)
    write_pair(folder, "t10k", rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 4)
    return folder


# the reader, byte for byte


@pytest.mark.parametrize("side, n", [(28, 3), (6, 4)])
@pytest.mark.parametrize("gz", [True, False])
def test_the_reader_returns_exactly_the_written_images_and_labels(tmp_path, side, n, gz):
    images, labels = pixels(n, side), np.array([3, 1, 4, 1][:n])
    path = write_pair(tmp_path, "x", images, labels, gz=gz)
    x = read_idx_images(path)
    assert x.dtype == torch.uint8 and x.shape == (n, 1, side, side)
    assert torch.equal(x[:, 0], torch.from_numpy(images))
    y = read_idx_labels(labels_path_for(path))
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    s = load_images(str(path))  # as training sees them: 0 -> -1, 255 -> 1, linear
    expected = torch.from_numpy(images).double()[:, None] * (2 / 255) - 1
    assert s.x.dtype == torch.float32 and torch.allclose(s.x.double(), expected, atol=1e-6)
    assert s.labels.tolist() == labels.tolist() and s.classes == tuple("01234")
    assert s.split == "" and is_image_source(str(path))


def test_gzip_is_told_by_its_magic_bytes_not_the_suffix(tmp_path):
    images, labels = pixels(2, 6), np.array([0, 1])
    compressed = tmp_path / "a-images-idx3-ubyte"  # gzip data, no .gz
    compressed.write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "a-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    plain = tmp_path / "b-images-idx3-ubyte.gz"  # plain data named .gz
    plain.write_bytes(idx_bytes(images))
    (tmp_path / "b-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    for path in (compressed, plain):
        assert torch.equal(read_idx_images(path)[:, 0], torch.from_numpy(images))
        assert load_images(str(path)).labels.tolist() == [0, 1]


def test_labels_are_found_by_the_standard_names(tmp_path):
    mnist = write_idx(tmp_path / "m-images.idx3-ubyte", pixels(2, 6), gz=False)  # MNIST's names
    write_idx(tmp_path / "m-labels.idx1-ubyte", np.array([7, 2]), gz=False)
    assert labels_path_for(mnist) == tmp_path / "m-labels.idx1-ubyte"
    mixed = write_idx(tmp_path / "n-images-idx3-ubyte.gz", pixels(2, 6))  # labels not gzipped
    write_idx(tmp_path / "n-labels-idx1-ubyte", np.array([7, 2]), gz=False)
    assert labels_path_for(mixed) == tmp_path / "n-labels-idx1-ubyte"
    assert load_images(str(mixed)).labels.tolist() == [7, 2]


def _cut(data: bytes, n: int) -> bytes:
    return data[:-n]


@pytest.mark.parametrize(
    "content, message",
    [
        (lambda i: _cut(idx_bytes(i), 5), "truncated: the header gives 2x6x6 bytes (88 in all)"),
        (lambda i: idx_bytes(i) + b"\0", "longer than its header says"),
        (lambda i: gzip.compress(_cut(idx_bytes(i), 1)), "truncated"),
        (lambda i: gzip.compress(idx_bytes(i) + b"\0"), "data continue past"),
        (lambda i: _cut(gzip.compress(idx_bytes(i)), 12), "the gzip stream ends early"),
        (lambda i: _cut(idx_bytes(i), 80), "truncated inside the IDX header"),
        (lambda i: b"\x89PNG\r\n\x1a\n" + bytes(40), "not an IDX file (magic 0x89504e47)"),
        (lambda i: idx_bytes(np.zeros(3)), "an IDX file of labels (magic 0x00000801)"),
        (lambda i: idx_bytes(i, magic=0x0D03), "type code 0x0d, not unsigned bytes"),
        (lambda i: idx_bytes(np.zeros((0, 6, 6))), "holds no images"),
        (lambda i: idx_bytes(np.zeros((2, 6, 4))), "not square"),
        (lambda i: b"", "empty or truncated"),
    ],
)
def test_broken_and_foreign_files_are_refused_in_words(tmp_path, content, message):
    path = tmp_path / "x-images-idx3-ubyte"
    path.write_bytes(content(pixels(2, 6)))
    write_idx(tmp_path / "x-labels-idx1-ubyte", np.array([0, 1]))
    with pytest.raises(DataError, match=re.escape(message)) as e:
        load_images(str(path))
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_a_gzip_header_claiming_more_than_the_file_can_hold(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x0803, 60000, 28, 28)))
    with pytest.raises(DataError, match="more than this gzip file can hold"):
        read_idx_images(path)


# the named data set: where it is looked for


def test_data_dir_then_the_environment_then_the_package_folder(tmp_path, monkeypatch):
    nested = fake_fashion(tmp_path / "mine" / "fashion-mnist")  # DIR/fashion-mnist/
    flat = fake_fashion(tmp_path / "env", n_train=5)  # the files directly in DIR
    system = fake_fashion(tmp_path / "usr" / "fashion-mnist", n_train=6)
    ds = dataclasses.replace(IDX_DATASETS["fashion-mnist"], system_dir=system)
    monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", ds)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    assert find_dataset_dir(ds, tmp_path / "mine") == nested  # --data-dir first
    s = load_images("fashion-mnist", data_dir=str(tmp_path / "mine"))
    assert s.x.shape == (12, 1, 28, 28) and s.split == "train" and s.classes[9] == "Ankle boot"
    assert find_dataset_dir(ds) == flat  # then $SCORELAB_DATA_DIR
    assert load_images("fashion-mnist").x.shape[0] == 5
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "nothing-here"))
    assert find_dataset_dir(ds) == system  # then the package's folder
    monkeypatch.delenv(DATA_DIR_ENV)
    assert find_dataset_dir(ds) == system
    test = load_test_split("fashion-mnist")
    assert test.x.shape == (10, 1, 28, 28) and test.split == "test" and "t10k" in test.note
    with pytest.raises(DataError, match="--data-dir .*: no such folder"):
        find_dataset_dir(ds, tmp_path / "missing")


def test_the_official_test_split_of_data_that_has_one(tmp_path):
    fake_fashion(tmp_path)
    test = load_test_split(str(tmp_path / "train-images-idx3-ubyte.gz"))  # the t10k beside it
    assert test.x.shape[0] == 10 and test.split == "test"
    assert load_test_split(str(tmp_path / "t10k-images-idx3-ubyte.gz")) is None
    assert load_test_split(str(tmp_path)) is None  # a folder of images: halved as before
    assert load_test_split("digits") is None


def test_a_copied_config_does_not_carry_the_split_it_was_trained_on():
    stored = {"data": "fashion-mnist", "data_dir": "/d", "data_split": "train"}
    assert overrides_from_dict(stored) == {"data": "fashion-mnist", "data_dir": "/d"}


# train and eval on a tiny copy


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory):
    """A 2-step run on a fake fashion-mnist in --data-dir (pictures skipped: they are tested
    with digits in test_cli_images, and here they would take most of the time)."""
    root = tmp_path_factory.mktemp("fm")
    fake_fashion(root / "data" / "fashion-mnist")
    mp = pytest.MonkeyPatch()
    mp.setattr(diffusion, "write_pictures", lambda *args, **kwargs: None)
    mp.delenv(DATA_DIR_ENV, raising=False)
    run = root / "run"
    try:
        argv = ["train", "--data", "fashion-mnist", "--data-dir", str(root / "data")]
        assert main([*argv, *TINY, "--out", str(run)]) == 0
    finally:
        mp.undo()
    return run, root / "data"


def test_train_records_the_data_dir_and_the_split(fashion_run):
    run, data = fashion_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"] == "fashion-mnist" and cfg["data_dir"] == str(data)
    assert cfg["data_split"] == "train"
    assert cfg["model"]["image_size"] == 28 and cfg["model"]["in_channels"] == 1


def test_eval_holds_out_the_t10k_split(fashion_run, capsys, monkeypatch):
    run, data = fashion_run
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    capsys.readouterr()
    argv = ["eval", str(run), "--metrics", "energy", "--n", "8", "--steps", "2"]
    assert main([*argv, "--format", "json"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)["energy"]
    assert "held out: fashion-mnist test split" in captured.err
    train = load_images("fashion-mnist", data_dir=str(data)).x
    test = load_test_split("fashion-mnist", data_dir=str(data)).x
    # the reference is the whole (12-image) train split, the floor the first 8 t10k images
    assert (r["n_reference"], r["n_floor"]) == (12, 8)
    assert r["floor"] == pytest.approx(energy_distance(test[:8], train), rel=1e-9)


def test_conditional_and_the_classifier_take_its_labels(tmp_path, capsys):
    fake_fashion(tmp_path / "fashion-mnist")
    data = ["--data", "fashion-mnist", "--data-dir", str(tmp_path)]
    assert main(["train", *data, "--conditional", "--dry-run", *TINY]) == 0
    assert json.loads(capsys.readouterr().out)["model"]["num_classes"] == 4
    argv = ["train-classifier", *data, "--steps", "2", "--batch-size", "4", "--channels", "8"]
    assert main([*argv, "--T", "20", "--no-progress", "--out", str(tmp_path / "cls")]) == 0
    stored = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert stored["num_classes"] == 4 and stored["data_dir"] == str(tmp_path)


# bad input: one line, exit status 2, nothing written


def _nothing_written(run: Path) -> None:
    """Nothing written: the run directory that the refused command would have made is gone."""
    assert not run.exists()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: (d / "x-images-idx3-ubyte").write_bytes(_cut(idx_bytes(pixels(2, 8)), 3)),
         "truncated"),
        (lambda d: (d / "x-images-idx3-ubyte").write_bytes(b"GIF89a" + bytes(200)),
         "not an IDX file"),
        (lambda d: write_idx(d / "x-labels-idx1-ubyte", np.array([1, 2, 3])), "3 labels for the 2"),
        (lambda d: (d / "x-labels-idx1-ubyte").unlink(), "no labels file beside it"),
    ],
)  # fmt: skip
def test_bad_idx_files_through_the_cli(tmp_path, capsys, make, message):
    write_pair(tmp_path, "x", pixels(2, 8), np.array([0, 1]), gz=False)
    make(tmp_path)
    run = tmp_path / "run"
    argv = ["train", "--data", str(tmp_path / "x-images-idx3-ubyte"), *TINY, "--out", str(run)]
    cli_fails(argv, capsys, message)
    _nothing_written(run)


def test_not_installed_says_where_it_looked_and_how_to_install(tmp_path, capsys, monkeypatch):
    ds = dataclasses.replace(IDX_DATASETS["fashion-mnist"], system_dir=tmp_path / "absent")
    monkeypatch.setitem(IDX_DATASETS, "fashion-mnist", ds)
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    run = tmp_path / "run"
    line = cli_fails(["train", "--data", "fashion-mnist", *TINY, "--out", str(run)], capsys,
                     "fashion-mnist not found")  # fmt: skip
    assert str(tmp_path / "absent") in line and f"${DATA_DIR_ENV} unset" in line
    assert "sudo apt-get install dataset-fashion-mnist" in line and "--data-dir" in line
    _nothing_written(run)
    (tmp_path / "empty").mkdir()
    argv = ["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "empty")]
    line = cli_fails([*argv, *TINY, "--out", str(run)], capsys, "fashion-mnist not found")
    assert str(tmp_path / "empty" / "fashion-mnist") in line
    _nothing_written(run)


def test_28_pixels_on_four_unet_levels_is_refused(tmp_path, capsys):
    fake_fashion(tmp_path / "fashion-mnist")
    run = tmp_path / "run"
    argv = ["train", "--data", "fashion-mnist", "--data-dir", str(tmp_path), *TINY]
    cli_fails([*argv, "--channel-mult", "1,2,2,2", "--out", str(run)], capsys,
              "image size 28 is not divisible by 2^3 = 8")  # fmt: skip
    _nothing_written(run)


# the real files, where the dataset-fashion-mnist package is installed


installed = pytest.mark.skipif(
    not (SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST is not installed in {SYSTEM} (sudo apt-get install "
    "dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def real_fashion():
    """The installed train and t10k splits, read once: {split: (images, labels)}."""
    return {
        split: (
            read_idx_images(SYSTEM / f"{prefix}-images-idx3-ubyte.gz"),
            read_idx_labels(SYSTEM / f"{prefix}-labels-idx1-ubyte.gz"),
        )
        for split, prefix in (("train", "train"), ("test", "t10k"))
    }


@installed
@pytest.mark.parametrize("split, n", [("train", 60_000), ("test", 10_000)])
def test_the_installed_fashion_mnist(real_fashion, split, n):
    x, y = real_fashion[split]
    assert x.dtype == torch.uint8 and x.shape == (n, 1, 28, 28)
    assert int(x.min()) == 0 and int(x.max()) == 255
    assert torch.bincount(y).tolist() == [n // 10] * 10  # labels 0..9, n / 10 of each


@installed
def test_the_installed_copy_is_found_by_default(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    assert find_dataset_dir(IDX_DATASETS["fashion-mnist"]) == SYSTEM
    assert is_image_source("fashion-mnist")
