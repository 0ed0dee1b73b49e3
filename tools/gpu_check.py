#!/usr/bin/env python
"""`make gpu-check`: CUDA tests, a short GPU benchmark and the demo on a GPU, in one report.

    python tools/gpu_check.py --output-dir output/gpu-check

See se_detectron/benchmark/gpu_check.py and the README's "Performance on a GPU".
"""

import os
import sys

os.environ.setdefault("KINETO_LOG_LEVEL", "5")

from se_detectron.benchmark.gpu_check import cli

if __name__ == "__main__":
    sys.exit(cli())
