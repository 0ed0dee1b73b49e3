"""Process-group helpers: ``torchrun`` (env://) or a single plain process.

Under ``torchrun --nproc_per_node N`` the environment carries ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` then joins the group with NCCL on CUDA devices and Gloo
otherwise. Without those variables everything runs as rank 0 of a world of 1. Rank, world size,
main-process test and barrier are Detectron2's :mod:`detectron2.utils.comm` (the same functions
the detection trainer uses); this module only joins the ``torchrun`` group and sums tensors.
"""

import os
from typing import Optional

import torch
import torch.distributed as dist
from detectron2.utils import comm

__all__ = ["DistInfo", "all_reduce_sum", "cleanup_distributed", "init_distributed"]


class DistInfo:
    """Where this process stands in the job.

    Args:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine (selects the CUDA device).
        device: the torch device this process computes on.
        backend: the process-group backend, or None when not distributed.
    """

    def __init__(
        self,
        rank: int,
        world_size: int,
        local_rank: int,
        device: torch.device,
        backend: Optional[str],
    ):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.device = device
        self.backend = backend

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return (
            f"DistInfo(rank={self.rank}, world_size={self.world_size}, "
            f"local_rank={self.local_rank}, device={self.device}, backend={self.backend})"
        )


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def init_distributed(device: str, backend: Optional[str] = None) -> DistInfo:
    """Join the process group if launched by ``torchrun`` and pick this process's device.

    Args:
        device: ``"cpu"``, ``"cuda"`` (or ``"cuda:K"``, ignored under torchrun: each process uses
            ``cuda:LOCAL_RANK``) or any other torch device type.
        backend: process-group backend; None picks ``nccl`` for CUDA and ``gloo`` otherwise.

    Returns:
        DistInfo: rank, world size, device and backend of this process.
    """
    dev = torch.device(device)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        return DistInfo(0, 1, 0, dev, None)

    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(rank, world_size, local_rank, dev, backend)


def cleanup_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        comm.synchronize()
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place, and return it.

    Args:
        tensor: on this process's device (NCCL needs CUDA tensors).
    """
    if comm.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
