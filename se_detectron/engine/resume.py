"""What exact resumption needs beyond Detectron2's checkpoint: data order and random states.

Detectron2 restores the model, optimizer, LR schedule and iteration on ``--resume``, but its
``TrainingSampler`` restarts its (randomly seeded) stream from the beginning and the random number
generators are not saved, so a resumed run sees different images and augmentations than the run it
continues. :class:`ResumableTrainingSampler` keeps its seed in the checkpoint and skips the samples
already consumed; :class:`RNGStates` saves and restores the Python/NumPy/Torch generators.
"""

import itertools
from typing import Optional

from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

from ..utils.rng import get_rng_state, set_rng_state

__all__ = ["RNGStates", "ResumableTrainingSampler"]


class ResumableTrainingSampler(TrainingSampler):
    """Detectron2's infinite shuffled ``TrainingSampler`` that can start part-way into its stream.

    It is also a checkpointable (``state_dict``/``load_state_dict``): the shuffle seed is saved
    with the trainer's checkpoint so that a resumed run replays the same order.

    Args:
        size: number of dataset items.
        shuffle: shuffle the indices (every pass with a new permutation).
        seed: the shuffle seed; None draws one shared by all processes.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: Optional[int] = None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self._start = 0

    def set_start(self, num_consumed: int) -> None:
        """Skip the first ``num_consumed`` indices of the global stream (all processes together).

        Args:
            num_consumed: indices already used, i.e. ``iteration * SOLVER.IMS_PER_BATCH``.
        """
        self._start = int(num_consumed)

    def __iter__(self):
        # The global stream is dealt round-robin to the processes, so skipping `start` global
        # indices means starting at `start + rank`.
        yield from itertools.islice(
            self._infinite_indices(), self._start + self._rank, None, self._world_size
        )

    @property
    def seed(self) -> int:
        """The shuffle seed (shared by all processes)."""
        return self._seed

    def state_dict(self):
        return {"seed": self._seed}

    def load_state_dict(self, state):
        self._seed = int(state["seed"])


class RNGStates:
    """The Python, NumPy and Torch (CPU and CUDA) random states, as a checkpointable
    (:func:`se_detectron.utils.rng.get_rng_state`, the snapshot pretraining saves too)."""

    def state_dict(self):
        return {**get_rng_state(), "rank": comm.get_rank()}

    def load_state_dict(self, state):
        # The checkpoint holds the main process' states; other ranks keep their own streams.
        if state.get("rank", 0) != comm.get_rank():
            return
        set_rng_state(state)
