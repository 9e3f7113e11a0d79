"""Checkpoint files by hand: the nested-state round trip, what each error says (a corrupt file
names the last good one), the previous checkpoint kept with and without hard links, and the
EMA's own checks."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from scorelab.errors import CheckpointError
from scorelab.training import checkpoint as ckpt
from scorelab.training.checkpoint import (
    CHECKPOINT,
    PREVIOUS,
    describe_last_checkpoint,
    flatten_state,
    load_state_dict_checked,
    read_checkpoint,
    save_checkpoint,
    unflatten_state,
)
from scorelab.training.ema import EMA


def test_nested_state_flattens_to_named_tensors_and_back():
    a, b, c = torch.ones(2), torch.zeros(3), torch.arange(4.0)
    state = {"step": 3, "groups": [{"lr": 0.1, "w": a}, [b, None]], "c": c, "ok": True}
    tensors: dict = {}
    skeleton = flatten_state(state, "optim", tensors)
    assert set(tensors) == {"optim.groups.0.w", "optim.groups.1.0", "optim.c"}
    assert skeleton["__dict__"][0] == ["step", 3]
    back = unflatten_state(skeleton, tensors)
    assert torch.equal(back["groups"][1][0], b) and back["groups"][1][1] is None
    assert torch.equal(back["groups"][0]["w"], a) and back["groups"][0]["lr"] == 0.1
    assert back["step"] == 3 and back["ok"] is True and torch.equal(back["c"], c)
    with pytest.raises(TypeError, match="cannot store set at optim.x in a checkpoint"):
        flatten_state({"x": {1}}, "optim", {})


def test_a_mismatched_state_is_explained_in_words():
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    good = {k: v.clone() for k, v in net.state_dict().items()}
    load_state_dict_checked(net, good, "the weights")  # a match loads
    bad = {**good, "extra.weight": torch.zeros(1), "0.bias": torch.zeros(5)}
    del bad["1.weight"]
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(net, bad, "the EMA weights in X")
    assert str(e.value) == (
        "the EMA weights in X does not match the model built from its config: "
        "1 missing (e.g. 1.weight); 1 unexpected (e.g. extra.weight); "
        "1 of another shape (e.g. 0.bias: checkpoint (5,) vs model (3,))"
    )
    for only, words in [
        ({k: v for k, v in good.items() if k != "1.bias"}, "1 missing (e.g. 1.bias)"),
        ({**good, "z": torch.zeros(1)}, "1 unexpected (e.g. z)"),
        ({**good, "1.bias": torch.zeros(2)}, "1 of another shape (e.g. 1.bias: checkpoint (2,)"),
    ]:
        with pytest.raises(CheckpointError, match="config: " + words.replace("(", r"\(")
                           .replace(")", r"\)").replace(".", r"\.")):  # fmt: skip
            load_state_dict_checked(net, only, "w")


def _save(run_dir, step):
    return save_checkpoint(run_dir, {"model/w": torch.full((2,), float(step))}, {"step": step})


def test_a_corrupt_checkpoint_names_the_last_good_one(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint at {tmp_path / CHECKPOINT}$"):
        read_checkpoint(tmp_path / CHECKPOINT)
    _save(tmp_path, 1)
    _save(tmp_path, 2)
    tensors, meta = read_checkpoint(tmp_path / CHECKPOINT)
    assert meta["step"] == 2 and torch.equal(tensors["model/w"], torch.full((2,), 2.0))
    assert read_checkpoint(tmp_path / PREVIOUS)[1]["step"] == 1
    assert read_checkpoint(tmp_path / CHECKPOINT, prefixes=("-",))[0] == {}
    assert describe_last_checkpoint(tmp_path) == (
        f"the last checkpoint, {tmp_path / CHECKPOINT} (step 2), is intact",
        2,
    )
    (tmp_path / CHECKPOINT).write_bytes(b"\x10" * 40)
    message = (
        f"checkpoint {tmp_path / CHECKPOINT} is incomplete or corrupt; last good: "
        f"{tmp_path / PREVIOUS} (step 1)"
    )
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / CHECKPOINT)
    assert str(e.value) == message
    assert describe_last_checkpoint(tmp_path) == (message, None)
    (tmp_path / PREVIOUS).write_bytes(b"\x10" * 40)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / CHECKPOINT)
    assert str(e.value).endswith(f"corrupt; {tmp_path / PREVIOUS} is unreadable too")
    with pytest.raises(CheckpointError) as e:  # the previous one itself: no hint about itself
        read_checkpoint(tmp_path / PREVIOUS)
    assert str(e.value) == f"checkpoint {tmp_path / PREVIOUS} is incomplete or corrupt"


def test_a_checkpoint_without_a_step_describes_step_zero(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, {})
    assert describe_last_checkpoint(tmp_path)[1] == 0
    assert describe_last_checkpoint(tmp_path / "none") == (
        f"no checkpoint was written in {tmp_path / 'none'}",
        None,
    )


def _fail_the_last_rename(monkeypatch) -> None:
    """os.replace fails (EIO) where a save moves its new file over the checkpoint."""
    real_replace = os.replace

    def failing_replace(src, dst):
        if str(dst).endswith(CHECKPOINT) and ".tmp" in str(src):
            raise OSError(errno.EIO, "I/O error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)


def test_saves_leave_no_temporary_files_and_keep_the_previous_one(tmp_path, monkeypatch):
    for step in range(3):
        # a link left by a save killed at that moment is cleared by the next save
        (tmp_path / f".{PREVIOUS.removesuffix('.safetensors')}.tmp.safetensors").write_bytes(b"")
        _save(tmp_path, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == [PREVIOUS, CHECKPOINT]
    assert read_checkpoint(tmp_path / PREVIOUS)[1]["step"] == 1
    # a new file that cannot take its place leaves the checkpoint as it was (not the previous)
    _fail_the_last_rename(monkeypatch)
    with pytest.raises(OSError, match="I/O error"):
        _save(tmp_path, 3)
    assert read_checkpoint(tmp_path / CHECKPOINT)[1]["step"] == 2


def test_without_hard_links_a_failed_save_puts_the_checkpoint_back(tmp_path, monkeypatch):
    """Where os.link fails, the old checkpoint is renamed to the previous name; if the new
    one then cannot take its place, the old one is moved back: still readable at its name."""
    _save(tmp_path, 1)

    def no_link(*args):
        raise OSError(errno.EPERM, "no hard links here")

    monkeypatch.setattr(os, "link", no_link)
    _save(tmp_path, 2)  # works by renaming
    assert read_checkpoint(tmp_path / PREVIOUS)[1]["step"] == 1
    _fail_the_last_rename(monkeypatch)
    with pytest.raises(OSError, match="I/O error"):
        _save(tmp_path, 3)
    assert read_checkpoint(tmp_path / CHECKPOINT)[1]["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]


def test_a_library_error_with_an_os_error_number_becomes_that_oserror(tmp_path, monkeypatch):
    def disk_full(tensors, path, metadata=None):
        raise RuntimeError("Error while serializing: IoError(No space left (os error 28))")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(OSError) as e:
        _save(tmp_path, 1)
    assert e.value.errno == 28 and e.value.filename.endswith(".tmp.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_ema_checks_its_decay_and_the_modules_it_is_given():
    net = torch.nn.Linear(2, 1)
    assert EMA(net).decay == 0.999
    EMA(net, 0.0)  # no averaging: allowed
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"EMA decay must be in \[0, 1\), got {bad}"):
            EMA(net, bad)
    ema = EMA(net, 0.5)
    four = torch.nn.Sequential(torch.nn.Linear(2, 1), torch.nn.Linear(1, 1))
    other = torch.nn.ModuleDict({"a": torch.nn.Linear(2, 1), "b": torch.nn.Linear(1, 1)})
    with pytest.raises(ValueError) as e:
        EMA(four, 0.5).update(other, 1000)
    assert str(e.value) == (
        "EMA.update got a module with other tensors than the one it was built for: missing "
        "['0.bias', '0.weight', '1.bias'], unexpected ['a.bias', 'a.weight', 'b.bias']"
    )
    with pytest.raises(KeyError) as e:
        ema.load_state_dict({"weight": torch.zeros(1, 2)})
    assert e.value.args == ("EMA state does not match the model's parameters",)
    before = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.add_(2.0)  # in place: the EMA follows the live tensor
    ema.update(net, 1000)  # past the warm-up: the decay is 0.5
    torch.testing.assert_close(ema.state_dict()["weight"], before + 1.0)


def test_a_failed_first_write_leaves_both_checkpoints_and_a_stepless_one_says_so(
    tmp_path, monkeypatch
):
    save_checkpoint(tmp_path, {"w": torch.ones(1)}, {})  # no step in its metadata
    _save(tmp_path, 2)

    def disk_full(tensors, path, metadata=None):
        raise RuntimeError("IoError(No space left (os error 28))")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    with pytest.raises(OSError):
        _save(tmp_path, 3)  # fails before the previous checkpoint is touched
    assert read_checkpoint(tmp_path / CHECKPOINT)[1]["step"] == 2
    assert read_checkpoint(tmp_path / PREVIOUS)[1] == {}
    (tmp_path / CHECKPOINT).write_bytes(b"\x10" * 40)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(tmp_path / CHECKPOINT)
    assert str(e.value).endswith(f"; last good: {tmp_path / PREVIOUS} (step ?)")
