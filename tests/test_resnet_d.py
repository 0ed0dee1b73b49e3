"""SE-ResNet-D trunks: deep stems, average-pooled shortcuts, anti-aliasing, new depths, archs.

Equivalence of these trunks with timm's models is tested with converted weights in
test_checkpoint.py; here: the layers themselves against straightforward references, parameter
counts against timm, the configuration errors and the Detectron2 paths (FPN, DC5, scripting).
"""

import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from torch.nn import functional as F

from se_detectron import get_se_cfg
from se_detectron.modeling import (
    DeepStem,
    PooledBasicStem,
    SEBottleneckBlock,
    SEConfigError,
    build_se_resnet,
    build_se_resnet_classifier,
    make_se_resnet,
)
from se_detectron.modeling.archs import ARCHS, TIMM_MODEL_NAMES, apply_arch, resolve_arch_name


def _block(**kwargs):
    torch.manual_seed(0)
    args = dict(bottleneck_channels=16, stride=2, num_groups=4, norm="BN", se_reduction=4)
    args.update(kwargs)
    return SEBottleneckBlock(32, 64, **args).eval()


def test_avg_down_shortcut_is_pool_then_1x1_conv():
    block = _block(avg_down=True)
    assert block.shortcut.stride == (1, 1) and block.shortcut.kernel_size == (1, 1)
    x = torch.randn(2, 32, 9, 11)  # odd sizes: ceil_mode pooling, padding not counted
    with torch.no_grad():
        got = block(x)
        pooled = F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)
        shortcut = block.shortcut(pooled)
        branch = block.conv3(F.relu(block.conv2(F.relu(block.conv1(x)))))
        want = F.relu(branch * block.se.excitation(branch) + shortcut)
    assert got.shape == (2, 64, 5, 6)
    torch.testing.assert_close(got, want)
    # the last column/row of the pooled input averages one pixel, not two with a zero
    torch.testing.assert_close(pooled[..., -1, -1], x[..., -1, -1])


def test_anti_aliased_block_pools_after_the_stride_1_3x3():
    block = _block(anti_alias=True)
    assert block.conv2.stride == (1, 1) and block.conv1.stride == (1, 1)
    x = torch.randn(2, 32, 8, 12)
    with torch.no_grad():
        got = block(x)
        mid = F.avg_pool2d(F.relu(block.conv2(F.relu(block.conv1(x)))), 2)
        branch = block.conv3(mid)
        want = F.relu(branch * block.se.excitation(branch) + block.shortcut(x))
    torch.testing.assert_close(got, want)
    # a stride-1 block has nothing to anti-alias
    assert _block(anti_alias=True, stride=1).aa_stride == 1
    # odd sizes: the ceil-mode pool keeps the branch as large as the shortcut
    with torch.no_grad():
        assert block(torch.randn(1, 32, 9, 11)).shape == (1, 64, 5, 6)


def test_block_option_errors():
    with pytest.raises(ValueError, match="stride_in_1x1=False"):
        _block(anti_alias=True, stride_in_1x1=True)
    with pytest.raises(ValueError, match="shortcut_kernel_size must be 1"):
        _block(avg_down=True, shortcut_kernel_size=3)


@pytest.mark.parametrize("widths, names", [(None, (32, 32, 64)), ((24, 32), (24, 32, 64))])
def test_deep_stem_widths(widths, names):
    stem = DeepStem(3, 64, "BN", pool="max", widths=widths)
    got = tuple(getattr(stem, f"conv{i}").out_channels for i in (1, 2, 3))
    assert got == names
    assert stem(torch.randn(1, 3, 32, 32)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("pool, hw", [("max", 10), ("max_ceil", 9), ("avg", 10)])
def test_stem_pools(pool, hw):
    stem = PooledBasicStem(3, 16, "BN", pool=pool).eval()
    with torch.no_grad():
        assert stem(torch.randn(1, 3, 37, 37)).shape[-1] == hw  # 19 after the conv
    with pytest.raises(ValueError, match="stem pool must be one of"):
        PooledBasicStem(3, 16, "BN", pool="blur")


@pytest.mark.parametrize("arch", sorted(TIMM_MODEL_NAMES))
def test_parameter_counts_equal_timm(arch):
    """Every architecture has exactly the parameters of its timm model (1000-class head)."""
    timm = pytest.importorskip("timm")
    cfg = apply_arch(get_se_cfg(), arch)
    cfg.MODEL.RESNETS.NORM = "BN"  # FrozenBN's affine terms are buffers
    with torch.device("meta"):
        ours = build_se_resnet_classifier(cfg, num_classes=1000)
        theirs = timm.create_model(TIMM_MODEL_NAMES[arch], pretrained=False)
    shapes = sorted(tuple(p.shape) for p in ours.parameters())
    assert shapes == sorted(tuple(p.shape) for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_arch_names():
    assert resolve_arch_name("seresnextaa101d_32x8d") == "se_resnextaa101d_32x8d"
    assert resolve_arch_name("se_resnet152d") == "se_resnet152d"
    with pytest.raises(KeyError, match="unknown SE architecture 'seresnet18d'"):
        resolve_arch_name("seresnet18d")
    aa = ARCHS["se_resnextaa101d_32x8d"]
    assert aa["MODEL.SE.ANTI_ALIAS"] and aa["MODEL.SE.AVG_DOWN"] and aa["MODEL.SE.STEM"] == "deep"
    assert ARCHS["se_resnext26t_32x4d"]["MODEL.SE.STEM_WIDTHS"] == [24, 32]


def test_lazy_constructor_matches_yacs_builder():
    cfg = apply_arch(get_se_cfg(), "se_resnext26t_32x4d")
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    yacs = build_se_resnet(cfg, ShapeSpec(channels=3))
    lazy = make_se_resnet(
        depth=26,
        num_groups=32,
        width_per_group=4,
        stride_in_1x1=False,
        norm="BN",
        stem="deep",
        stem_widths=[24, 32],
        avg_down=True,
        out_features=["res2", "res3", "res4", "res5"],
    )
    assert {k: v.shape for k, v in yacs.state_dict().items()} == {
        k: v.shape for k, v in lazy.state_dict().items()
    }
    with pytest.raises(SEConfigError, match="avg_down=1 is invalid: expected True or False"):
        make_se_resnet(depth=26, stem="deep", avg_down=1)


def _d_cfg(arch="se_resnextaa101d_32x8d", **opts):
    cfg = get_se_cfg("Base-SE-RCNN-FPN.yaml")
    apply_arch(cfg, arch)
    # a small trunk with every ResNet-D option: depth 26, narrow, anti-aliased
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            26,
            "MODEL.RESNETS.NUM_GROUPS",
            4,
            "MODEL.RESNETS.WIDTH_PER_GROUP",
            4,
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            64,
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            32,
            "MODEL.BACKBONE.FREEZE_AT",
            0,
            "MODEL.RESNETS.NORM",
            "BN",
        ]
    )
    for key, value in opts.items():
        cfg.merge_from_list([key, value])
    return cfg


def test_fpn_backbone_and_scripting():
    import detectron2.export  # noqa: F401  (Detectron2's scripting patches for ResNet/FPN)

    cfg = _d_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_se_resnet_fpn_backbone"
    backbone = build_backbone(cfg).eval()
    assert backbone.bottom_up.res3[0].aa_stride == 2
    assert backbone.bottom_up.res3[0].avg_down_stride == 2
    scripted = torch.jit.script(backbone)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref, got = backbone(x), scripted(x)
    assert ref["p2"].shape == (1, 256, 16, 24)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key])


def test_dilated_res5_shortcut_has_no_pool():
    cfg = _d_cfg("se_resnext26d_32x4d", **{"MODEL.RESNETS.RES5_DILATION": 2})
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    trunk = build_se_resnet(cfg, ShapeSpec(channels=3)).eval()
    first = trunk.res5[0]
    assert first.avg_down_stride == 1 and first.shortcut is not None
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 512, 4, 4)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.SE.STEM_WIDTHS", [24], r"MODEL.SE.STEM_WIDTHS=\[24\] is invalid.*two positive"),
        (
            "MODEL.RESNETS.STRIDE_IN_1X1",
            True,
            "MODEL.RESNETS.STRIDE_IN_1X1=True is invalid: expected False with "
            "MODEL.SE.ANTI_ALIAS=True",
        ),
        ("MODEL.SE.STEM_CEIL_POOL", True, "MODEL.SE.STEM_CEIL_POOL=True.*False with .*ANTI_ALIAS"),
        ("MODEL.SE.SHORTCUT_KERNEL", 3, "MODEL.SE.SHORTCUT_KERNEL=3.*1 with MODEL.SE.AVG_DOWN"),
        ("MODEL.SE.STAGES", ["res4", "res5"], r"MODEL.SE.STAGES=.*all of .*AVG_DOWN=True"),
    ],
)
def test_resnet_d_config_errors_name_the_key(key, value, message):
    cfg = _d_cfg()
    cfg.merge_from_list([key, value])
    with pytest.raises(SEConfigError, match=message):
        build_se_resnet(cfg, ShapeSpec(channels=3))


def test_resnet_d_options_need_their_blocks():
    cfg = get_se_cfg()
    cfg.merge_from_list(["MODEL.SE.STEM_WIDTHS", [24, 32]])
    with pytest.raises(SEConfigError, match=r"STEM_WIDTHS=\[24, 32\].*\[\] with MODEL.SE.STEM"):
        build_se_resnet(cfg, ShapeSpec(channels=3))
    cfg = apply_arch(get_se_cfg(), "se_resnet18")
    cfg.MODEL.SE.AVG_DOWN = True
    with pytest.raises(SEConfigError, match="MODEL.SE.AVG_DOWN=True.*DEPTH=18 \\(basic blocks\\)"):
        build_se_resnet(cfg, ShapeSpec(channels=3))
