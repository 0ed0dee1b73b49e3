"""Which process of a job stopped responding, when a collective operation times out.

A stopped or hung process makes the others wait in their next collective (the gradient
all-reduce) until the process group's timeout (``--dist-timeout``); PyTorch then reports only
"Timed out waiting ... for recv", without saying who is missing. Each training process of a
multi-process run therefore keeps a heartbeat file in ``OUTPUT_DIR/.heartbeat/`` (rank, host,
pid, time; rewritten every second by a thread, which stops with the process).
:func:`collective_failure` turns the timeout into :class:`CollectiveFailure` naming the ranks
whose heartbeat is old, or whose process is stopped or gone on this machine.
"""

import contextlib
import json
import os
import signal
import socket
import threading
import time
from typing import Dict, List, Optional, Sequence

import torch.distributed as dist
from detectron2.utils import comm

__all__ = [
    "CollectiveFailure",
    "Heartbeat",
    "as_collective_failure",
    "collective_failure",
    "is_collective_failure",
    "naming_stopped_ranks",
    "set_collective_timeout",
    "start_heartbeat",
]

_MARKERS = (
    "timed out",
    "timeout",
    "connection closed by peer",
    "connection reset by peer",
    "broken pipe",
)


class CollectiveFailure(BaseException):
    """A collective operation failed because a process stopped; the message names it.

    A ``BaseException`` so that Detectron2's training loop passes it on without logging a
    traceback; the tools print it as one ``error:`` line (see
    :func:`~se_detectron.engine.train_net.run_reporting_errors`).

    Attributes:
        stopped: the ranks found stopped.
        reporter: whether this process prints the message (the lowest rank still running).
        local_pids: the pids of the stopped processes on this machine.
    """

    def __init__(
        self, message: str, stopped: List[int], reporter: bool, local_pids: Sequence[int] = ()
    ):
        super().__init__(message)
        self.stopped = stopped
        self.reporter = reporter
        self.local_pids = list(local_pids)

    def end_stopped_local_processes(self) -> None:
        """SIGKILL the stopped processes of this job on this machine (a stopped process cannot
        act on the launcher's SIGTERM, which would wait for it)."""
        for pid in self.local_pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def is_collective_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a distributed operation that timed out or lost its peer."""
    if isinstance(exc, (getattr(dist, "DistBackendError", RuntimeError), RuntimeError)):
        text = str(exc).lower()
        return any(m in text for m in _MARKERS)
    return False


class Heartbeat:
    """Rewrite ``folder/rank_<rank>.json`` every ``interval`` seconds from a daemon thread.

    Args:
        folder: the run's heartbeat folder (shared by all machines, like ``OUTPUT_DIR``).
        rank: this process's global rank.
        interval: seconds between writes.
    """

    def __init__(self, folder: str, rank: int, interval: float = 1.0):
        self.folder = folder
        self.rank = rank
        self.interval = interval
        self.path = os.path.join(folder, f"rank_{rank}.json")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _write(self) -> None:
        info = {
            "rank": self.rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
        }
        temp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(temp, "w") as f:
                json.dump(info, f)
            os.replace(temp, self.path)
        except OSError:  # a full or vanished folder: the heartbeat is advisory
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def start(self) -> "Heartbeat":
        os.makedirs(self.folder, exist_ok=True)
        self._write()
        self._thread = threading.Thread(
            target=self._run, name="se_detectron-heartbeat", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()


def _process_state(pid: int) -> Optional[str]:
    """``/proc`` state letter of a local process (``T``: stopped), ``"gone"``, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
    except (OSError, IndexError):
        return None


def read_heartbeats(folder: str, world_size: int) -> Dict[int, Optional[dict]]:
    """Every rank's last heartbeat (None: none written)."""
    beats: Dict[int, Optional[dict]] = {}
    for rank in range(world_size):
        try:
            with open(os.path.join(folder, f"rank_{rank}.json")) as f:
                beats[rank] = json.load(f)
        except (OSError, ValueError):
            beats[rank] = None
    return beats


def collective_failure(
    exc: BaseException, folder: str, rank: int, world_size: int, timeout_s: float
) -> CollectiveFailure:
    """The :class:`CollectiveFailure` for a failed collective of process ``rank``.

    Args:
        exc: the error PyTorch raised.
        folder: the run's heartbeat folder.
        rank: this process's rank.
        world_size: the number of processes.
        timeout_s: the process group's timeout (``--dist-timeout``).
    """
    now, host = time.time(), socket.gethostname()
    stopped, details, local_pids = [], [], []
    for other, beat in read_heartbeats(folder, world_size).items():
        if other == rank or beat is None:
            continue
        age = now - float(beat["time"])
        state = _process_state(int(beat["pid"])) if beat.get("host") == host else None
        if state in ("T", "t", "gone", "Z") or age > max(5.0, min(timeout_s / 2, 60.0)):
            stopped.append(other)
            if state in ("T", "t"):
                local_pids.append(int(beat["pid"]))
            how = {"gone": "has exited", "Z": "has exited"}.get(
                state, "is stopped" if state in ("T", "t") else f"silent for {age:.0f} s"
            )
            details.append(f"rank {other} (pid {beat['pid']} on {beat['host']}) {how}")
    live = [r for r in range(world_size) if r not in stopped]
    reporter = rank == (live[0] if live else 0)
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if details:
        message = (
            f"{'; '.join(details)}: the job was ended after a collective operation waited "
            f"{timeout_s:.0f} s (--dist-timeout) or lost its peer ({first_line})"
        )
    else:
        message = (
            f"a collective operation of rank {rank} failed after waiting up to {timeout_s:.0f} s "
            f"(--dist-timeout): {first_line}; no other rank was found stopped"
        )
    return CollectiveFailure(message, stopped, reporter, local_pids)


_job = {"folder": None, "timeout_s": 1800.0, "beat": None}


def set_collective_timeout(seconds: float) -> None:
    """Record the process group's timeout (``--dist-timeout``) for the messages."""
    _job["timeout_s"] = float(seconds)


def start_heartbeat(output_dir: str, rank: int, world_size: int) -> None:
    """Start this process's heartbeat in ``output_dir/.heartbeat`` (multi-process runs only)."""
    if world_size <= 1 or _job["beat"] is not None:
        return
    _job["folder"] = os.path.join(output_dir, ".heartbeat")
    _job["beat"] = Heartbeat(_job["folder"], rank).start()


def as_collective_failure(exc: BaseException, rank: int, world_size: int):
    """``exc`` as a :class:`CollectiveFailure` if it is a failed collective of a multi-process
    run with a heartbeat, else None."""
    if world_size <= 1 or _job["folder"] is None or not is_collective_failure(exc):
        return None
    return collective_failure(exc, _job["folder"], rank, world_size, _job["timeout_s"])


@contextlib.contextmanager
def naming_stopped_ranks():
    """Run a block of collective operations; a failed one raises :class:`CollectiveFailure`
    naming the process that stopped (see :func:`as_collective_failure`)."""
    try:
        yield
    except RuntimeError as e:
        failure = as_collective_failure(e, comm.get_rank(), comm.get_world_size())
        if failure is None:
            raise
        raise failure from e
