"""Speed and memory of the SE models against their plain ResNet counterparts (a checkout's
``benchmarks/`` folder, beside ``tools/``; not part of the installed package).

``tools/benchmark.py`` (:func:`cli`) times, interleaved, the trunk, Faster R-CNN inference and
training, and the ImageNet classifier (ours, the plain ResNet-50, timm's seresnet50/resnet50),
breaks the classifier's SE cost down into its parts (pool, FC layers, scale-add), and writes a
table and JSON; :mod:`.gpu_check` is ``make gpu-check``. See ``docs/notes/benchmarks.md``.
"""

from .cases import CASE_NAMES, Case, build_cases
from .cli import cli
from .timing import Stats, measure_peak_memory, run_interleaved, time_once

__all__ = [
    "CASE_NAMES",
    "Case",
    "Stats",
    "build_cases",
    "cli",
    "measure_peak_memory",
    "run_interleaved",
    "time_once",
]
