"""Parameter counts and multiply-adds of the trunks against the published figures.

Published figures (paper Table 2 and the released models): SE-ResNet-50 28.09M / 3.87 GMACs,
SE-ResNet-101 49.33M / 7.60, SE-ResNet-152 66.82M / 11.32, SE-ResNeXt-50 32x4d 27.56M / 4.25,
SE-ResNeXt-101 32x4d 48.96M / 8.00 (1000 classes, 224x224). MACs are counted as the paper does:
convolutions and fully connected layers, plus the SE squeeze (one op per pooled element) and scale
(one per scaled element); BatchNorm is not counted (it folds into the convolutions).

The SE-ResNets stride in the first 1x1 conv, as the paper's (MSRA-style) ResNets; the published
SE-ResNeXt figures are those of the released SE-ResNeXt models, which stride in the 3x3 conv
(with the stride in the 1x1, SE-ResNeXt-50 would be 3.80 GMACs).
"""

from math import prod

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from se_detectron.modeling import build_se_resnet_classifier


def _count_input_elements(inputs, outputs):
    return prod(get_shape(inputs[0]))


def _count_output_elements(inputs, outputs):
    return prod(get_shape(outputs[0]))


def macs_as_in_paper(model):
    flops = FlopCountAnalysis(model, torch.zeros(1, 3, 224, 224))
    flops.set_op_handle(
        "aten::mean", _count_input_elements, "aten::addcmul", _count_output_elements
    )
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_op = flops.by_operator()
    return sum(by_op.get(op, 0) for op in ("conv", "linear", "mean", "addcmul"))


@pytest.mark.parametrize(
    "depth,groups,width,stride_in_1x1,params_m,gmacs",
    [
        pytest.param(50, 1, 64, True, 28.09, 3.87, id="SE-R50"),
        pytest.param(101, 1, 64, True, 49.33, 7.60, id="SE-R101", marks=pytest.mark.slow),
        pytest.param(152, 1, 64, True, 66.82, 11.32, id="SE-R152", marks=pytest.mark.slow),
        pytest.param(50, 32, 4, False, 27.56, 4.25, id="SE-X50-32x4d"),
        pytest.param(101, 32, 4, False, 48.96, 8.00, id="SE-X101-32x4d", marks=pytest.mark.slow),
    ],
)
def test_published_params_and_macs(se_cfg, depth, groups, width, stride_in_1x1, params_m, gmacs):
    se_cfg.MODEL.RESNETS.NORM = "BN"
    se_cfg.MODEL.RESNETS.DEPTH = depth
    se_cfg.MODEL.RESNETS.NUM_GROUPS = groups
    se_cfg.MODEL.RESNETS.WIDTH_PER_GROUP = width
    se_cfg.MODEL.RESNETS.STRIDE_IN_1X1 = stride_in_1x1
    model = build_se_resnet_classifier(se_cfg, num_classes=1000).eval()
    params = sum(p.numel() for p in model.parameters())
    assert params / 1e6 == pytest.approx(params_m, abs=0.005)
    assert macs_as_in_paper(model) / 1e9 == pytest.approx(gmacs, rel=0.003)


def test_senet154_matches_released_model_size(se_cfg):
    """SENet-154 (paper appendix) has the released model's 115.09M parameters."""
    from se_detectron import get_se_cfg

    cfg = get_se_cfg("COCO-Detection/faster_rcnn_SENet_154_FPN_3x.yaml")
    cfg.MODEL.RESNETS.NORM = "BN"
    model = build_se_resnet_classifier(cfg, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(115.09, abs=0.005)
    assert [m.out_channels for m in (model.stem.conv1, model.stem.conv2, model.stem.conv3)] == [
        64,
        64,
        128,
    ]
    assert model.res2[0].conv1.out_channels == 128 and model.res2[0].conv2.out_channels == 256
    assert model.res3[0].shortcut.weight.shape[-2:] == (3, 3)
