"""Interleaved timing and peak-memory measurement of several variants of one workload.

Variants are run in turns (A B C A B C ...) so that slow drifts of the machine (frequency,
other processes, thermal state) hit every variant alike, and each variant is summarised by its
median, minimum and maximum. On CUDA every measurement is bracketed by CUDA events after a
synchronisation; on CPU it is wall-clock time (``time.perf_counter``).
"""

import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch

__all__ = ["Stats", "measure_peak_memory", "run_interleaved", "time_once"]


@dataclass
class Stats:
    """Summary of the times (seconds) of one variant.

    Attributes:
        times: every timed run, in order.
        peak_memory_mb: peak memory allocated by one run beyond what existed before it, in MiB
            (None if not measured).
    """

    times: List[float] = field(default_factory=list)
    peak_memory_mb: Optional[float] = None

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def min(self) -> float:
        return min(self.times)

    @property
    def max(self) -> float:
        return max(self.times)

    def as_dict(self) -> Dict[str, object]:
        return {
            "median_ms": self.median * 1e3,
            "min_ms": self.min * 1e3,
            "max_ms": self.max * 1e3,
            "runs": len(self.times),
            "peak_memory_mb": self.peak_memory_mb,
            "times_ms": [t * 1e3 for t in self.times],
        }


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds taken by one call of ``fn`` on ``device`` (CUDA: events after a synchronisation)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3
    start_time = time.perf_counter()
    fn()
    return time.perf_counter() - start_time


def run_interleaved(
    variants: Dict[str, Callable[[], object]],
    device: torch.device,
    *,
    rounds: Optional[int] = None,
    seconds: float = 60.0,
    min_rounds: int = 5,
    max_rounds: int = 200,
    warmup: int = 2,
    progress: Optional[Callable[[str], None]] = None,
) -> Dict[str, Stats]:
    """Time every variant in turns.

    Args:
        variants: name -> zero-argument callable running one step of the workload.
        device: where the workload runs.
        rounds: number of timed rounds (each runs every variant once); None picks it from
            ``seconds`` and the warm-up time of one round, within [min_rounds, max_rounds].
        seconds: target wall time of the timed rounds when ``rounds`` is None.
        min_rounds: lower bound of the automatic round count.
        max_rounds: upper bound of the automatic round count.
        warmup: untimed rounds first (allocator, oneDNN/cuDNN algorithm caches, lazy init).
        progress: called with a one-line status after each round.

    Returns:
        name -> :class:`Stats` with one time per round.
    """
    if not variants:
        raise ValueError("run_interleaved needs at least one variant")
    round_time = 0.0
    for _ in range(max(warmup, 1)):
        round_time = sum(time_once(fn, device) for fn in variants.values())
    if rounds is None:
        rounds = int(min(max(math.ceil(seconds / max(round_time, 1e-6)), min_rounds), max_rounds))
    stats = {name: Stats() for name in variants}
    for index in range(rounds):
        # Alternate the order too, so that no variant always runs right after the same one.
        names = list(variants) if index % 2 == 0 else list(reversed(variants))
        for name in names:
            stats[name].times.append(time_once(variants[name], device))
        if progress is not None:
            progress(f"round {index + 1}/{rounds}")
    return stats


def measure_peak_memory(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory (MiB) allocated by one call of ``fn`` beyond the memory in use before it.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the PyTorch profiler's allocator events
    (``profile_memory=True``), whose running total of allocated bytes starts at the call.
    Tensors that exist before the call (weights, inputs) are not counted.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    # The profiler ignores frees of blocks allocated before it first saw them (e.g. the previous
    # step's gradients, freed by zero_grad), which would inflate the peak: profile two calls and
    # keep the second, whose frees of the first call's blocks are all known.
    _profiled_peak(fn)
    return _profiled_peak(fn)


def _profiled_peak(fn: Callable[[], object]) -> float:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f).get("traceEvents", [])
    memory = [
        e["args"]
        for e in sorted(events, key=lambda e: e.get("ts", 0))
        if e.get("name") == "[memory]" and e.get("args", {}).get("Device Type", 0) == 0
    ]
    if not memory:
        return 0.0
    # The running total may carry an offset from earlier profiling sessions: measure from the
    # total just before the first allocation of this call.
    start = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(0, max(m["Total Allocated"] for m in memory) - start) / 2**20
