import os

import pytest
import torch

# Tests run on 2-core CPU machines: keep torch from oversubscribing them.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def se_cfg():
    """A fresh config: configs/Base-SE-RCNN-FPN.yaml (SE-R50-FPN Faster R-CNN) on CPU."""
    from se_detectron import get_se_cfg

    cfg = get_se_cfg("Base-SE-RCNN-FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    return cfg
