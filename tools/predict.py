#!/usr/bin/env python
"""Draw a trained SE detector's detections on images.

    python tools/predict.py --config-file output/demo/finetune/config.yaml \
        --input datasets/se_synthetic/val --output output/demo/predictions \
        --opts MODEL.WEIGHTS output/demo/finetune/model_final.pth

Same as ``se-predict`` / ``python -m se_detectron predict``; the logic is in
se_detectron/engine/predict.py.
"""

import sys

from se_detectron.engine.predict import cli

if __name__ == "__main__":
    sys.exit(cli())
