"""The common base of the errors a user can cause (config, files, data, weights), and how every
command-line tool reports them.

Every se_detectron exception derives from :class:`SEDetectronError` *and* from the built-in type
it has always been (``ValueError``, ``RuntimeError``, ...), so ``except SEDetectronError`` catches
them all and existing ``except ValueError`` code keeps working.

:func:`print_user_error` is the one reporting path of the tools (through
:func:`exit_on_user_error` or :func:`user_error_status`): a user error (:data:`USER_ERRORS`, or an
``OSError`` of the environment such as a full disk or a read-only folder, see
:func:`environment_os_error`) becomes one ``error: ...`` line on stderr and exit status 2. This
module imports nothing from the package.
"""

import errno
import sys
from typing import Any, Callable, Optional

__all__ = [
    "ENVIRONMENT_ERRNOS",
    "USER_ERRORS",
    "PretrainError",
    "SEDetectronError",
    "environment_os_error",
    "exit_on_user_error",
    "print_user_error",
    "user_error_message",
    "user_error_status",
]


class SEDetectronError(Exception):
    """Base class of se_detectron's user-facing errors; the message names what to fix."""


class PretrainError(SEDetectronError, ValueError):
    """An invalid pretraining option or data folder (``tools/pretrain_imagenet.py``)."""


#: Errors a user can cause (config, files, data, weights, diverging loss), reported as one line.
USER_ERRORS = (SEDetectronError, FileNotFoundError, FloatingPointError)

#: ``OSError`` numbers that describe the user's environment, not a bug (no space left, quota,
#: read-only file system, permission denied, not a directory).
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)


def environment_os_error(exc: BaseException) -> Optional[OSError]:
    """The ``OSError`` with an :data:`ENVIRONMENT_ERRNOS` number that caused ``exc``, if any.

    ``exc`` itself and its ``__cause__`` / ``__context__`` chain are searched: ``torch.save``
    reports a full disk as a ``RuntimeError`` whose context is the file's ``OSError``.

    Args:
        exc: the exception.

    Returns:
        OSError or None.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def user_error_message(exc: BaseException) -> Optional[str]:
    """``exc`` as the one line a tool prints, or None if it is not a user error (a bug).

    Args:
        exc: the exception.
    """
    if isinstance(exc, USER_ERRORS):
        text = str(exc)
    else:
        cause = environment_os_error(exc)
        if cause is None:
            return None
        text = cause.strerror or str(cause)
        text += f": {cause.filename!r}" if cause.filename else ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        lines = lines[-1:]  # re-raised by a DataLoader worker: the original "Type: message"
    return " | ".join(lines)


def print_user_error(exc: BaseException) -> bool:
    """Print ``error: <message>`` on stderr if ``exc`` is a user error; returns whether it was."""
    message = user_error_message(exc)
    if message is not None:
        print(f"error: {message}", file=sys.stderr, flush=True)
    return message is not None


def user_error_status(function: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Run ``function(*args, **kwargs)``; its exit status, or 2 after a user error's one line.

    For tools whose entry point returns an exit status: ``function``'s result if it is an int,
    else 0. Exceptions that are not user errors propagate.
    """
    try:
        result = function(*args, **kwargs)
    except Exception as e:
        if not print_user_error(e):
            raise
        return 2
    return result if isinstance(result, int) else 0


def exit_on_user_error(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Return ``function(*args, **kwargs)``; a user error exits with one ``error:`` line.

    Args:
        function: the tool's main function.
        *args: its positional arguments.
        **kwargs: its keyword arguments.

    Raises:
        SystemExit: status 2 after printing ``error: <message>`` on stderr, for an exception
            :func:`user_error_message` recognises; other exceptions propagate (a traceback).
    """
    try:
        return function(*args, **kwargs)
    except Exception as e:
        if not print_user_error(e):
            raise
        raise SystemExit(2) from None
