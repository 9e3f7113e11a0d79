"""config.json's layout 2: a version key, the network's own settings only (one frozen
dataclass per network), the migration of layout 1, and `train --dry-run`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scorelab.cli import main
from scorelab.config import (
    CONFIG_VERSION,
    NETWORKS,
    MLPConfig,
    RunConfig,
    UNetConfig,
    VAEConfig,
    apply_overrides,
    migrate_stored,
)
from scorelab.errors import CheckpointError
from tests.helpers import cli_fails

V1 = Path(__file__).parent / "fixtures" / "v1"
FAST = ["--steps", "3", "--n-data", "200", "--no-progress"]


def test_a_new_run_stores_version_4_and_its_network_settings_only(tmp_path):
    out = tmp_path / "r"
    assert main(["train", "--data", "ring", "--width", "16", *FAST, "--out", str(out)]) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["version"] == CONFIG_VERSION == 4
    assert set(stored["model"]) == {"name", "dim", "width", "depth", "variance", "num_classes"}
    assert stored["model"]["width"] == 16


def test_layout_1_migrates_to_the_networks_own_fields():
    old = json.loads((V1 / "ring-vae" / "config.json").read_text())
    assert "version" not in old and {"channel_mult", "latent_dim", "width"} <= set(old["model"])
    cfg = RunConfig.from_dict(old)
    assert isinstance(cfg.model, VAEConfig) and cfg.version == CONFIG_VERSION
    assert cfg.model.width == old["model"]["width"] and cfg.model.beta == old["model"]["beta"]
    new = migrate_stored(old)
    assert set(new["model"]) == {f for f in VAEConfig.__dataclass_fields__}
    assert migrate_stored(new) == new  # the current layout is left as it is
    with pytest.raises(CheckpointError, match="a newer scorelab"):
        RunConfig.from_dict({**new, "version": CONFIG_VERSION + 1})


def test_switching_the_network_keeps_the_shared_settings_and_refuses_foreign_ones():
    cfg = apply_overrides(RunConfig(), {"model.width": 32})
    vae = apply_overrides(cfg, {"model.name": "vae", "model.latent_dim": 4})
    assert isinstance(vae.model, VAEConfig) and vae.model.width == 32
    unet = apply_overrides(cfg, {"model.name": "unet", "model.channels": 8})
    assert isinstance(unet.model, UNetConfig) and unet.model.channels == 8
    assert set(NETWORKS) == {"mlp", "unet", "vae"} and isinstance(RunConfig().model, MLPConfig)
    with pytest.raises(Exception, match="--channel-mult applies to --model unet only"):
        apply_overrides(cfg, {"model.channel_mult": (1, 2)})


def test_a_flag_of_another_network_is_one_line(tmp_path, capsys):
    argv = ["train", "--data", "ring", "--res-blocks", "1", *FAST, "--out", str(tmp_path / "x")]
    cli_fails(argv, capsys, "--res-blocks applies to --model unet only (this run's model is mlp)")


def test_a_layout_1_config_json_works_as_a_config_file(tmp_path):
    out = tmp_path / "again"
    argv = ["train", "--config", str(V1 / "ring-ddpm" / "config.json"), *FAST, "--out", str(out)]
    assert main(argv) == 0
    stored = json.loads((out / "config.json").read_text())
    old = json.loads((V1 / "ring-ddpm" / "config.json").read_text())
    assert stored["model"]["width"] == old["model"]["width"] == 16


@pytest.mark.parametrize("argv", [["--data", "ring"], ["--config", "digits"]])
def test_dry_run_prints_the_config_the_run_would_store(argv, tmp_path, capsys):
    assert main(["train", *argv, *FAST, "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert not list(tmp_path.iterdir())  # nothing written
    out = tmp_path / "real"
    assert main(["train", *argv, *FAST, "--out", str(out)]) == 0
    assert printed == json.loads((out / "config.json").read_text())


def test_dry_run_refuses_resume(tmp_path, capsys):
    cli_fails(["train", "--out", str(tmp_path), "--resume", "--dry-run"], capsys, "--dry-run")


def test_layout_3_score_settings_were_eps_and_sigma2():
    """Before layout 4 a config's score.prediction and weighting were always set, eps and sigma2
    unless given; since 4, null means the process's own (edm, velocity, ...). A layout-3 config
    without them (or without a score section) reads as eps and sigma2, not as null."""
    d = RunConfig(objective="dsm").to_dict()
    d["version"] = 3
    for drop in (("prediction", "weighting"), ()):
        old = {**d, "score": {k: v for k, v in d["score"].items() if k not in drop}}
        if not drop:
            del old["score"]
        cfg = RunConfig.from_dict(old)
        assert (cfg.score.prediction, cfg.score.weighting) == ("eps", "sigma2")
    kept = {**d, "score": {**d["score"], "prediction": "x0", "weighting": "none"}}
    assert RunConfig.from_dict(kept).score.prediction == "x0"
    assert RunConfig.from_dict({**d, "version": 4}).score.prediction is None


def test_score_losses_are_per_dimension_means_since_layout_4(tmp_path):
    """A new continuous-time run trains on the mean over dimensions of each example's loss
    (L_simple's scale); score.reduction "sum", which layouts 3 and before trained, gives d
    times the same first-step loss (same seed, data and initial weights)."""
    import csv

    losses = {}
    for reduction in ("mean", "sum"):
        cfg = tmp_path / f"{reduction}.json"
        cfg.write_text(json.dumps({"score": {"reduction": reduction}}))
        out = tmp_path / reduction
        argv = ["train", "--config", str(cfg), "--data", "ring", "--process", "vp", "--steps", "1"]
        assert (
            main([*argv, "--log-every", "1", "--n-data", "200", "--no-progress", "--out", str(out)])
            == 0
        )
        stored = json.loads((out / "config.json").read_text())
        assert stored["score"]["reduction"] == reduction
        with open(out / "metrics.csv") as f:
            losses[reduction] = float(next(csv.DictReader(f))["loss"])
    assert losses["sum"] == pytest.approx(2 * losses["mean"], rel=1e-4)  # ring: d = 2
    old = RunConfig(objective="dsm").to_dict()
    old["version"] = 3
    del old["score"]["reduction"]
    assert RunConfig.from_dict(old).score.reduction == "sum"
