#!/usr/bin/env python
"""`make demo`: pretrain an SE-ResNet-18 on object crops, convert it, fine-tune Faster R-CNN.

    python tools/run_demo.py                      # everything under output/demo
    python tools/run_demo.py --rerun finetune     # redo fine-tuning and what follows

Same as ``se-run-demo`` / ``python -m se_detectron run_demo``. Stages (pretrain -> convert ->
finetune -> predict), reuse and outputs: se_detectron/demo.py.
"""

import os
import sys

try:
    import se_detectron  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from se_detectron.demo import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
