"""Process-group helpers: ``torchrun`` (env://), ``srun``, or a single plain process.

Under ``torchrun --nproc_per_node N`` (or ``srun`` with several tasks) :func:`init_distributed`
joins the launcher's group (:func:`se_detectron.utils.distributed.join_launcher_group`) with NCCL
on CUDA devices and Gloo otherwise. Without those variables everything runs as rank 0 of a
world of 1. Rank, world size, main-process test and barrier are Detectron2's
:mod:`detectron2.utils.comm` (the same functions the detection trainer uses); this module only
joins the launcher's group and sums tensors.
"""

from typing import Optional

import torch
import torch.distributed as dist
from detectron2.utils import comm

from ..utils.distributed import join_launcher_group, launcher_environment

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
    launch_env = launcher_environment()
    if launch_env is None:
        if dev.type == "cuda" and dev.index is not None:
            torch.cuda.set_device(dev)
        return DistInfo(0, 1, 0, dev, None)

    if dev.type == "cuda":
        dev = torch.device("cuda", launch_env.local_rank)
        torch.cuda.set_device(dev)
    if backend is None:
        backend = "nccl" if dev.type == "cuda" else "gloo"
    join_launcher_group(launch_env, backend)
    return DistInfo(launch_env.rank, launch_env.world_size, launch_env.local_rank, dev, backend)


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
