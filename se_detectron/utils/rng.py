"""One snapshot of every random generator (Python, NumPy, torch CPU and CUDA).

Used by the pretraining checkpoints (``"rng"``) and by the detection trainer's ``ProcessStates``
checkpointable, so that both resume exactly. The states are plain tensors, numbers and tuples:
they load with ``torch.load(weights_only=True)``.
"""

import random
from typing import Any, Dict, Optional

import numpy as np
import torch

__all__ = ["get_rng_state", "set_rng_state"]


def get_rng_state() -> Dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) generator states, in ``weights_only``-safe types."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Optional[Dict[str, Any]]) -> None:
    """Restore generator states saved by :func:`get_rng_state` (None: do nothing).

    Args:
        state: e.g. the ``rng`` entry of a pretraining checkpoint.
    """
    if not state:
        return
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    if isinstance(n, (list, tuple)):  # detection checkpoints written before 0.1.0's layout
        n = dict(zip(("name", "keys", "pos", "has_gauss", "cached_gaussian"), n))
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _as_tuples(obj):
    if isinstance(obj, (list, tuple)):
        return tuple(_as_tuples(o) for o in obj)
    return obj
