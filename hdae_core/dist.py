"""Distributed helpers: rank, world size, print0; one process when not launched by torchrun."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def init(device: str | None = None) -> torch.device:
    """Join the torchrun process group when its variables are set; return this process's device."""
    want_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1 and not is_dist():
        if want_cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
    if want_cuda:
        return torch.device("cuda", local_rank() if is_dist() else torch.cuda.current_device())
    return torch.device(device or "cpu")


def barrier() -> None:
    if is_dist():
        dist.barrier()


def print0(*args, **kw) -> None:
    if rank() == 0:
        print(*args, **kw, flush=True)


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy)."""
    if not is_dist():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()
