#!/usr/bin/env python
"""Train or evaluate a Detectron2 model with an SE backbone.

    python tools/train_net.py --config-file configs/COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml
    python tools/train_net.py --config-file CONFIG --resume
    python tools/train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS output/model_final.pth

See ``python tools/train_net.py -h`` and se_detectron/engine/train_net.py.
"""

from se_detectron.engine.train_net import cli

if __name__ == "__main__":
    cli()
