"""Quality checks while training (--eval-every): FD and its floor in metrics.csv and fd.png,
computed from their own generators, so the run's trajectory, its resume and its clock are
those of a run without them."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from scorelab.cli import main
from scorelab.config import RunConfig, TrainConfig
from scorelab.errors import ScorelabError
from scorelab.evaluation import fd_curve
from scorelab.evaluation.metrics import frechet_distance
from scorelab.reports.metrics import FDProbe, reference_sets
from scorelab.training import Trainer
from tests.helpers import cli_fails

RING = ["--data", "ring", "--n-data", "512", "--batch-size", "32", "--width", "16", "--depth",
        "1", "--log-every", "5", "--no-progress"]  # fmt: skip


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class _Dropout(nn.Module):
    """A network whose forward draws from torch's global generator (as dropout does)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.lin(x))


def _fit(tmp_path: Path, name: str, on_eval=None, **cfg) -> tuple[Trainer, list[dict]]:
    (tmp_path / name).mkdir()
    torch.manual_seed(0)
    cfg = TrainConfig(
        **{"steps": 12, "batch_size": 8, "warmup": 2, "ckpt_every": 4, "log_every": 2, **cfg}
    )
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    trainer = Trainer(
        _Dropout(), lambda m, x, g: ((m(x) - x) ** 2).mean(1), data, cfg, tmp_path / name,
        {"test": True}, progress=False, on_eval=on_eval,
    )  # fmt: skip
    trainer.fit()
    return trainer, _rows(tmp_path / name)


def test_a_check_that_draws_random_numbers_leaves_the_trajectory_unchanged(tmp_path):
    """The check draws from torch's global generator, which dropout also draws from; the
    losses and weights equal those of the run without checks, bit for bit."""
    seen = []

    def check(trainer):
        seen.append(trainer.step)
        noise = torch.rand(1000)  # what sampling or a classifier's training would draw
        return {"fd": float(noise.mean()) + trainer.step, "fd_floor": 0.5}

    plain, plain_rows = _fit(tmp_path, "plain")
    checked, rows = _fit(tmp_path, "checked", check, eval_every=4)
    assert seen == [4, 8, 12]
    assert [r["loss"] for r in rows] == [r["loss"] for r in plain_rows]
    for key, value in plain.model.state_dict().items():
        assert torch.equal(value, checked.model.state_dict()[key]), key
    filled = {int(r["step"]): r for r in rows if r["fd"]}
    assert sorted(filled) == [4, 8, 12]
    assert all(float(filled[s]["fd"]) - s == pytest.approx(0.5, abs=0.05) for s in filled)
    assert all(r["fd"] == r["fd_floor"] == "" for r in rows if int(r["step"]) not in filled)


def test_without_the_forked_generator_the_trajectory_would_change(tmp_path):
    """The premise of the test above: drawing from the global generator between steps does
    change a dropout network's trajectory (so that test can fail)."""
    plain, _ = _fit(tmp_path, "plain")

    def draw(trainer):
        torch.rand(1000)

    (tmp_path / "drawn").mkdir()
    torch.manual_seed(0)
    cfg = TrainConfig(steps=12, batch_size=8, warmup=2, ckpt_every=4, log_every=2, sample_every=4)
    data = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    trainer = Trainer(
        _Dropout(), lambda m, x, g: ((m(x) - x) ** 2).mean(1), data, cfg, tmp_path / "drawn",
        {"test": True}, progress=False, on_sample=draw,
    )  # fmt: skip
    trainer.fit()
    assert not torch.equal(trainer.model.lin.weight, plain.model.lin.weight)


def test_the_time_a_check_takes_is_left_out_of_the_clock(tmp_path, monkeypatch):
    """A fake clock that only moves while a check runs (100 s each): the run's seconds stay
    0 and a --max-seconds cap is never reached by checking."""
    clock = {"now": 0.0}
    monkeypatch.setattr("scorelab.training.trainer.time.perf_counter", lambda: clock["now"])

    def slow_check(trainer):
        clock["now"] += 100.0
        return {"fd": 1.0, "fd_floor": 0.1}

    trainer, rows = _fit(tmp_path, "slow", slow_check, eval_every=2, max_seconds=50.0)
    assert trainer.step == 12
    assert {float(r["seconds"]) for r in rows} == {0.0}
    assert trainer.seconds == 0.0


def test_a_check_at_the_last_step_of_a_time_capped_run(tmp_path, monkeypatch):
    """A run stopped by --max-seconds between checks is checked at its last step too."""
    clock = {"now": 0.0}
    monkeypatch.setattr("scorelab.training.trainer.time.perf_counter", lambda: clock["now"])
    real = Trainer._loss

    def ticking(self, idx, generator):
        clock["now"] += 1.0
        return real(self, idx, generator)

    monkeypatch.setattr(Trainer, "_loss", ticking)
    seen = []

    def check(trainer):
        seen.append(trainer.step)
        return {"fd": 1.0, "fd_floor": 0.1}

    trainer, rows = _fit(tmp_path, "capped", check, eval_every=4, steps=100, max_seconds=6.5)
    assert trainer.step == 7 and seen == [4, 7]
    assert [r["step"] for r in rows if r["fd"]] == ["4", "7"]


def test_unknown_columns_from_a_check_are_refused(tmp_path):
    with pytest.raises(ScorelabError, match=r"unknown columns \['accuracy'\]"):
        _fit(tmp_path, "bad", lambda trainer: {"accuracy": 1.0}, eval_every=4)


def test_eval_every_needs_a_check_and_a_multiple_of_log_every(tmp_path):
    with pytest.raises(ScorelabError, match="this kind of run has no quality check"):
        _fit(tmp_path, "none", None, eval_every=4)
    with pytest.raises(ScorelabError, match="--eval-every 5 must be a multiple of --log-every 2"):
        TrainConfig(eval_every=5, log_every=2).validate()


def test_the_probe_is_the_frechet_distance_to_the_reference_and_its_floor(tmp_path):
    """FDProbe on ring data: its floor is the FD of the first n held-out points to the
    reference half (computed here directly), and the held-out points score exactly that."""
    cfg = RunConfig(data="ring", n_data=2000)
    reference, held_out, _, _ = reference_sets(cfg, log=lambda m: None)
    probe = FDProbe(cfg, tmp_path, 300, log=lambda m: None)
    direct = frechet_distance(held_out[:300], reference)
    assert probe.floor == pytest.approx(direct, rel=1e-9)
    assert probe(held_out[:300]) == {"fd": pytest.approx(direct, rel=1e-9), "fd_floor": probe.floor}
    shift = torch.tensor([1.0, 0.0])
    shifted = probe(held_out[:300] + shift)["fd"]
    d = (held_out[:300].double().mean(0) - reference.double().mean(0)).to(torch.float64)
    moved = float((d + shift).square().sum() - d.square().sum())  # only the means' term moves
    assert shifted == pytest.approx(direct + moved, rel=1e-6)
    with pytest.raises(ScorelabError, match="n >= 2"):
        FDProbe(cfg, tmp_path, 1)


def test_cli_checks_write_rows_and_fd_png_and_resume_gives_the_same_rows(tmp_path, capsys):
    """`train --eval-every`: rows at the checks, fd.png; a run stopped at step 20 and resumed
    to 40 has the uninterrupted run's losses, checks and weights."""
    full, part = tmp_path / "full", tmp_path / "part"
    flags = [*RING, "--eval-every", "10", "--eval-n", "200"]
    assert main(["train", *flags, "--steps", "40", "--out", str(full)]) == 0
    out = capsys.readouterr().out
    assert "quality checks every 10 steps: FD of 200 EMA samples (dpm-solver++, 20 steps)" in out
    assert f"sample quality while training: {full / 'fd.png'}" in out
    assert (full / "fd.png").stat().st_size > 0
    rows = _rows(full)
    checks = [(r["step"], r["fd"], r["fd_floor"]) for r in rows if r["fd"]]
    assert [c[0] for c in checks] == ["10", "20", "30", "40"]
    assert len({c[2] for c in checks}) == 1  # one floor: the same held-out points each time
    assert main(["train", *flags, "--steps", "20", "--out", str(part)]) == 0
    assert main(["train", "--out", str(part), "--resume", "--steps", "40", "--no-progress"]) == 0
    capsys.readouterr()

    def same(r):
        return {k: v for k, v in r.items() if k != "seconds"}

    assert [same(r) for r in _rows(part)] == [same(r) for r in rows]
    a, b = load_file(full / "checkpoint.safetensors"), load_file(part / "checkpoint.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_bad_eval_settings_are_one_line(tmp_path, capsys):
    cli_fails(
        ["train", *RING, "--eval-every", "7", "--out", str(tmp_path / "r")],
        capsys,
        "--eval-every 7 must be a multiple of --log-every 5",
    )
    assert not (tmp_path / "r").exists()
    cli_fails(
        ["train", "--data", "ring", "--model", "vae", "--eval-every", "25", "--steps", "30",
         "--no-progress", "--out", str(tmp_path / "v")],
        capsys,
        "--eval-every: this kind of run has no quality check",
    )  # fmt: skip


def test_fd_curve_needs_checks(tmp_path):
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text("step,loss,seconds,fd,fd_floor\n5,1.0,0.5,,\n10,0.5,1.0,,\n")
    assert fd_curve(csv_path, tmp_path / "fd.png") is None and not (tmp_path / "fd.png").exists()
    csv_path.write_text("step,loss,seconds,fd,fd_floor\n5,1.0,0.5,3.0,0.1\n10,0.5,1.0,2.0,0.1\n")
    assert fd_curve(csv_path, tmp_path / "fd.png") == tmp_path / "fd.png"
    assert (tmp_path / "fd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "shape, n, batches",
    [((1, 28, 28), 130, [63, 63, 4]), ((2,), 1200, [500, 500, 200]), ((3, 64, 64), 20, [16, 4])],
)
def test_samples_are_drawn_in_batches_of_about_fifty_thousand_numbers(shape, n, batches):
    """draw_samples' default batch: at most 500 examples and about 50,000 numbers (28x28: 63;
    at least 16), each batch seeded by the samples drawn before it."""
    from scorelab.reports.metrics import draw_samples

    class Run:
        def __init__(self):
            self.shape, self.calls = shape, []

        def sample(self, size, *, seed, sampler, steps):
            self.calls.append((size, seed))
            return torch.full((size, *shape), float(seed)), None

    run = Run()
    x = draw_samples(run, n, seed=5, sampler="ddim", steps=3)
    assert [c[0] for c in run.calls] == batches
    assert [c[1] for c in run.calls] == [5 + sum(batches[:i]) for i in range(len(batches))]
    assert x.shape == (n, *shape)
