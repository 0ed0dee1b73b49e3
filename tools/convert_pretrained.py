#!/usr/bin/env python
"""Convert pretrained SE weights (ours, timm, Cadene) into a Detectron2 .pkl.

See docs/tutorials/weights.md.

    python tools/convert_pretrained.py se_resnet50-ce0d4300.pth pretrained/SE-R-50.pkl

Same as ``se-convert-pretrained`` / ``python -m se_detectron convert_pretrained``; the logic is
in se_detectron/convert/cli.py.
"""

import os
import sys

try:
    import se_detectron  # noqa: F401
except ImportError:  # run from a checkout without installing / PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from se_detectron.convert.cli import build_parser, cli  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(cli())
