"""torchrun's process group for ``evaluate`` and dataset ``explain``: this rank and the world,
joining, the shared lock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from captum_gscorecam.evaluation.store import locked

__all__ = ["init_distributed", "rank_and_world", "run_lock"]


def rank_and_world() -> tuple[int, int]:
    """The rank of this process and the world size; (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> str:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo otherwise).

    Returns this rank's device: ``cuda:LOCAL_RANK`` for a CUDA device, else ``device``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return device


@contextmanager
def run_lock(out_dir: Path, rank: int, world: int, command: str = "evaluate") -> Iterator[None]:
    """The folder's lock (:func:`~captum_gscorecam.evaluation.store.locked`, ``<command>.lock``),
    held by rank 0 for the block; every rank raises the same ValueError if another run holds it.
    """
    with ExitStack() as stack:
        error = None
        if rank == 0:
            try:
                stack.enter_context(locked(out_dir, command))
            except ValueError as refused:
                error = str(refused)
        if world > 1:
            shared = [error]
            dist.broadcast_object_list(shared, src=0)
            error = shared[0]
        if error is not None:
            raise ValueError(error)
        yield
