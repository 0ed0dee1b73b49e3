"""The process group a launcher made: ``torchrun`` (``env://``) or SLURM's ``srun``.

``torchrun`` starts every process with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``srun`` with ``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID`` and the node list. :func:`launcher_environment` reads either
(torchrun's first) and :func:`join_launcher_group` joins the group (``env://`` rendezvous; under
SLURM the first node of the step and a port derived from the job id, unless ``MASTER_ADDR`` /
``MASTER_PORT`` are set) and makes Detectron2's per-machine group, so that
``detectron2.utils.comm`` works as under Detectron2's own ``launch``. Pretraining and detection
training share it.
"""

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Optional

import torch
import torch.distributed as dist
from detectron2.utils import comm

_made = {"local_group": False}

__all__ = ["LauncherEnvironment", "first_slurm_host", "join_launcher_group", "launcher_environment"]


@dataclass
class LauncherEnvironment:
    """Where this process stands in a job started by ``torchrun`` or ``srun``.

    Attributes:
        launcher: ``"torchrun"`` or ``"slurm"``.
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine.
        local_world_size: processes on this machine.
        master_addr: rendezvous host.
        master_port: rendezvous port.
    """

    launcher: str
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def first_slurm_host(nodelist: str) -> str:
    """The first host of a SLURM node list (``"gpu[03-05,09],cpu1"`` -> ``"gpu03"``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if match is None:
        raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
    prefix, ranges = match.group(1), match.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _tasks_on_first_node(text: str) -> Optional[int]:
    # SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE: "2(x3),1"
    match = re.match(r"(\d+)", text or "")
    return int(match.group(1)) if match else None


def launcher_environment(environ: Optional[Mapping[str, str]] = None):
    """The job this process was started in by ``torchrun`` or ``srun``, or None.

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        LauncherEnvironment or None: None outside such a job (``srun`` of one task included).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        return LauncherEnvironment(
            "torchrun",
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
        )
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        world = int(env["SLURM_NTASKS"])
        per_node = _tasks_on_first_node(
            env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "")
        )
        nodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_NNODES") or 1)
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        job_id = int(env.get("SLURM_JOB_ID", "0") or 0)
        return LauncherEnvironment(
            "slurm",
            rank=int(env["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            local_world_size=per_node or max(world // nodes, 1),
            master_addr=env.get("MASTER_ADDR") or first_slurm_host(nodelist),
            master_port=int(env.get("MASTER_PORT") or 20000 + job_id % 20000),
        )
    return None


def join_launcher_group(
    launch_env: LauncherEnvironment,
    backend: Optional[str] = None,
    timeout: Optional[timedelta] = None,
) -> None:
    """Join the launcher's process group (``env://``) and Detectron2's per-machine group.

    Args:
        launch_env: from :func:`launcher_environment`.
        backend: ``nccl``/``gloo``; None: NCCL when CUDA is available, else Gloo.
        timeout: the collectives' timeout (None: PyTorch's default).
    """
    os.environ.setdefault("MASTER_ADDR", launch_env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(launch_env.master_port))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(launch_env.local_rank)
    if not dist.is_initialized():
        kwargs = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            rank=launch_env.rank,
            world_size=launch_env.world_size,
            **kwargs,
        )
    if not _made["local_group"]:
        comm.create_local_process_group(launch_env.local_world_size)
        _made["local_group"] = True
    comm.synchronize()
