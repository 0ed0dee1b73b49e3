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

import pytest
import torch

from benchmarks.sizes import macs_as_in_paper
from se_detectron.modeling import build_se_resnet_classifier


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


def test_deformable_convs_count_as_their_convolution_plus_the_offset_conv(se_cfg):
    """tools/model_sizes.py counts torchvision's deformable conv as the dense convolution it
    samples for, so deformable res3-res5 add exactly their offset convolutions' multiply-adds."""
    from torch import nn

    from se_detectron.layers.deform_conv import DeformConv

    se_cfg.MODEL.RESNETS.NORM = "BN"
    plain = build_se_resnet_classifier(se_cfg, num_classes=1000).eval()
    se_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, True, True, True]
    deformable = build_se_resnet_classifier(se_cfg, num_classes=1000).eval()
    offset_macs, sizes = 0, {}
    hooks = [
        m.register_forward_hook(lambda m, i, o: sizes.__setitem__(m, o.shape[-2:]))
        for m in deformable.modules()
        if isinstance(m, nn.Conv2d) and not isinstance(m, DeformConv)
    ]
    deformable(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    for name, m in deformable.named_modules():
        if name.endswith("conv2_offset"):
            h, w = sizes[m]
            offset_macs += m.out_channels * h * w * m.weight[0].numel()
    assert offset_macs > 0 and sum(isinstance(m, DeformConv) for m in deformable.modules()) == 13
    assert macs_as_in_paper(deformable) == macs_as_in_paper(plain) + offset_macs


def test_detector_config_sizes_count_heads_and_deformable_convs():
    """tools/model_sizes.py's detector figures: the mask head runs on 100 detections even with
    random weights, and deformable res3-res5 add their offset convolutions."""
    from benchmarks.sizes import config_size

    faster = config_size("COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.yaml", 64, 96)
    mask = config_size("Misc/mask_rcnn_SE_R_50_FPN_1x_dconv_c3-c5.yaml", 64, 96)
    dconv = config_size("Misc/faster_rcnn_SE_R_50_FPN_1x_dconv_c3-c5.yaml", 64, 96)
    assert dconv["params_m"] > faster["params_m"] and dconv["gmacs"] > faster["gmacs"]
    # the mask head's four 3x3 convs and deconv on 100 RoIs of 14x14: > 10 GMACs
    assert mask["gmacs"] - dconv["gmacs"] > 10
