#!/usr/bin/env python
"""`make gpu-check`: CUDA tests, a short demo and a GPU benchmark on a GPU, in one report.

    python tools/gpu_check.py --output-dir output/gpu-check

Runs from a checkout with any interpreter that has the requirements (requirements/*.txt: a CUDA
torch, torchvision, Detectron2 and its runtime packages, pytest, timm), without `make setup` and
without installing se_detectron: the checkout is put on sys.path (and on the steps' PYTHONPATH).
Missing packages are listed in one line before anything runs (exit 2).
See benchmarks/gpu_check.py and docs/notes/benchmarks.md, "On a GPU".
"""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")

# top-level modules the steps import (requirements/detectron2-runtime.txt, torch.txt, dev.txt)
REQUIRED = (
    "torch", "torchvision", "detectron2", "fvcore", "iopath", "yacs", "omegaconf", "pycocotools",
    "cv2", "matplotlib", "PIL", "tabulate", "termcolor", "tqdm", "pytest",
)  # fmt: skip


def _missing():
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


if __name__ == "__main__":
    missing = _missing()
    if missing:
        print(
            f"error: gpu-check: this Python ({sys.executable}) lacks {', '.join(missing)}: "
            "install requirements/*.txt into it, or see docs/notes/benchmarks.md, 'On a GPU'",
            file=sys.stderr,
        )
        sys.exit(2)
    # the checkout: benchmarks/ (never installed) and se_detectron when it is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.gpu_check import cli

    sys.exit(cli())
