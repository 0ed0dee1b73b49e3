#!/usr/bin/env python
"""Parameters and multiply-adds of architectures and detector configs (MODEL_ZOO.md's tables).

    python tools/model_sizes.py --archs eca_resnet50d \
        --configs Misc/faster_rcnn_SE_R_50_FPN_1x_dconv_c3-c5.yaml

The harness is benchmarks/sizes.py (beside tools/, in a checkout).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.sizes import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
