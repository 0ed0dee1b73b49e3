#!/usr/bin/env python
"""Evaluate, int8-quantize and compare exported SE detectors (ONNX Runtime, OpenVINO, PyTorch).

    python tools/deploy.py compare --model out/export/model.onnx --int8 out/export/model_int8.onnx

See docs/tutorials/deployment.md and se_detectron/deploy/.
"""

import sys

from se_detectron.deploy.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
