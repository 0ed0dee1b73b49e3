#!/usr/bin/env python
"""Export an SE detector to TorchScript (tracing or scripting) or ONNX, and verify it.

    python tools/export_model.py \
        --config-file configs/Synthetic/faster_rcnn_SE_R_50_FPN_synthetic.yaml \
        --format onnx --export-method tracing --output out/export MODEL.WEIGHTS model_final.pth

See ``docs/tutorials/export.md`` and se_detectron/export/.
"""

import sys

from se_detectron.export.cli import cli

if __name__ == "__main__":
    sys.exit(cli())
