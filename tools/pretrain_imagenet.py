#!/usr/bin/env python
"""ImageNet classification pretraining of an SE trunk (SE-ResNet, SE-ResNeXt, SENet-154).

One process::

    python tools/pretrain_imagenet.py --data-path /data/imagenet --arch se_resnet50

Distributed (one process per GPU, or CPU processes with Gloo)::

    torchrun --nproc_per_node 8 tools/pretrain_imagenet.py --data-path /data/imagenet

``--help`` lists the options and the digits demo recipe. The ``model`` weights of
``OUTPUT_DIR/checkpoint.pth`` / ``best.pth`` carry the detection trunk's names (``stem.*``,
``res2.*`` ... ``res5.*``); convert them for a detector with tools/convert_pretrained.py.
"""

import os
import sys

try:
    import se_detectron  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from se_detectron.pretrain.train import cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(cli())
