"""Checkpoints: one safetensors file per save, written atomically, nothing unpickled.

A checkpoint holds tensors under prefixes (model/, ema/, optim/, rng/) and JSON metadata:
the resolved run config, the step and the non-tensor parts of the training state. A save
writes a temporary file in the same folder, fsyncs it, keeps the previous checkpoint as
checkpoint.prev.safetensors (a hard link, so checkpoint.safetensors never goes missing) and
moves the new one into place with os.replace, so a crash at any moment leaves a complete
checkpoint.safetensors behind. A save that fails (disk full, I/O error, read-only folder)
removes its temporary files and leaves the checkpoint in place as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save_file
from torch import Tensor

from scorelab.errors import CheckpointError
from scorelab.files import fsync_dir, remove_quietly, temporary_name

FORMAT = "scorelab-checkpoint/1"
CHECKPOINT = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"


def flatten_state(obj: Any, prefix: str, tensors: dict[str, Tensor]) -> Any:
    """Move every tensor of a nested dict/list into tensors[key]; return the JSON skeleton."""
    if isinstance(obj, Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {
            "__dict__": [[k, flatten_state(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]
        }
    if isinstance(obj, (list, tuple)):
        return [flatten_state(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def unflatten_state(skeleton: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of flatten_state."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        return {k: unflatten_state(v, tensors) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def _keep_previous(path: Path, previous: Path) -> None:
    """Make previous a copy of path without path ever missing: a hard link moved over
    previous; where the file system has no hard links, path is renamed (and put back by the
    caller if the new file cannot replace it)."""
    link = temporary_name(previous)
    remove_quietly(link)
    with contextlib.suppress(OSError):
        if os.path.samefile(path, previous):
            # a save killed between its two renames left both names on one file; renaming a
            # hard link over another of the same file does nothing (POSIX) and would leave
            # the link behind
            return
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    except BaseException:
        remove_quietly(link)
        raise


def _save_file(tensors: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' save_file, its I/O errors raised as OSError (it reports them as its own
    SafetensorError, "... (os error 28)")."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except OSError:
        raise
    except Exception as e:
        code = re.search(r"os error (\d+)", str(e))
        if code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from e


def save_checkpoint(run_dir: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> Path:
    """Atomically write run_dir/checkpoint.safetensors, keeping the previous one. An OSError
    (disk full, I/O error, read-only folder) is raised after the temporary files are removed,
    with the checkpoint in place untouched."""
    for key, value in tensors.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"refusing to write a checkpoint with non-finite values in {key}")
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT
    tmp = temporary_name(path)
    previous = run_dir / PREVIOUS
    meta = {"format": FORMAT, **{k: json.dumps(v) for k, v in metadata.items()}}
    moved = False  # whether path was renamed to previous (no hard links) and must come back
    try:
        _save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if path.exists():
            _keep_previous(path, previous)
            moved = not path.exists()
        os.replace(tmp, path)
    except BaseException:
        if moved:
            with contextlib.suppress(OSError):
                os.replace(previous, path)
        remove_quietly(tmp)
        raise
    fsync_dir(run_dir)
    return path


def read_checkpoint(
    path: Path, prefixes: tuple[str, ...] | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read tensors (only those under the given prefixes, if any) and the decoded metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        # one read of one open file: safetensors' torch reader opens the path again for the
        # tensors, so a writer replacing the file in between (a reader beside a training run)
        # would pair one file's header with the other's bytes
        with open(path, "rb") as f:
            data = f.read()
        size = int.from_bytes(data[:8], "little")
        raw = json.loads(data[8 : 8 + size]).get("__metadata__") or {}
        if raw.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a scorelab checkpoint")
        tensors = {
            k: v
            for k, v in safetensors_load(data).items()
            if prefixes is None or k.startswith(prefixes)
        }
        meta = {k: json.loads(v) for k, v in raw.items() if k != "format"}
    except CheckpointError:
        raise
    except Exception:  # safetensors raises several types for truncated files
        previous = path.with_name(PREVIOUS)
        hint = ""
        if previous != path and previous.is_file():
            try:
                _, prev_meta = read_checkpoint(previous, prefixes=("-",))
                hint = f"; last good: {previous} (step {prev_meta.get('step', '?')})"
            except CheckpointError:
                hint = f"; {previous} is unreadable too"
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt{hint}") from None
    return tensors, meta


def load_state_dict_checked(module: torch.nn.Module, state: dict[str, Tensor], what: str) -> None:
    """Load weights, explaining missing, unexpected or mis-shaped ones in words."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} of another shape (e.g. {shapes[0]})")
        raise CheckpointError(
            f"{what} does not match the model built from its config: " + "; ".join(parts)
        )
    module.load_state_dict(state)


def describe_last_checkpoint(run_dir: Path) -> tuple[str, int | None]:
    """What run_dir holds to resume from, read from the file (not assumed): (words, step),
    step None when there is no readable checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return f"no checkpoint was written in {run_dir}", None
    try:
        _, meta = read_checkpoint(path, prefixes=("-",))  # the metadata only
    except CheckpointError as e:
        return str(e), None
    step = int(meta.get("step", 0))
    return f"the last checkpoint, {path} (step {step}), is intact", step
