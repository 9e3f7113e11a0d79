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


# -- loss spikes ----------------------------------------------------------------------------
def _scaled_after(step: int, factor: float, until: int | None = None):
    """The mse loss, times factor from call `step` on (until call `until`)."""
    calls = {"n": 0}

    def loss_fn(model, x, generator):
        calls["n"] += 1
        jump = step < calls["n"] and (until is None or calls["n"] <= until)
        return _mse(model, x, generator) * (factor if jump else 1.0)

    return loss_fn


def _diverging_column(run_dir):
    import csv

    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    columns = ["step", "loss", "grad_norm", "lr", "bad_steps", "seconds", "diverging"]
    assert list(rows[0]) == columns + ["fd", "fd_floor"]
    return [int(r["diverging"]) for r in rows]


def test_a_loss_that_jumps_after_warmup_is_reported_and_the_run_goes_on(tmp_path, capsys):
    result = _trainer(tmp_path, _scaled_after(30, 10.0), steps=80, lr=0.003).fit()
    assert result.step == 80  # reported, not stopped
    warnings = [line for line in capsys.readouterr().err.splitlines() if "diverging" in line]
    assert len(warnings) == 1, warnings
    assert "try a lower --lr than 0.003" in warnings[0]
    column = _diverging_column(tmp_path)
    first = column.index(1)
    # a steady 10x loss would cross 4x its best after 21 steps; this one still falls as it trains
    assert 30 + 21 <= first + 1 <= 70
    assert not any(column[:first]) and all(column[first:])
    assert f"diverging at step {first + 1}:" in warnings[0]


@pytest.mark.parametrize("loss_fn", [_mse, _scaled_after(30, 50.0, until=31)])
def test_a_steady_loss_or_one_outlier_batch_is_not_reported(tmp_path, capsys, loss_fn):
    _trainer(tmp_path, loss_fn, steps=80).fit()
    assert "diverging" not in capsys.readouterr().err
    assert not any(_diverging_column(tmp_path))


def test_spike_rule_hysteresis_and_negative_losses():
    from scorelab.training.spikes import LossSpikes

    spikes = LossSpikes()
    assert not spikes.update(5.0, past_warmup=False)  # warm-up: no best yet
    for _ in range(300):
        spikes.update(1.0, past_warmup=True)
    assert spikes.best == pytest.approx(1.0, abs=0.02)
    fired = [spikes.update(10.0, past_warmup=True) for _ in range(40)]
    assert fired.index(True) == 20 and fired.count(True) == 1 and spikes.diverging
    for _ in range(200):
        spikes.update(1.0, past_warmup=True)
    assert not spikes.diverging  # back under 2x its best
    negative = LossSpikes()
    for value in [-1.0] * 20 + [5.0] * 50:  # ism/ssm losses: no ratio rule below zero
        assert not negative.update(value, past_warmup=True)


def test_a_checkpoint_from_before_the_spike_check_resumes(tmp_path):
    import csv

    trainer = _trainer(tmp_path, _mse, steps=10)
    trainer.fit()
    tensors, meta = read_checkpoint(tmp_path / "checkpoint.safetensors")
    for key in ("partial_row", "spikes"):
        del meta["trainer"][key]
    path = tmp_path / "metrics.csv"  # and a metrics.csv of the old six columns
    with open(path, newline="") as f:
        rows = [{k: v for k, v in r.items() if k != "diverging"} for r in csv.DictReader(f)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    again = _trainer(tmp_path, _mse, steps=20)
    again.restore(tensors, meta, "old checkpoint")
    assert again.fit().step == 20
    column = []
    with open(path, newline="") as f:
        column = [r["diverging"] for r in csv.DictReader(f)]
    assert column == [""] * 10 + ["0"] * 10


def test_metrics_readers_accept_the_new_column(tmp_path):
    from scorelab.evaluation.plots import loss_curve

    _trainer(tmp_path, _mse, steps=6).fit()
    assert loss_curve(tmp_path / "metrics.csv", tmp_path / "loss.png").is_file()


# -- EMA ------------------------------------------------------------------------------------
def test_ema_follows_parameters_replaced_after_it_was_built():
    model = nn.Linear(1, 1, bias=False)
    ema = EMA(model, decay=0.5)
    model.weight = nn.Parameter(torch.full((1, 1), 3.0))  # a new tensor, not an in-place copy
    start = ema.state_dict()["weight"].clone()
    ema.update(model, step=1000)
    assert torch.equal(ema.state_dict()["weight"], 0.5 * start + 0.5 * 3.0)


def test_ema_refuses_a_module_with_other_tensors():
    ema = EMA(nn.Linear(2, 2), decay=0.9)
    with pytest.raises(ValueError, match="other tensors"):
        ema.update(nn.Linear(2, 2, bias=False), step=0)
    with pytest.raises(ValueError, match="weight is torch.float64"):
        ema.update(nn.Linear(2, 2).double(), step=0)
    with pytest.raises(ValueError, match=r"weight is torch.float32 \(3, 2\)"):
        ema.update(nn.Linear(2, 3), step=0)


# -- resume: the trainer's random state -------------------------------------------------------
def _recording_trainer(tmp_path, *, stop_at=None, dropout=0.0):
    """A trainer whose loss draws noise from the run's generator and records every batch and
    noise it sees; its optimizer records the generator's state after each step. With stop_at,
    the call of that number asks the trainer to stop (a checkpoint at that step, Preempted)."""
    tmp_path.mkdir(exist_ok=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Dropout(dropout), nn.Linear(16, 2))
    data = torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    seen = {"batches": [], "noise": [], "states": []}

    def loss_fn(net, x, generator):
        if stop_at is not None and len(seen["batches"]) + 1 == stop_at:
            trainer.request_stop()
        noise = torch.randn(x.shape, generator=generator)
        seen["batches"].append(x.clone())
        seen["noise"].append(noise)
        return ((net(x + 0.1 * noise) - x) ** 2).mean(1)

    cfg = TrainConfig(steps=10, batch_size=8, warmup=2, ckpt_every=100, log_every=1)
    trainer = Trainer(model, loss_fn, data, cfg, tmp_path, {"test": True}, progress=False)
    trainer.optimizer.register_step_post_hook(
        lambda *_: seen["states"].append(trainer.generator.get_state())
    )
    return trainer, model, seen


def _interrupted_and_resumed(tmp_path, dropout=0.0):
    """(uninterrupted trainer's records and model, resumed trainer, its records and model,
    the resumed trainer's generator state right after restore)."""
    from scorelab.training.preemption import Preempted

    full, full_model, full_seen = _recording_trainer(tmp_path / "full", dropout=dropout)
    full.fit()
    cut, _, _ = _recording_trainer(tmp_path / "cut", stop_at=5, dropout=dropout)
    with pytest.raises(Preempted, match="step 5"):
        cut.fit()
    resumed, model, seen = _recording_trainer(tmp_path / "cut", dropout=dropout)
    tensors, meta = read_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    resumed.restore(tensors, meta, "the step-5 checkpoint")
    state = resumed.generator.get_state()
    resumed.fit()
    return full_seen, full_model, resumed, seen, model, state, tensors


def test_resume_restores_the_generator_and_draws_the_same_batches_and_noise(tmp_path):
    """A run stopped after step 5 and resumed from its checkpoint by a fresh Trainer: right
    after restore its generator's state is the uninterrupted run's after step 5 (a fresh
    trainer's is the seed's), the checkpoint holds that state, and steps 6-10 draw the same
    batch indices and noise and end at the same weights, bit for bit. Catches a generator not
    saved or not restored (a resumed run would redraw the first batches)."""
    full_seen, full_model, resumed, seen, model, state, tensors = _interrupted_and_resumed(tmp_path)
    fresh = torch.Generator().manual_seed(0).get_state()
    assert not torch.equal(full_seen["states"][4], fresh)
    assert torch.equal(state, full_seen["states"][4])
    assert torch.equal(tensors["rng/generator"], full_seen["states"][4])
    assert resumed.step == 10 and len(seen["batches"]) == 5
    for i in range(5):
        assert torch.equal(seen["batches"][i], full_seen["batches"][5 + i]), i
        assert torch.equal(seen["noise"][i], full_seen["noise"][5 + i]), i
    for p, q in zip(model.parameters(), full_model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_resume_with_dropout_is_exact(tmp_path):
    """The same stop and resume with a Dropout(0.5) layer: the weights after step 10 equal the
    uninterrupted run's only if the random state dropout uses is restored too."""
    _, full_model, _, _, model, _, _ = _interrupted_and_resumed(tmp_path, dropout=0.5)
    for p, q in zip(model.parameters(), full_model.parameters(), strict=True):
        assert torch.equal(p, q)


# -- x0 clipping of image runs ------------------------------------------------------------------
class _Constant(nn.Module):
    """A 'network' whose prediction is one value everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x, t, y=None):
        return torch.full_like(x, self.value)


@pytest.mark.parametrize("objective, value", [("eps", 0.0), ("x0", 5.0)])
def test_image_runs_clip_the_implied_x0_and_vector_runs_do_not(objective, value):
    """build_eps_and_variance, what sampling and evaluation use: for a U-Net run the x0 implied
    by the prediction is clipped to [-1, 1] and eps recomputed at the same x_t,
    eps = (x_t - sqrt(alpha_bar) clip(x0)) / sqrt(1 - alpha_bar), alpha_bar from the betas'
    running product here; an MLP run's eps is the raw one. x_t spans [-3, 3] at t = 50 of 100
    (eps = 0 implies x0 = x_t / sqrt(alpha_bar), out of range for |x_t| > 0.7; x0 = 5 always is).
    Catches a missing clip for images, a clip applied to vectors, and a clip of eps itself."""
    from scorelab.build import build_eps_and_variance
    from scorelab.config import MLPConfig, RunConfig, ScheduleConfig, UNetConfig
    from scorelab.processes import make_schedule

    sched = make_schedule("linear", T=100)
    ab = 1.0
    for beta in sched.betas[:50].tolist():
        ab *= 1 - beta
    a, sigma = math.sqrt(ab), math.sqrt(1 - ab)
    x_t = torch.linspace(-3, 3, 64, dtype=torch.float64).reshape(1, 1, 8, 8)
    t = torch.full((1,), 50.0, dtype=torch.float64)
    raw_x0 = x_t / a if objective == "eps" else torch.full_like(x_t, value)
    if objective == "eps":  # entries inside the range and outside it
        assert (raw_x0.abs() > 1).any() and (raw_x0.abs() <= 1).any()
    raw_eps = (x_t - a * raw_x0) / sigma
    clipped_eps = (x_t - a * raw_x0.clamp(-1, 1)) / sigma
    for model_cfg, expected in ((UNetConfig(), clipped_eps), (MLPConfig(), raw_eps)):
        cfg = RunConfig(
            objective=objective, model=model_cfg, schedule=ScheduleConfig("linear", 100)
        )
        eps_fn, _ = build_eps_and_variance(_Constant(value), cfg, sched)
        torch.testing.assert_close(eps_fn(x_t, t), expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(clipped_eps, raw_eps)
