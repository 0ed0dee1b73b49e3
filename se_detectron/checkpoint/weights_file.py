"""Reading a weights or checkpoint file: a damaged file is one error naming it.

An empty, truncated or foreign file given as ``MODEL.WEIGHTS``, as a converter input or as a
pretraining checkpoint makes ``torch.load`` / ``pickle.load`` raise ``EOFError``,
``UnpicklingError``, a zip ``RuntimeError`` or PyTorch's long ``weights_only`` text.
:func:`load_weights_file` checks the file first (present, not empty, a PyTorch zip archive with
its central directory, a pickle whose first frame fits in the file, or a safetensors file) and
turns what the loader still raises into one :class:`WeightsFileError` that names the file. A
damaged pickle can announce a frame of exabytes: the unpickler would try to allocate it and
raise ``MemoryError``.
"""

import os
import pickle
import zipfile
from typing import Any, Callable

from ..errors import SEDetectronError

__all__ = ["WeightsFileError", "check_weights_file", "load_weights_file"]

# what torch.load / pickle.load raise on a damaged file (UnpicklingError is a PickleError)
_READ_ERRORS = (
    EOFError,
    pickle.PickleError,
    zipfile.BadZipFile,
    RuntimeError,
    ValueError,
    KeyError,
    IndexError,
    UnicodeDecodeError,
)
_PICKLE_PROTOCOL = b"\x80"  # protocols 2-5 start with PROTO; torch's legacy format is a pickle
_PICKLE_FRAME = 0x95  # protocols 4-5: FRAME, then the frame's length (8 bytes, little-endian)
_FRAMED_HEAD = 11  # PROTO, its version, FRAME, the length
_ZIP_MAGIC = b"PK\x03\x04"


class WeightsFileError(SEDetectronError, ValueError):
    """A weights/checkpoint file is empty, truncated or not a weights file; names the file."""


def check_weights_file(path: str, what: str = "weights file") -> None:
    """Check that ``path`` looks like a complete weights file, reading only its ends.

    Args:
        path: a ``.pth``/``.pt``/``.pkl``/``.pyth``/``.safetensors`` file.
        what: how to name it in messages (``MODEL.WEIGHTS``, ``input checkpoint``, ...).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        WeightsFileError: if it is empty, a truncated zip archive, a pickle whose first frame
            is longer than the file, or neither a PyTorch, pickle nor safetensors file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path!r} does not exist")
    size = os.path.getsize(path)
    if size == 0:
        raise WeightsFileError(f"{what} {path!r} is empty (0 bytes): the save did not complete")
    if path.endswith(".safetensors"):
        return
    with open(path, "rb") as f:
        head = f.read(_FRAMED_HEAD)
    framed = len(head) == _FRAMED_HEAD and head[2] == _PICKLE_FRAME
    if framed and head.startswith(_PICKLE_PROTOCOL):
        frame = int.from_bytes(head[3:], "little")
        if frame > size - _FRAMED_HEAD:
            raise WeightsFileError(
                f"{what} {path!r} is truncated or damaged: its pickle header announces a frame "
                f"of {frame} bytes, but the file has {size} bytes: save or copy it again"
            )
        return
    head = head[:4]
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):
            raise WeightsFileError(
                f"{what} {path!r} is truncated or damaged ({size} bytes, a PyTorch zip archive "
                "without its end): save or copy it again"
            )
    elif not head.startswith(_PICKLE_PROTOCOL):
        raise WeightsFileError(
            f"{what} {path!r} is not a weights file (neither a PyTorch .pth, a pickle .pkl nor "
            f"a .safetensors file; it starts with {head!r})"
        )


def load_weights_file(path: str, load: Callable[[str], Any], what: str = "weights file") -> Any:
    """Check ``path`` (:func:`check_weights_file`), then return ``load(path)``.

    Args:
        path: the file.
        load: the reader, e.g. ``torch.load`` with its options.
        what: how to name the file in messages.

    Raises:
        FileNotFoundError, WeightsFileError: the file is missing, damaged or foreign. Errors of
            se_detectron raised by ``load`` propagate unchanged.
    """
    check_weights_file(path, what)
    try:
        return load(path)
    except SEDetectronError:
        raise
    except MemoryError:
        raise WeightsFileError(
            f"{what} {path!r} cannot be read: loading its {os.path.getsize(path)} bytes ran out "
            "of memory (MemoryError): the file is damaged, or larger than this machine's memory"
        ) from None
    except _READ_ERRORS as e:
        first_line = (str(e).strip().splitlines() or [""])[0][:200]
        raise WeightsFileError(
            f"{what} {path!r} cannot be read: it is truncated, damaged or not a weights file "
            f"({type(e).__name__}: {first_line})"
        ) from e
