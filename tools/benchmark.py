#!/usr/bin/env python
"""Benchmark SE-ResNet-50 against Detectron2's ResNet-50: trunk, Faster R-CNN, classifier.

    python tools/benchmark.py --output output/benchmark/benchmark.json

See docs/notes/benchmarks.md; the harness is benchmarks/ (beside tools/, in a checkout;
not part of the installed package), run with the checkout on sys.path.
"""

import os
import sys

# The memory measurement starts the PyTorch profiler; keep its C++ start/stop log lines quiet.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
