"""Training checkpoints: atomic writes, exact resume, clear errors on a wrong checkpoint.

A checkpoint is a plain dict saved with ``torch.save`` that loads with ``weights_only=True``:

* ``model``: the classifier's ``state_dict`` (never DDP-wrapped: names are ``stem.*``,
  ``res2.*`` ... ``res5.*``, ``linear.*``, those of the detection trunk);
* ``model_ema`` / ``model_ema_n_averaged``: the EMA weights (same names) when ``--model-ema``;
* ``optimizer``, ``lr_scheduler``, ``scaler``: their ``state_dict`` (``scaler`` None without fp16);
* ``epoch``: the number of completed epochs (a resumed run starts at this epoch index);
* ``best_top1``, ``args`` (the command-line arguments as a dict), ``cfg`` (the trunk config as
  YAML), ``arch``, ``classes`` and ``rng`` (Python, NumPy, torch and CUDA generator states).
"""

import os
from typing import Any, Dict, Mapping

import torch

from ..checkpoint.weights_file import load_weights_file
from ..errors import PretrainError, SEDetectronError
from ..utils import atomic_write
from ..utils.state_dict import diff_state_dicts

__all__ = [
    "CheckpointMismatchError",
    "check_state_dict_matches",
    "load_checkpoint",
    "save_atomic",
]


class CheckpointMismatchError(SEDetectronError, ValueError):
    """A checkpoint's weights do not fit the model (another architecture or class count)."""


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it over ``path``.

    A reader (or a crash) never sees a partially written file.

    Args:
        obj: what to save.
        path: destination file.
    """
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint written by the pretraining tool onto the CPU.

    Args:
        path: a ``checkpoint.pth`` / ``best.pth`` file.

    Raises:
        FileNotFoundError: naming ``path`` if it does not exist.
        WeightsFileError: naming ``path`` if it is empty, truncated or not a checkpoint.
        ValueError: if the file is not a pretraining checkpoint (no ``model`` entry).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint {path} does not exist (--resume takes a checkpoint.pth written by "
            "tools/pretrain_imagenet.py, or 'auto' for OUTPUT_DIR/checkpoint.pth)"
        )
    ckpt = load_weights_file(
        path, lambda p: torch.load(p, map_location="cpu", weights_only=True), "checkpoint"
    )
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise PretrainError(f"{path} is not a pretraining checkpoint: it has no 'model' entry")
    return ckpt


def check_state_dict_matches(
    expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise unless ``found`` has exactly the names and shapes of ``expected``.

    Args:
        expected: the model's ``state_dict``.
        found: the checkpoint's ``state_dict``.
        source: where ``found`` comes from, for the message (e.g. the checkpoint path).

    Raises:
        CheckpointMismatchError: naming the first mismatched key and both shapes.
    """
    diff = diff_state_dicts(expected, found)
    if diff.missing:
        key = diff.missing[0]
        raise CheckpointMismatchError(
            f"{source} does not match the model: key {key!r} (shape "
            f"{tuple(expected[key].shape)} in the model) is missing from the checkpoint; was it "
            "written for another architecture (--arch / --config-file / opts)?"
        )
    if diff.wrong_shapes:
        key, found_shape, expected_shape = diff.wrong_shapes[0]
        raise CheckpointMismatchError(
            f"{source} does not match the model: {key!r} has shape "
            f"{found_shape} in the checkpoint but {expected_shape} in the "
            "model; was it written for another architecture or number of classes?"
        )
    extra = diff.unexpected
    if extra:
        raise CheckpointMismatchError(
            f"{source} does not match the model: the checkpoint has key {extra[0]!r} (shape "
            f"{tuple(found[extra[0]].shape)}) that the model lacks ({len(extra)} such keys); "
            "was it written for another architecture?"
        )
