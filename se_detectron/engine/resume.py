"""What exact resumption needs beyond Detectron2's checkpoint: every process's data position,
its aspect-ratio groups in progress and its random states.

Detectron2 restores the model, optimizer, LR schedule and iteration on ``--resume``, but its
``TrainingSampler`` restarts its (randomly seeded) stream, the data-loader workers restart their
augmentation streams, ``AspectRatioGroupedDataset`` forgets the images waiting in its groups and
only one process's random generators could be saved. Here:

* :class:`SampleStream` is one process's share of the shuffled, infinite stream of dataset
  indices. Item ``p`` of the global stream goes to process ``p % world_size``; its dataset index
  depends only on the seed and ``p``.
* :class:`PositionSeededDataset` maps each item with the Python/NumPy/Torch generators seeded from
  ``(seed, p)``: an image's augmentation is the same whichever worker maps it and whenever, and
  the main process's generators are left untouched (they stay the model's).
* :class:`ResumableTrainLoader` delivers the items in stream order (worker ``w`` of ``K`` maps
  items ``w, w + K, ...``; PyTorch's loader returns them round-robin), groups them by orientation
  like Detectron2's ``AspectRatioGroupedDataset``, and knows at every batch which stream position
  comes next and which items wait in the groups.
* :class:`ProcessStates` is the checkpointable holding all processes' random states and loader
  states; :class:`ProcessStateCheckpointer` (a ``PeriodicCheckpointer`` that runs on every process)
  gathers them right before the main process saves.

A resumed run then replays the waiting items into the groups and continues the stream where it
stopped, so N iterations in one go and N iterations with any number of interruptions give the
same weights, for any number of processes and loader workers (``tests/test_resume_distributed.py``).
"""

import copy
import logging
import random
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data.common import DatasetFromList
from detectron2.engine import hooks
from detectron2.utils import comm
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..utils.rng import get_rng_state, set_rng_state
from .heartbeat import naming_stopped_ranks

__all__ = [
    "PositionSeededDataset",
    "ProcessStateCheckpointer",
    "ProcessStates",
    "ResumableTrainLoader",
    "SampleStream",
    "build_resumable_train_loader",
    "preserved_rng",
]

logger = logging.getLogger(__name__)


class SampleStream:
    """This process's share of an infinite stream of dataset indices (every pass shuffled anew).

    Position ``p`` of the global stream is index ``p % size`` of the ``p // size``-th permutation
    drawn from a generator seeded with ``seed`` (no shuffle: ``p % size``). Process ``r`` of ``W``
    takes positions ``r, r + W, r + 2W, ...``.

    Args:
        size: number of dataset items.
        seed: the shuffle seed; None draws one shared by all processes (kept in checkpoints).
        shuffle: shuffle every pass.

    Attributes:
        next_position: the global position of the next new item of this process.
        replay: ``(position, index)`` pairs delivered before the new items (the items that
            waited in the aspect-ratio groups when the resumed checkpoint was written).
    """

    def __init__(self, size: int, seed: Optional[int] = None, shuffle: bool = True):
        if size <= 0:
            raise ValueError(f"the training set is empty (size {size})")
        self.size = int(size)
        self.shuffle = shuffle
        self.seed = int(comm.shared_random_seed() if seed is None else seed)
        self.rank = comm.get_rank()
        self.world_size = comm.get_world_size()
        self.next_position = self.rank
        self.replay: List[Tuple[int, int]] = []

    def start_at(self, num_consumed: int) -> None:
        """Start at global position ``num_consumed`` (all processes together), nothing to replay.

        The approximate restart used when a checkpoint has no state for this process (written
        by another number of processes): ``iteration * total batch`` items are skipped.
        """
        self.next_position = int(num_consumed) + self.rank
        self.replay = []

    def _global(self, start: int) -> Iterator[Tuple[int, int]]:
        if not self.shuffle:
            p = start
            while True:
                yield p, p % self.size
                p += 1
        g = torch.Generator()
        g.manual_seed(self.seed)
        epoch = 0
        while True:
            perm = torch.randperm(self.size, generator=g)
            first = epoch * self.size
            if first + self.size > start:
                for i in range(max(start - first, 0), self.size):
                    yield first + i, int(perm[i])
            epoch += 1

    def items(self) -> Iterator[Tuple[int, int]]:
        """``(global position, dataset index)`` of this process: the replay, then new items."""
        yield from self.replay
        step = self.world_size
        for p, index in self._global(self.next_position):
            if (p - self.next_position) % step == 0:
                yield p, index


def item_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the item at ``position`` of the stream seeded with ``seed``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(position)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1]))


@contextmanager
def preserved_rng():
    """Run a block without changing the Python/NumPy/Torch(CPU) generators outside it."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


class PositionSeededDataset(IterableDataset):
    """The mapped items of a :class:`SampleStream`, each augmented with generators seeded from
    ``(stream seed, position)``; yields ``(position, index, mapped item or None)``.

    In a loader worker ``w`` of ``K`` it yields the ``w``-th, ``(w + K)``-th, ... items of the
    stream, so that PyTorch's round-robin collection returns them in stream order.

    Args:
        dataset: the dataset dicts (a list or map-style dataset).
        mapper: Detectron2's mapper (dataset dict -> model input), or None.
        stream: the process's :class:`SampleStream` (copied into each worker when it starts).
    """

    def __init__(self, dataset, mapper: Optional[Callable], stream: SampleStream):
        if isinstance(dataset, list):
            dataset = DatasetFromList(dataset, copy=False)
        self.dataset = dataset
        self.mapper = mapper
        self.stream = stream

    def map_item(self, position: int, index: int):
        """The mapped item at ``position`` (dataset ``index``), the caller's generators kept."""
        item = self.dataset[index]
        if self.mapper is None:
            return copy.deepcopy(item)
        seed = item_seed(self.stream.seed, position)
        with preserved_rng():
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
            return self.mapper(item)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for k, (position, index) in enumerate(self.stream.items()):
            if k % workers == worker:
                yield position, index, self.map_item(position, index)


def _first(batch):
    return batch


class ResumableTrainLoader:
    """Per-process training batches from a :class:`PositionSeededDataset`, resumable exactly.

    Items come in stream order from a PyTorch ``DataLoader`` (``num_workers`` processes); with
    ``aspect_ratio_grouping`` a batch holds images of one orientation (landscape ``w > h`` or
    not), as Detectron2's ``AspectRatioGroupedDataset`` groups them. Items the mapper returned
    None for are skipped.

    Args:
        dataset: the :class:`PositionSeededDataset`.
        batch_size: images per batch of this process.
        aspect_ratio_grouping: group by orientation.
        num_workers: loader worker processes (0: map in this process).
        collate_fn: applied to every batch (list of mapped items); None: the list itself.
        **loader_kwargs: more ``torch.utils.data.DataLoader`` arguments (e.g. ``pin_memory``).
    """

    def __init__(
        self,
        dataset: PositionSeededDataset,
        batch_size: int,
        *,
        aspect_ratio_grouping: bool = True,
        num_workers: int = 0,
        collate_fn: Optional[Callable] = None,
        **loader_kwargs: Any,
    ):
        self.dataset = dataset
        self.stream = dataset.stream
        self.batch_size = int(batch_size)
        self.aspect_ratio_grouping = aspect_ratio_grouping
        self.collate_fn = collate_fn
        self.loader = DataLoader(
            dataset,
            batch_size=None,
            num_workers=num_workers,
            collate_fn=_first,
            # the loader's iterator draws a base seed: from its own generator, not the global one
            generator=torch.Generator().manual_seed(self.stream.seed),
            persistent_workers=False,
            **loader_kwargs,
        )
        self._next = self.stream.next_position
        self._waiting: List[Tuple[int, int]] = list(self.stream.replay)

    def state_dict(self) -> Dict[str, Any]:
        """Where this process's data continues: the next new position and the waiting items."""
        return {
            "seed": self.stream.seed,
            "next_position": int(self._next),
            "waiting": [[int(p), int(i)] for p, i in self._waiting],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue after the batch the state was taken at (call before iterating)."""
        self.stream.seed = int(state["seed"])
        self.stream.next_position = int(state["next_position"])
        self.stream.replay = [(int(p), int(i)) for p, i in state["waiting"]]
        self._next = self.stream.next_position
        self._waiting = list(self.stream.replay)

    def __iter__(self):
        replayed = len(self.stream.replay)
        self._next = self.stream.next_position
        self._waiting = list(self.stream.replay)
        groups: Dict[Any, List[Tuple[int, int, Any]]] = {}
        delivered = 0
        for position, index, item in self.loader:
            delivered += 1
            if delivered > replayed:
                self._next = position + self.stream.world_size
            if item is None:
                continue
            key = bool(item["width"] > item["height"]) if self.aspect_ratio_grouping else None
            group = groups.setdefault(key, [])
            group.append((position, index, item))
            if len(group) < self.batch_size:
                waiting = [(p, i) for g in groups.values() for p, i, _ in g]
                self._waiting = sorted(waiting)
                continue
            groups[key] = []
            self._waiting = sorted((p, i) for g in groups.values() for p, i, _ in g)
            batch = [it for _, _, it in group]
            yield self.collate_fn(batch) if self.collate_fn is not None else batch


def build_resumable_train_loader(
    dataset,
    *,
    mapper: Optional[Callable],
    total_batch_size: int,
    seed: Optional[int] = None,
    aspect_ratio_grouping: bool = True,
    num_workers: int = 0,
    collate_fn: Optional[Callable] = None,
    **loader_kwargs: Any,
) -> ResumableTrainLoader:
    """Detectron2's ``build_detection_train_loader`` arguments, made resumable exactly.

    Args:
        dataset: the dataset dicts (list or map-style dataset).
        mapper: dataset dict -> model input.
        total_batch_size: images per iteration over all processes.
        seed: the shuffle and augmentation seed; None draws one shared by all processes.
        aspect_ratio_grouping: batches of one orientation.
        num_workers: loader worker processes per training process.
        collate_fn: applied to each batch.
        **loader_kwargs: more ``DataLoader`` arguments.
    """
    world = comm.get_world_size()
    if total_batch_size <= 0 or total_batch_size % world:
        raise ValueError(
            f"total batch size {total_batch_size} must be a positive multiple of the {world} "
            "training processes"
        )
    stream = SampleStream(len(dataset), seed=seed)
    return ResumableTrainLoader(
        PositionSeededDataset(dataset, mapper, stream),
        total_batch_size // world,
        aspect_ratio_grouping=aspect_ratio_grouping,
        num_workers=num_workers,
        collate_fn=collate_fn,
        **loader_kwargs,
    )


class ProcessStates:
    """Checkpointable: every process's random states and data-loader state.

    Saving is done by the main process alone; :meth:`collect` (a collective every process
    calls, see :class:`ProcessStateCheckpointer`) first gathers the states of all processes.
    On load each process takes its own; a checkpoint written by another number of processes
    (or without these states) cannot give each process its own, so the random states are kept,
    the data stream restarts at ``iteration * total batch`` and ``exact`` is False.

    Args:
        loader: the process's :class:`ResumableTrainLoader`.

    Attributes:
        exact: after a load, whether this process got its own saved states.
        saved_world_size: after a load, the number of processes that wrote the checkpoint
            (None: a checkpoint without per-process states).
    """

    def __init__(self, loader: ResumableTrainLoader):
        self.loader = loader
        self._gathered: Optional[List[Dict[str, Any]]] = None
        self.exact = False
        self.saved_world_size: Optional[int] = None

    def local_state(self) -> Dict[str, Any]:
        """This process's random states and loader state."""
        return {"rng": get_rng_state(), "data": self.loader.state_dict()}

    def collect(self) -> None:
        """Gather every process's state on the main process (call on every process)."""
        if comm.get_world_size() == 1:
            self._gathered = [self.local_state()]
            return
        with naming_stopped_ranks():
            gathered = comm.gather(self.local_state(), dst=0)
        self._gathered = gathered if comm.is_main_process() else None

    def state_dict(self) -> Dict[str, Any]:
        states = self._gathered
        if states is None:  # a save without collect(): only this process's own state is known
            states = [self.local_state()] + [None] * (comm.get_world_size() - 1)
        return {"world_size": len(states), "ranks": states}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        rank, world = comm.get_rank(), comm.get_world_size()
        self.saved_world_size = state.get("world_size")
        ranks = state.get("ranks") or []
        own = ranks[rank] if self.saved_world_size == world and rank < len(ranks) else None
        self.exact = own is not None
        if own is not None:
            set_rng_state(own["rng"])
            self.loader.load_state_dict(own["data"])
        elif ranks and ranks[0] is not None:
            # keep the run's data seed (one for all processes) even when not exact
            self.loader.stream.seed = int(ranks[0]["data"]["seed"])

    def inexact_resume_message(self, iteration: int) -> str:
        """What an inexact resume (see ``exact``) keeps and loses, in one sentence."""
        world = comm.get_world_size()
        if self.saved_world_size is None:
            written = "a checkpoint without per-process data and random states"
        else:
            written = f"a checkpoint written by {self.saved_world_size} process(es)"
        return (
            f"resuming {written} with {world} process(es): the model, optimizer, LR schedule and "
            f"iteration ({iteration}) continue, but the data order, augmentations and random "
            "states start anew from that iteration, so the result will not be bit-identical to "
            f"an uninterrupted run (resume with {self.saved_world_size or 'the same number of'} "
            "process(es) for that)"
        )


class ProcessStateCheckpointer(hooks.PeriodicCheckpointer):
    """Detectron2's ``PeriodicCheckpointer`` run on every process: before each save all
    processes' states are gathered into the checkpoint (:meth:`ProcessStates.collect`); only the
    main process writes.

    A resumed run whose last checkpoint is the last iteration but has no ``<prefix>_final.pth``
    (killed while writing it) writes it in ``before_train``.

    Args:
        checkpointer: the run's checkpointer (with ``process_states`` among its checkpointables).
        period: save every ``period`` iterations.
        process_states: the :class:`ProcessStates`.
        **kwargs: ``max_iter``, ``max_to_keep``, ``file_prefix`` as ``PeriodicCheckpointer``.

    Attributes:
        last_saved_iter: the iteration of the last checkpoint written (or -1).
    """

    def __init__(self, checkpointer, period: int, process_states: ProcessStates, **kwargs):
        super().__init__(checkpointer, period, **kwargs)
        self.process_states = process_states
        self.last_saved_iter = -1

    def _due(self, iteration: int) -> bool:
        return (iteration + 1) % self.period == 0 or (
            self.max_iter is not None and iteration >= self.max_iter - 1
        )

    def before_train(self):
        super().before_train()
        start = self.trainer.start_iter
        if start < self.max_iter or start == 0:
            return
        final = f"{self.file_prefix}_final"
        exists = comm.is_main_process() and self.checkpointer.path_manager.exists(
            f"{self.checkpointer.save_dir}/{final}.pth"
        )
        if comm.get_world_size() > 1:
            exists = comm.all_gather(exists)[0]
        if not exists:
            self.save_now(start - 1, name=final)

    def save_now(self, iteration: int, name: Optional[str] = None) -> None:
        """Gather every process's state and save ``name`` (default ``<prefix>_<iteration>``)."""
        self.process_states.collect()
        if comm.is_main_process():
            self.checkpointer.save(
                name or f"{self.file_prefix}_{iteration:07d}", iteration=iteration
            )
        self.last_saved_iter = iteration

    def after_step(self):
        iteration = self.trainer.iter
        if not self._due(iteration):
            return
        self.process_states.collect()
        if comm.is_main_process():
            self.step(iteration)
        self.last_saved_iter = iteration
