#!/usr/bin/env python
"""Benchmark SE-ResNet-50 against Detectron2's ResNet-50: trunk, Faster R-CNN, classifier.

    python tools/benchmark.py --output output/benchmark/benchmark.json

See the README's "Performance" section and se_detectron/benchmark/.
"""

import os
import sys

# The memory measurement starts the PyTorch profiler; keep its C++ start/stop log lines quiet.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from se_detectron.benchmark import cli

if __name__ == "__main__":
    sys.exit(cli())
