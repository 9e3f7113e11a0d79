"""Presets: the JSON configs shipped with scorelab (src/scorelab/presets, configs/ in the
repository) parse, train, and give image runs their measured defaults."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from scorelab.cli import main
from scorelab.config import RunConfig, apply_overrides, overrides_from_dict
from scorelab.presets import FOLDER, image_defaults, preset_names
from tests.helpers import cli_fails

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "2", "--log-every", "1", "--no-progress", "--n-data", "200"]
# what each preset needs on top of FAST to run in a second or two
EXTRA = {"tsm-double-well": ["--langevin-steps", "10"]}


def test_presets_are_the_repository_configs_and_parse():
    names = preset_names()
    assert {"ring", "digits", "digits-conditional", "vae-digits", "images"} <= set(names)
    for name in names:
        packaged = (FOLDER / f"{name}.json").read_text()
        assert (REPO / "configs" / f"{name}.json").read_text() == packaged
        cfg = apply_overrides(RunConfig(), overrides_from_dict(json.loads(packaged), name))
        cfg.train.validate()


# images: the defaults of every image run (below); fashion: the real data set (below)
@pytest.mark.parametrize("name", [n for n in preset_names() if n not in ("images", "fashion")])
def test_every_preset_trains(name, tmp_path):
    out = tmp_path / name
    assert main(["train", "--config", name, *FAST, *EXTRA.get(name, []), "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())
    preset = json.loads((FOLDER / f"{name}.json").read_text())
    for section, values in preset.items():  # the preset's settings are the run's, bar FAST
        if isinstance(values, dict) and section != "sde":
            for key, value in values.items():
                if key not in ("steps", "log_every"):
                    assert stored[section][key] == value, (section, key)


def test_the_fashion_preset_trains_on_fashion_mnist_for_its_minutes(tmp_path, monkeypatch):
    """The preset on a tiny stand-in of the data set (--data-dir): a time-capped run with
    quality checks, the U-Net of three levels that the preset measured best (28 -> 14 -> 7)."""
    from scorelab.runs import diffusion
    from tests.test_idx import fake_fashion

    monkeypatch.setattr(diffusion, "write_pictures", lambda *args, **kwargs: None)
    fake_fashion(tmp_path / "data" / "fashion-mnist")
    preset = json.loads((FOLDER / "fashion.json").read_text())
    assert preset["data"] == "fashion-mnist" and preset["train"]["max_seconds"] == 1200
    assert preset["train"]["eval_every"] % preset["train"]["log_every"] == 0
    out = tmp_path / "f"
    argv = ["train", "--config", "fashion", "--data-dir", str(tmp_path / "data"), *FAST]
    assert main([*argv, "--eval-every", "0", "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["model"]["channel_mult"] == [1, 2, 2] and stored["model"]["image_size"] == 28
    for key, value in preset["train"].items():
        if key not in ("steps", "log_every", "eval_every"):
            assert stored["train"][key] == value, key
    assert stored["train"]["steps"] == 2 and stored["data_split"] == "train"


def test_config_by_path_and_flags_over_it(tmp_path):
    out = tmp_path / "r"
    argv = ["train", "--config", str(REPO / "configs" / "ring.json"), "--lr", "0.003"]
    assert main([*argv, *FAST, "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["data"] == "ring" and stored["train"]["lr"] == 0.003


def test_unknown_preset_is_one_line_listing_them(tmp_path, capsys):
    cli_fails(["train", "--config", "nope", "--out", str(tmp_path / "x")], capsys, "ring")


def _digits_npy(path: Path) -> Path:
    from sklearn.datasets import load_digits

    images = load_digits().images[:600]
    np.save(path, (images * 255 / 16).round().astype(np.uint8))
    return path


def test_image_runs_get_the_image_defaults_and_flags_win(tmp_path):
    data = _digits_npy(tmp_path / "d.npy")
    out = tmp_path / "img"
    assert main(["train", "--data", str(data), "--lr", "0.001", *FAST, "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())
    for key, value in image_defaults().items():
        section, leaf = key.split(".")
        got = stored[section][leaf]
        if key == "train.lr":
            assert got == 0.001  # the flag wins over the default
        else:
            assert (list(got) if isinstance(got, list) else got) == (
                list(value) if isinstance(value, tuple) else value
            ), key
    assert RunConfig().train.batch_size != stored["train"]["batch_size"]  # vectors keep theirs


@pytest.mark.slow
def test_image_defaults_train_without_diverging(tmp_path):
    """A default image run's loss keeps falling after warm-up (the vector defaults, lr 1e-2 and
    batch 512 on the U-Net, diverged when the warm-up ended): the mean loss of the last 20 of
    240 steps is below that of the 20 steps ending the warm-up (100 steps)."""
    data = _digits_npy(tmp_path / "d.npy")
    out = tmp_path / "img"
    argv = ["train", "--data", str(data), "--steps", "240", "--log-every", "1"]
    assert main([*argv, "--no-progress", "--out", str(out)]) == 0
    with open(out / "metrics.csv") as f:
        loss = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}
    end_of_warmup = np.mean([loss[s] for s in range(81, 101)])
    end = np.mean([loss[s] for s in range(221, 241)])
    assert end < end_of_warmup, (end, end_of_warmup)
