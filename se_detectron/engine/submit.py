"""``tools/submit_train.py``: submit ``train_net`` / ``lazy_train_net`` to SLURM with submitit.

One SLURM task per GPU (``--nodes`` x ``--gpus-per-node`` tasks); each task joins the job's
process group (rank, world size and the first node from submitit's ``JobEnvironment``, as
:func:`se_detectron.utils.distributed.join_launcher_group` does for ``srun``) and trains as
``tools/train_net.py`` would. Preemption, as DETR's and MAE's ``run_with_submit.py`` do it, but
without losing the iterations since the last periodic checkpoint: submitit's signal
(``SIGUSR2`` before the time limit or on preemption, ``--signal`` below) ends training after the
current iteration with a checkpoint on every process's behalf, then submitit requeues the job,
which continues with ``--resume-if-possible`` (exactly, see :mod:`se_detectron.engine.resume`).
``SIGTERM``/``SIGUSR1`` save and exit with status 75 without requeueing (``scancel``).

``--local`` runs the job with submitit's ``LocalExecutor`` (local processes, same code path),
for a try on one machine.
"""

import argparse
import copy
import os
import signal
import sys
from typing import List, Optional

import torch

from ..errors import exit_on_user_error
from . import lazy_train_net, train_net
from .preemption import PREEMPTED_EXIT_STATUS, agreed_preemption_signal
from .train_net import UserError, argument_parser

__all__ = ["TrainingJob", "cli", "submit", "submit_argument_parser"]


def submit_argument_parser() -> argparse.ArgumentParser:
    """``tools/train_net.py``'s arguments plus the job's (``--nodes``, ``--gpus-per-node``, ...)."""
    parser = argument_parser(
        epilog="Example: python tools/submit_train.py --nodes 2 --gpus-per-node 8 --partition "
        "learnfair --timeout 4320 --job-dir /checkpoint/$USER/jobs --config-file "
        "COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml OUTPUT_DIR /checkpoint/$USER/se_r50"
    )
    job = parser.add_argument_group("job (submitit)")
    job.add_argument("--nodes", type=int, default=1, help="machines (default 1)")
    job.add_argument(
        "--gpus-per-node", type=int, default=8, help="GPUs = training tasks per machine"
    )
    job.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per task")
    job.add_argument("--mem-gb", type=int, default=0, help="memory per machine (0: default)")
    job.add_argument("--timeout", type=int, default=4320, help="time limit in minutes")
    job.add_argument("--partition", default="", help="SLURM partition")
    job.add_argument("--constraint", default="", help="SLURM constraint, e.g. volta32gb")
    job.add_argument("--comment", default="", help="SLURM comment")
    job.add_argument("--job-name", default="se_detectron", help="SLURM job name")
    job.add_argument(
        "--job-dir",
        default="",
        help="submitit's folder for the job's logs and pickles (default: OUTPUT_DIR/submitit)",
    )
    job.add_argument(
        "--max-requeues", type=int, default=10, help="times a timed-out job is requeued"
    )
    job.add_argument(
        "--lazy", action="store_true", help="train a LazyConfig (tools/lazy_train_net.py)"
    )
    job.add_argument(
        "--local",
        action="store_true",
        help="run with submitit's LocalExecutor on this machine (--gpus-per-node processes)",
    )
    return parser


def _preempt_signal() -> int:
    # submitit's documented choice of the signal (SUBMITIT_PREEMPT_SIGNAL, default USR2)
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


class TrainingJob:
    """The callable submitit runs in every task: one training process of the job.

    Args:
        args: the parsed :func:`submit_argument_parser` arguments.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def __call__(self):
        import submitit

        env = submitit.JobEnvironment()
        local = os.environ.get("SUBMITIT_EXECUTOR") == "local"
        job_id = int("".join(c for c in str(env.job_id) if c.isdigit()) or 0)
        os.environ.update(
            RANK=str(env.global_rank),
            WORLD_SIZE=str(env.num_tasks),
            LOCAL_RANK=str(env.local_rank),
            LOCAL_WORLD_SIZE=str(max(env.num_tasks // max(env.num_nodes, 1), 1)),
        )
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1" if local else env.hostnames[0])
        os.environ.setdefault("MASTER_PORT", str(20000 + job_id % 20000))
        args = copy.copy(self.args)
        args.num_gpus, args.num_machines, args.machine_rank, args.dist_url = 1, 1, 0, "env://"
        usr = _preempt_signal()
        args.preemption_signals = (usr,)
        requeue = signal.getsignal(usr)  # submitit's checkpoint-and-requeue handler
        main = lazy_train_net.main if args.lazy else train_net.main
        try:
            return train_net.launch_reporting_errors(main, args)
        except SystemExit as e:
            preempted = e.code == PREEMPTED_EXIT_STATUS
            requeue_now = preempted and agreed_preemption_signal() == usr and callable(requeue)
            if requeue_now and env.global_rank == 0:
                requeue(usr, None)  # calls checkpoint(), requeues and exits
            raise

    def checkpoint(self):
        """The job to requeue: the same training, resumed (submitit calls it on preemption)."""
        import submitit

        args = copy.copy(self.args)
        args.resume, args.resume_if_possible, args.overwrite = False, True, False
        return submitit.helpers.DelayedSubmission(TrainingJob(args))


def _output_dir(args) -> str:
    if args.lazy:
        for opt in args.opts:
            if opt.startswith("train.output_dir="):
                return opt.split("=", 1)[1]
        return "output"
    for key, value in zip(args.opts[::2], args.opts[1::2]):
        if key == "OUTPUT_DIR":
            return value
    return "output"


def submit(args: argparse.Namespace):
    """Submit the training job; returns submitit's ``Job``.

    Raises:
        UserError: bad job options, or submitit is not installed.
    """
    try:
        import submitit
    except ImportError:
        raise UserError(
            "tools/submit_train.py needs submitit: pip install 'se_detectron[slurm]' "
            "(or pip install submitit)"
        ) from None
    for name in ("nodes", "gpus_per_node", "timeout"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be >= 1")
    if args.local and args.nodes != 1:
        raise UserError(f"--local runs on this machine: --nodes must be 1, got {args.nodes}")
    folder = args.job_dir or os.path.join(_output_dir(args), "submitit")
    if args.local:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(
            timeout_min=args.timeout,
            tasks_per_node=args.gpus_per_node,
            gpus_per_node=args.gpus_per_node if torch.cuda.is_available() else 0,
        )
    else:
        executor = submitit.AutoExecutor(folder=folder, slurm_max_num_timeout=args.max_requeues)
        kwargs = {}
        if args.partition:
            kwargs["slurm_partition"] = args.partition
        if args.constraint:
            kwargs["slurm_constraint"] = args.constraint
        if args.comment:
            kwargs["slurm_comment"] = args.comment
        if args.mem_gb:
            kwargs["mem_gb"] = args.mem_gb
        executor.update_parameters(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            tasks_per_node=args.gpus_per_node,  # one task per GPU
            cpus_per_task=args.cpus_per_task,
            timeout_min=args.timeout,
            slurm_signal_delay_s=120,
            name=args.job_name,
            **kwargs,
        )
    job = executor.submit(TrainingJob(args))
    print(f"Submitted job {job.job_id} (logs in {folder})", flush=True)
    return job


def cli(argv: Optional[List[str]] = None) -> None:
    """Parse ``argv`` and submit the training job."""
    args = submit_argument_parser().parse_args(argv)
    exit_on_user_error(submit, args)


if __name__ == "__main__":  # pragma: no cover
    cli(sys.argv[1:])
