"""Atomic file writes: a reader, or a crash mid-write, never sees a partially written file.

Every file se_detectron writes for users to keep (checkpoints, metrics, plots, converted weights,
evaluation results) goes through :func:`atomic_write`: the content is written to a temporary file
in the destination folder, flushed to disk, then renamed over the destination.
"""

import errno
import json
import os
import shutil
import tempfile
from typing import IO, Any, Callable, Optional

from ..errors import SEDetectronError, environment_os_error

__all__ = [
    "DiskFullError",
    "atomic_save_figure",
    "atomic_write",
    "atomic_write_json",
    "disk_full_error",
    "publish_directory",
    "read_manifest",
    "swap_directory_into_place",
]


class DiskFullError(SEDetectronError, OSError):
    """No space left (or quota exceeded) while writing a file; says which earlier file was kept."""


def disk_full_error(exc: BaseException, path: str, kept: Optional[str]) -> Optional[DiskFullError]:
    """The error to raise when writing ``path`` failed with ``exc`` because the disk is full.

    Args:
        exc: what the write raised (``torch.save`` wraps the file's ``OSError`` in a
            ``RuntimeError``: the cause chain is searched).
        path: the file being written.
        kept: the earlier file that is intact (the one ``path`` would have replaced, or the last
            checkpoint), or None.

    Returns:
        DiskFullError or None: None if ``exc`` was not caused by ``ENOSPC`` / ``EDQUOT``.
    """
    cause = environment_os_error(exc)
    if cause is None or cause.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    folder = os.path.dirname(os.path.abspath(path))
    kept_text = f"the previous file {kept!r} was kept intact" if kept else "nothing was replaced"
    error = DiskFullError(
        f"{cause.strerror or 'no space left on device'} while saving {path!r}: {kept_text} "
        f"(the partial file was removed). Free space in {folder!r} and resume the run"
    )
    error.errno = cause.errno
    return error


def atomic_write(
    path: str,
    write: Callable[[IO], None],
    binary: bool = True,
    kept: Optional[str] = None,
) -> None:
    """Write ``path`` atomically.

    Args:
        path: the destination file (its folder is created if needed).
        write: called with the open temporary file; writes the content.
        binary: open the temporary file in binary (``"wb"``) or text (``"w"``) mode.
        kept: the file a failed write leaves intact, named by its :class:`DiskFullError` (e.g.
            the last checkpoint); default ``path`` itself when it exists.

    Raises:
        DiskFullError: no space left (the temporary file is removed).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1] + ".tmp"  # keep the extension for writers that sniff it
    try:
        fd, tmp = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=suffix
        )
    except OSError as e:  # read-only folder, permission denied, full disk: name the destination
        raise OSError(e.errno, f"{e.strerror}: cannot write {path!r}") from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if kept is None and os.path.exists(path):
            kept = path
        full = disk_full_error(e, path, kept)
        if full is not None:
            raise full from e
        raise


def atomic_write_json(path: str, obj: Any, **json_kwargs) -> None:
    """``json.dump(obj)`` to ``path`` atomically (``json_kwargs`` go to ``json.dump``)."""
    atomic_write(path, lambda f: json.dump(obj, f, **json_kwargs), binary=False)


def atomic_save_figure(fig, path: str, **savefig_kwargs) -> None:
    """``fig.savefig`` to ``path`` atomically; the format is taken from ``path``'s extension."""
    fmt = os.path.splitext(path)[1].lstrip(".") or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def swap_directory_into_place(
    tmp: str, root: str, same: Optional[Callable[[str, str], bool]] = None
) -> None:
    """Rename the finished folder ``tmp`` to ``root``, replacing an outdated ``root``.

    A reader sees either the old folder or the complete new one, never a half-written one.

    Args:
        tmp: the complete new folder, in the same parent folder as ``root``.
        root: the destination.
        same: ``same(root, tmp)`` tells whether a folder that another process put at ``root``
            in the meantime is equivalent to ``tmp`` (then it is kept); without it such a race
            raises the ``OSError``.
    """
    old = None
    if os.path.exists(root):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.old-", dir=os.path.dirname(root))
        os.rmdir(old)
        os.rename(root, old)
    try:
        os.rename(tmp, root)
    except OSError:
        if same is None or not same(root, tmp):
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(root: str, name: str = "manifest.json") -> Optional[dict]:
    """The JSON manifest ``root/name`` of a folder written by :func:`publish_directory`, or None
    when it is missing or unreadable."""
    try:
        with open(os.path.join(root, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def publish_directory(tmp: str, root: str, manifest: dict, name: str = "manifest.json") -> None:
    """Finish the folder ``tmp`` with its manifest and swap it into place at ``root``.

    The manifest is written last, so a folder with one is complete; a folder that another
    process published in the meantime with an equal manifest is kept.

    Args:
        tmp: the new folder's content, in the same parent folder as ``root``.
        root: the destination.
        manifest: JSON-serialisable description of the content (parameters, counts).
        name: the manifest's file name inside the folder.
    """
    with open(os.path.join(tmp, name), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.chmod(tmp, 0o755)
    swap_directory_into_place(
        tmp, root, same=lambda a, b: read_manifest(a, name) == read_manifest(b, name)
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
