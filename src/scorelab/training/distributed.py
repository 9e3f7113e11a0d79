"""Data-parallel training from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, ...).

`torchrun --nproc-per-node N -m scorelab train ...` starts N processes; each calls
init_from_env, which joins the process group (gloo on the CPU, NCCL on GPUs). The trainer
then splits every global batch into shards, one set per rank, and DistributedDataParallel
averages the gradients, so the step equals a single-process step on the same global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "cpu") -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or world()[1] > 1:
        return world()
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo")
    return world()


def local_device(device: str) -> torch.device:
    """The device of this rank: cuda means cuda:LOCAL_RANK under torchrun."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return d


def is_distributed() -> bool:
    """Whether this process belongs to an initialized process group."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest value over ranks (identity outside a process group)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_reduce_mean(values: list[float], device: torch.device) -> list[float]:
    """The mean over ranks of a few floats (identity in a single process)."""
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world()[1]).tolist()


def barrier() -> None:
    """Wait for every rank (nothing outside a process group). Only where all ranks arrive."""
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
