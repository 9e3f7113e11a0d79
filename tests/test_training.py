"""The training loop's guards and the checkpoint format."""

import math

import pytest
import torch
from torch import nn

from scorelab.config import TrainConfig
from scorelab.errors import CheckpointError
from scorelab.training import EMA, Trainer, TrainingDiverged, lr_at, read_checkpoint
from scorelab.training.checkpoint import flatten_state, save_checkpoint, unflatten_state


def _trainer(tmp_path, loss_fn, **cfg):
    torch.manual_seed(0)
    model = nn.Linear(2, 2)
    cfg = TrainConfig(
        **{"steps": 20, "batch_size": 8, "warmup": 2, "ckpt_every": 5, "log_every": 1, **cfg}
    )
    return Trainer(
        model, loss_fn, torch.randn(100, 2), cfg, tmp_path, {"test": True}, progress=False
    )


def _mse(model, x, generator):
    return ((model(x) - x) ** 2).mean(1)


def test_nan_steps_are_skipped_and_counted(tmp_path):
    calls = {"n": 0}

    def flaky(model, x, generator):
        calls["n"] += 1
        loss = _mse(model, x, generator)
        return loss * float("nan") if calls["n"] in (3, 4) else loss

    result = _trainer(tmp_path, flaky).fit()
    assert result.step == 20 and result.bad_steps == 2


def test_persistent_nan_stops_with_the_last_good_checkpoint(tmp_path):
    calls = {"n": 0}

    def broken(model, x, generator):
        calls["n"] += 1
        loss = _mse(model, x, generator)
        return loss * float("inf") if calls["n"] > 7 else loss

    trainer = _trainer(tmp_path, broken, max_bad_steps=3)
    with pytest.raises(TrainingDiverged, match="3 steps in a row.*last good checkpoint: .*"):
        trainer.fit()
    tensors, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == 5
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def test_lr_warmup_and_cosine_decay():
    cfg = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_lr_decay_follows_the_clock_under_a_time_cap():
    cfg = TrainConfig(steps=10**6, lr=1.0, warmup=10, min_lr_ratio=0.1, max_seconds=100.0)
    assert lr_at(5, cfg, seconds=50.0) == pytest.approx(0.6)  # warm-up is by steps
    assert lr_at(20, cfg, seconds=50.0) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(20, cfg, seconds=100.0) == pytest.approx(0.1)
    assert lr_at(20, cfg, seconds=500.0) == pytest.approx(0.1)
    steps_ahead = TrainConfig(steps=110, lr=1.0, warmup=10, min_lr_ratio=0.1, max_seconds=1e9)
    assert lr_at(60, steps_ahead, seconds=1.0) == pytest.approx(0.1 + 0.9 * 0.5)


def test_a_time_cap_stops_the_run_with_a_checkpoint_at_its_last_step(tmp_path):
    import csv
    import time

    def slow(model, x, generator):
        time.sleep(0.01)
        return _mse(model, x, generator)

    result = _trainer(tmp_path, slow, steps=10**6, max_seconds=0.2, ckpt_every=10**6).fit()
    assert 1 <= result.step < 10**6 and result.seconds >= 0.2
    _, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] == result.step
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert int(list(csv.DictReader(f))[-1]["step"]) == result.step
    with pytest.raises(Exception, match="max-seconds"):
        TrainConfig(max_seconds=-1.0).validate()


def test_ema_is_an_exponential_average():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.fill_(1.0)
    for step in range(1000, 1003):  # past the warm-up of the decay
        ema.update(model, step)
    expected = 0.9**3 * start + (1 - 0.9**3) * 1.0
    assert torch.allclose(ema.state_dict()["weight"], expected)
    assert ema.effective_decay(0) == pytest.approx(0.1)


def test_optimizer_state_round_trips_through_flatten(tmp_path):
    model = nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors = {}
    skeleton = flatten_state(opt.state_dict(), "optim", tensors)
    save_checkpoint(tmp_path, tensors, {"optim": skeleton})
    loaded, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    back = unflatten_state(meta["optim"], loaded)
    opt2 = torch.optim.Adam(nn.Linear(3, 2).parameters(), lr=0.5)
    opt2.load_state_dict(back)
    assert opt2.param_groups[0]["lr"] == 0.1
    for k, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(opt2.state_dict()["state"][k][name], value)


def test_atomic_save_keeps_the_previous_checkpoint(tmp_path):
    save_checkpoint(tmp_path, {"a": torch.zeros(2)}, {"step": 1})
    save_checkpoint(tmp_path, {"a": torch.ones(2)}, {"step": 2})
    _, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    _, prev = read_checkpoint(tmp_path / "checkpoint.prev.safetensors")
    assert meta["step"] == 2 and prev["step"] == 1
    assert not list(tmp_path.glob(".*tmp*"))


def test_non_finite_weights_are_never_written(tmp_path):
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path, {"w": torch.tensor([1.0, math.nan])}, {})
    assert not (tmp_path / "checkpoint.safetensors").exists()


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "checkpoint.safetensors"))
    with pytest.raises(CheckpointError, match="not a scorelab checkpoint"):
        read_checkpoint(tmp_path / "checkpoint.safetensors")


def test_clip_grad_norm_scales_only_large_gradients():
    from scorelab.training.trainer import clip_grad_norm

    a, b = nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(4))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 4.0, 0.0, 0.0])
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)
    total = torch.cat([a.grad, b.grad]).norm()
    assert float(total) == pytest.approx(1.0, rel=1e-5)
    before = a.grad.clone()
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(1.0, rel=1e-5)
    assert torch.equal(a.grad, before)  # under the limit: untouched
