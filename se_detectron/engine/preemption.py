"""Preemption: a scheduler's signal ends training after the current iteration, with a checkpoint.

SLURM and most schedulers send ``SIGTERM`` some time before they kill a job (``SIGUSR1`` is the
usual ``--signal`` choice for an earlier warning; submitit uses ``SIGUSR2``). Training processes
install :func:`install_preemption_handlers`: the first such signal is only recorded.
:class:`PreemptionHook`, last hook of every iteration, makes all processes agree (one small
all-reduce) so that they stop after the same iteration, has the checkpoint written on every
process's behalf (:class:`~se_detectron.engine.resume.ProcessStateCheckpointer`) and raises
:class:`TrainingPreempted`; the tools then exit with :data:`PREEMPTED_EXIT_STATUS`, and
``--resume-if-possible`` continues exactly.
"""

import logging
import signal
from typing import Iterable, Optional

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

from .heartbeat import naming_stopped_ranks

__all__ = [
    "PREEMPTED_EXIT_STATUS",
    "PREEMPTION_SIGNALS",
    "PreemptionHook",
    "TrainingPreempted",
    "agreed_preemption_signal",
    "install_preemption_handlers",
    "preemption_requested",
    "request_preemption",
]

logger = logging.getLogger(__name__)

#: The exit status of a preempted run. A checkpoint of its last iteration was written and
#: ``--resume-if-possible`` continues it (``EX_TEMPFAIL`` of sysexits.h, "try again later").
PREEMPTED_EXIT_STATUS = 75

#: The signals that end training after the current iteration with a checkpoint.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

_requested = {"signum": 0, "agreed": 0}


class TrainingPreempted(BaseException):
    """Training stopped on a signal after a checkpoint was written.

    A ``BaseException`` (like ``KeyboardInterrupt``): Detectron2's loop lets it through without
    logging a traceback, and still runs every hook's ``after_train``.

    Args:
        signum: the signal received.
        iteration: the last iteration done (and saved).
        checkpoint: the checkpoint file written (main process) or None.
    """

    def __init__(self, signum: int, iteration: int, checkpoint: Optional[str] = None):
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint
        super().__init__(self.message())

    def message(self) -> str:
        name = signal.Signals(self.signum).name if self.signum else "a signal"
        where = f" ({self.checkpoint})" if self.checkpoint else ""
        return (
            f"preempted by {name}: stopped after iteration {self.iteration}, checkpoint "
            f"written{where}; continue with --resume-if-possible (exit status "
            f"{PREEMPTED_EXIT_STATUS})"
        )


def request_preemption(signum: int, frame=None) -> None:
    """Record a preemption request (the signal handler; the first signal is kept)."""
    if not _requested["signum"]:
        _requested["signum"] = int(signum)


def preemption_requested() -> int:
    """The signal number of the pending preemption request, 0 if none."""
    return _requested["signum"]


def agreed_preemption_signal() -> int:
    """The signal all processes stopped training for (0: none), set by :class:`PreemptionHook`."""
    return _requested["agreed"]


def install_preemption_handlers(signals: Iterable[int] = PREEMPTION_SIGNALS) -> None:
    """Make ``signals`` request a preemption instead of ending the process at once.

    Args:
        signals: signal numbers (default :data:`PREEMPTION_SIGNALS`).
    """
    _requested["signum"] = _requested["agreed"] = 0
    for signum in signals:
        signal.signal(signum, request_preemption)


class PreemptionHook(HookBase):
    """The last hook of an iteration: stop all processes together after a preemption signal.

    Every iteration the processes share whether one of them got a signal (a one-element
    all-reduce over gloo); then each has the checkpoint hook save the iteration (unless it just
    did) and raises :class:`TrainingPreempted`. A signal during the last iteration lets training
    finish normally.

    Args:
        checkpoint_hook: the run's
            :class:`~se_detectron.engine.resume.ProcessStateCheckpointer`.
    """

    def __init__(self, checkpoint_hook):
        self.checkpoint_hook = checkpoint_hook
        self._group = None

    def before_train(self):
        if comm.get_world_size() > 1 and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # a CPU tensor on NCCL jobs

    def _agreed_signal(self) -> int:
        signum = preemption_requested()
        if comm.get_world_size() == 1:
            return signum
        flag = torch.tensor([signum], dtype=torch.int64)
        with naming_stopped_ranks():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(flag.item())

    def after_step(self):
        signum = self._agreed_signal()
        iteration = self.trainer.iter
        if not signum or iteration >= self.trainer.max_iter - 1:
            return
        hook = self.checkpoint_hook
        if hook.last_saved_iter != iteration:
            hook.save_now(iteration)
        checkpoint = None
        if comm.is_main_process():
            checkpoint = hook.checkpointer.get_checkpoint_file()
        comm.synchronize()
        _requested["agreed"] = signum
        raise TrainingPreempted(signum, iteration, checkpoint)
