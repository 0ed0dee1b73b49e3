"""The output folder of a training run: never overwrite a run by accident, never lose one.

Every training tool (``se-train-net``, ``se-lazy-train-net``, ``se-pretrain-imagenet``) calls
:func:`prepare_run_dir` before it builds anything:

* a folder that holds checkpoints of an earlier run is refused unless the user resumes it
  (``--resume``) or says to start over (``--overwrite``);
* ``--resume`` with nothing to resume is an error (a mistyped folder would otherwise train from
  scratch); resume-if-possible is a separate choice (``--resume-if-possible``, pretraining's
  ``--resume auto``);
* a folder that cannot be written is an error naming it, before hours of training;
* one run per folder: the main process holds a lock on ``OUTPUT_DIR/.run.lock`` (``flock``,
  which dies with the process: a killed run never blocks its resume; the other processes and
  machines of the run share the folder); a second run is an error naming the process that
  holds it;
* temporary files left by a save that was killed (ours only: the atomic checkpoint and marker
  writes) are removed.
"""

import contextlib
import fcntl
import fnmatch
import logging
import os
import re
import socket
import sys
import tempfile
import time
from typing import Iterable, List

from ..errors import SEDetectronError

__all__ = [
    "RunDirError",
    "check_writable",
    "existing_checkpoints",
    "lock_run_dir",
    "prepare_run_dir",
    "remove_stale_temp_files",
]

logger = logging.getLogger(__name__)

# The temporary names of our atomic writes: utils.atomic.atomic_write (".<name>.<rand><ext>.tmp",
# e.g. ".model_0000999.pth.k2j4_x9a.pth.tmp" from SEDetectionCheckpointer.save,
# ".last_checkpoint.k2j4_x9a.tmp" its marker, ".checkpoint.pth.k2j4_x9a.pth.tmp" pretraining) and
# the checkpoint name of earlier versions of SEDetectionCheckpointer.save
# (".model_0000999.pth.<12 hex>.tmp.pth"), which a killed save may have left behind.
_TEMP_FILE = re.compile(
    r"^\.(?:[^/]+\.pth\.[0-9a-f]{12}\.tmp\.pth"
    r"|last_checkpoint\.[a-z0-9_]+\.tmp"
    r"|(?P<name>[^/]+?)\.[a-z0-9_]{8}(?P<ext>\.[^./]+)?\.tmp)$"
)


class RunDirError(SEDetectronError, ValueError):
    """The output folder holds a run that would be overwritten, has nothing to resume, or cannot
    be written; the message names the folder and the flag that fixes it."""


def _is_own_temp_file(name: str) -> bool:
    match = _TEMP_FILE.match(name)
    if match is None:
        return False
    if match.group("name") is None:
        return True
    # atomic_write keeps the destination's extension: ".<name>.<rand><ext of name>.tmp"
    return (match.group("ext") or "") == os.path.splitext(match.group("name"))[1]


def remove_stale_temp_files(output_dir: str) -> List[str]:
    """Delete the temporary files a killed save of ours left in ``output_dir`` (not recursive).

    Call it before a run starts writing (no save of this run can be in progress).

    Args:
        output_dir: the run's folder (may not exist).

    Returns:
        list[str]: the removed paths.
    """
    if not os.path.isdir(output_dir):
        return []
    removed = []
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        if _is_own_temp_file(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(path)
    if removed:
        logger.warning(
            f"removed {len(removed)} temporary file(s) of an interrupted checkpoint save in "
            f"{output_dir}: {', '.join(os.path.basename(p) for p in removed)}"
        )
    return removed


def existing_checkpoints(output_dir: str, patterns: Iterable[str]) -> List[str]:
    """The file names in ``output_dir`` that match one of ``patterns`` (fnmatch), sorted."""
    if not os.path.isdir(output_dir):
        return []
    patterns = list(patterns)
    return sorted(
        name
        for name in os.listdir(output_dir)
        if any(fnmatch.fnmatchcase(name, p) for p in patterns)
        and os.path.isfile(os.path.join(output_dir, name))
    )


#: The lock file of a run folder.
LOCK_FILE = ".run.lock"

# folders locked by this process (real path -> file descriptor), kept open until it exits
_locks = {}


def _close_inherited_locks():
    # a forked child (a data-loader worker) must not keep the lock alive after its parent died
    for fd in _locks.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _locks.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def lock_run_dir(output_dir: str, key: str = "OUTPUT_DIR") -> None:
    """Take the folder's run lock for this process (kept until the process ends).

    The lock is ``flock`` on ``output_dir/.run.lock``: released by the kernel when the process
    ends in any way (forked data-loader workers close their copy), and seen across machines on
    NFS. The file names the holder (pid, host, command, start). Taking it again in the same
    process does nothing.

    Args:
        output_dir: the run's folder (created if needed).
        key: how the folder is named in messages.

    Raises:
        RunDirError: another process holds the lock; the message names it.
    """
    real = os.path.realpath(output_dir)
    if real in _locks:
        return
    check_writable(output_dir, key)
    path = os.path.join(output_dir, LOCK_FILE)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunDirError(
            f"{key} {output_dir!r} is in use by another run: {holder}. Wait for it to end or "
            f"stop it (a killed run releases the folder at once), or choose another {key}"
        ) from None
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    info = (
        f"process {os.getpid()} on {socket.gethostname()} ({command[:300]}), started "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode() + b"\n", 0)
    _locks[real] = fd


def check_writable(output_dir: str, key: str = "OUTPUT_DIR") -> None:
    """Create ``output_dir`` if needed and check that a file can be written in it.

    Raises:
        RunDirError: naming ``key``, the folder and the cause (read-only file system,
            permission denied, no space left, a file in the way).
    """
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=output_dir, prefix=".write_test.", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise RunDirError(
            f"{key} {output_dir!r} cannot be written ({e.strerror or e}): choose a writable folder"
        ) from None


def prepare_run_dir(
    output_dir: str,
    *,
    checkpoint_patterns: Iterable[str],
    resume_file: str,
    resume: bool = False,
    resume_if_possible: bool = False,
    overwrite: bool = False,
    key: str = "OUTPUT_DIR",
    resume_flag: str = "--resume",
    if_possible_flag: str = "--resume-if-possible",
    main_process: bool = True,
) -> bool:
    """Check the output folder of a training run; returns whether the run resumes.

    Args:
        output_dir: the run's folder.
        checkpoint_patterns: file names (fnmatch) of the checkpoints a run leaves there, e.g.
            ``("last_checkpoint", "model_*.pth")``; any of them there is a run to protect.
        resume_file: the file a resume starts from (``last_checkpoint``, ``checkpoint.pth``).
        resume: the user asked to resume (``--resume``): the folder must hold a checkpoint.
        resume_if_possible: resume if the folder holds a checkpoint, else start.
        overwrite: start over even if the folder holds checkpoints (they are replaced as the new
            run saves).
        key: how the folder is named in messages (``OUTPUT_DIR``, ``train.output_dir``, ...).
        resume_flag: how resuming is asked for, in messages.
        if_possible_flag: how resuming if possible is asked for, in messages.
        main_process: only the main process locks the folder (:func:`lock_run_dir`), writes
            and cleans up; others only decide.

    Returns:
        bool: True if the run continues the checkpoints in ``output_dir``.

    Raises:
        RunDirError: checkpoints there without resume/overwrite, resume with none there, a
            folder that cannot be written, or a folder in use by another run.
    """
    if overwrite and (resume or resume_if_possible):
        raise RunDirError(
            f"--overwrite and {resume_flag if resume else if_possible_flag} contradict each "
            "other: give one"
        )
    if main_process:
        lock_run_dir(output_dir, key)
    checkpoint_patterns = list(checkpoint_patterns)
    found = existing_checkpoints(output_dir, checkpoint_patterns)
    resumable = os.path.isfile(os.path.join(output_dir, resume_file))
    if resume and not resumable:
        raise RunDirError(
            f"{resume_flag}: nothing to resume in {key} {output_dir!r} (no {resume_file} "
            f"there{'; it holds ' + ', '.join(found[:4]) if found else ''}). Check the folder "
            f"name, drop {resume_flag} to start a new run, or use {if_possible_flag} to start "
            "when there is nothing to resume"
        )
    if found and not (resume or resume_if_possible or overwrite):
        raise RunDirError(
            f"{key} {output_dir!r} holds the checkpoints of an earlier run "
            f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}): continue it with "
            f"{resume_flag}, start over with --overwrite (replaces them), or choose another {key}"
        )
    if main_process:
        check_writable(output_dir, key)
        remove_stale_temp_files(output_dir)
    return resumable and (resume or resume_if_possible)
