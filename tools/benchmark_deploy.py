#!/usr/bin/env python
"""Time SE-R50-FPN Faster R-CNN inference through every deployment route, interleaved.

    python tools/benchmark_deploy.py --output output/benchmark/deploy.json

Routes: Detectron2's eager DefaultPredictor (baseline), torch.compile, ONNX Runtime fp32,
OpenVINO fp32, int8 (ONNX Runtime and OpenVINO), OpenVINO bf16 where the CPU has it. See
docs/tutorials/deployment.md; the harness is benchmarks/deploy.py (beside tools/, in a checkout).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.deploy import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
