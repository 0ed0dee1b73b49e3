import pytest
import torch
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.resnet import BottleneckBlock, build_resnet_backbone
from torch.nn import functional as F

from se_detectron.modeling import SE_POSITIONS, SEBottleneckBlock, SEConfigError, build_se_resnet


def test_builders_are_registered():
    for name in (
        "build_se_resnet_backbone",
        "build_se_resnet_fpn_backbone",
        "build_retinanet_se_resnet_fpn_backbone",
    ):
        assert BACKBONE_REGISTRY.get(name) is not None


@pytest.mark.parametrize(
    "name,out_features,expected",
    [
        ("build_se_resnet_backbone", ["res2", "res3", "res4", "res5"], None),
        ("build_se_resnet_fpn_backbone", ["res2", "res3", "res4", "res5"], "p2 p3 p4 p5 p6"),
        ("build_retinanet_se_resnet_fpn_backbone", ["res3", "res4", "res5"], "p3 p4 p5 p6 p7"),
    ],
)
def test_output_shape_matches_outputs(se_cfg, name, out_features, expected):
    se_cfg.MODEL.BACKBONE.NAME = name
    se_cfg.MODEL.RESNETS.OUT_FEATURES = out_features
    se_cfg.MODEL.FPN.IN_FEATURES = out_features
    backbone = build_backbone(se_cfg).eval()
    shapes = backbone.output_shape()
    if expected is not None:
        assert sorted(shapes) == expected.split()
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 128, 256))
    assert set(outputs) == set(shapes)
    for key, spec in shapes.items():
        assert outputs[key].shape[1] == spec.channels, key
        assert outputs[key].shape[2:] == (128 // spec.stride, 256 // spec.stride), key


def test_state_dict_is_detectron2_resnet_plus_se(se_cfg):
    """Same names and shapes as Detectron2's ResNet; SE adds only `se.fc*` tensors."""
    plain = build_resnet_backbone(se_cfg, ShapeSpec(channels=3)).state_dict()
    se_cfg.MODEL.SE.STAGES = []
    assert {
        k: v.shape for k, v in build_se_resnet(se_cfg, ShapeSpec(channels=3)).state_dict().items()
    } == {k: v.shape for k, v in plain.items()}
    se_cfg.MODEL.SE.STAGES = ["res3", "res5"]
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    extra = set(trunk.state_dict()) - set(plain)
    assert set(plain) <= set(trunk.state_dict())
    assert extra and all(".se.fc" in k for k in extra)
    assert {k.split(".")[0] for k in extra} == {"res3", "res5"}
    assert type(trunk.res2[0]) is BottleneckBlock
    assert isinstance(trunk.res3[0], SEBottleneckBlock)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at(se_cfg, freeze_at):
    se_cfg.MODEL.BACKBONE.FREEZE_AT = freeze_at
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    frozen_parts = (["stem"] + ["res2", "res3", "res4", "res5"])[:freeze_at]
    for name, p in trunk.named_parameters():
        assert p.requires_grad == (name.split(".")[0] not in frozen_parts), name
    if freeze_at >= 2:
        assert isinstance(trunk.res2[0].conv1.norm, FrozenBatchNorm2d)
        assert not trunk.res2[0].se.fc1.weight.requires_grad


def _reference_block(block, x, position):
    """The paper's Fig. 5 integration, written directly from the block's layers."""
    se = block.se
    shortcut = x if block.shortcut is None else block.shortcut(x)
    out = se(x) if position == "pre" else x
    out = F.relu(block.conv1(out))
    out = F.relu(block.conv2(out))
    if position == "3x3":
        out = se(out)
    out = block.conv3(out)
    if position == "standard":
        out = se(out)
    if position == "identity":
        shortcut = se(shortcut)
    out = F.relu(out + shortcut)
    return se(out) if position == "post" else out


@pytest.mark.parametrize("position", SE_POSITIONS)
@pytest.mark.parametrize("stride", [1, 2])
def test_block_positions(position, stride):
    torch.manual_seed(0)
    block = SEBottleneckBlock(
        64,
        128,
        bottleneck_channels=32,
        stride=stride,
        norm="BN",
        se_reduction=4,
        se_position=position,
    ).eval()
    x = torch.randn(2, 64, 8, 8)
    expected_se_channels = {"pre": 64, "3x3": 32}.get(position, 128)
    assert block.se.channels == expected_se_channels
    with torch.no_grad():
        torch.testing.assert_close(block(x.clone()), _reference_block(block, x, position))


def test_gradients_reach_every_parameter(se_cfg):
    se_cfg.MODEL.BACKBONE.FREEZE_AT = 0
    se_cfg.MODEL.RESNETS.NORM = "BN"
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    out = trunk(torch.randn(2, 3, 64, 64))
    sum(v.mean() for v in out.values()).backward()
    missing = [n for n, p in trunk.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


@pytest.mark.parametrize("norm", ["FrozenBN", "BN", "GN", "SyncBN"])
def test_norms(se_cfg, norm):
    se_cfg.MODEL.RESNETS.NORM = norm
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3)).eval()
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 2048, 2, 2)


def test_res5_dilation_and_custom_widths(se_cfg):
    se_cfg.MODEL.RESNETS.RES5_DILATION = 2
    se_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 128
    se_cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 32
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3)).eval()
    shapes = trunk.output_shape()
    assert shapes["res5"].stride == 16 and shapes["res5"].channels == 1024
    with torch.no_grad():
        assert trunk(torch.randn(1, 3, 64, 64))["res5"].shape == (1, 1024, 4, 4)


@pytest.mark.slow
def test_torchscript_scripting(se_cfg):
    import detectron2.export  # noqa: F401  (Detectron2's scripting patches for ResNet/FPN)

    se_cfg.MODEL.BACKBONE.NAME = "build_se_resnet_fpn_backbone"
    backbone = build_backbone(se_cfg).eval()
    scripted = torch.jit.script(backbone)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref, got = backbone(x), scripted(x)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key])


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("MODEL.SE.GATE", "foo", r"MODEL.SE.GATE='foo' is invalid: expected one of \('sigmoid'"),
        ("MODEL.SE.SQUEEZE", "sum", r"MODEL.SE.SQUEEZE='sum'.*\('avg', 'max'\)"),
        ("MODEL.SE.POSITION", "after", r"MODEL.SE.POSITION='after'.*'standard'"),
        ("MODEL.SE.REDUCTION", 0, "MODEL.SE.REDUCTION=0 is invalid: expected a positive integer"),
        ("MODEL.SE.REDUCTION", 512, r"MODEL.SE.REDUCTION=512 .*at most 256.*res2"),
        ("MODEL.SE.STAGES", ["res2", "res6"], r"MODEL.SE.STAGES=.*unknown: \['res6'\]"),
        ("MODEL.SE.STEM", "big", r"MODEL.SE.STEM='big'.*\('basic', 'deep'\)"),
        ("MODEL.SE.SHORTCUT_KERNEL", 5, "MODEL.SE.SHORTCUT_KERNEL=5"),
        (
            "MODEL.RESNETS.DEPTH",
            42,
            r"MODEL.RESNETS.DEPTH=42 is invalid: expected one of \(18, 34, 26, 50, 101, 152, 200",
        ),
        ("MODEL.RESNETS.RES5_DILATION", 3, "MODEL.RESNETS.RES5_DILATION=3"),
        (
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
            [False, True],
            r"MODEL.RESNETS.DEFORM_ON_PER_STAGE=\[False, True\] is invalid: expected four booleans",
        ),
        ("MODEL.SE.EXCITATION", "cbam", r"MODEL.SE.EXCITATION='cbam'.*\('fc', 'eca'\)"),
        ("MODEL.SE.HIDDEN_DIVISOR", 0, "MODEL.SE.HIDDEN_DIVISOR=0 is invalid"),
        ("MODEL.SE.RELU_BEFORE_SE", True, "MODEL.SE.RELU_BEFORE_SE=True is invalid.*bottleneck"),
        ("MODEL.SE.ACTIVATION_CHECKPOINTING", ["res6"], "MODEL.SE.ACTIVATION_CHECKPOINTING="),
        ("MODEL.BACKBONE.FREEZE_AT", 7, "MODEL.BACKBONE.FREEZE_AT=7"),
    ],
)
def test_bad_config_names_the_key(se_cfg, key, value, message):
    node = se_cfg
    *parents, leaf = key.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(SEConfigError, match=message):
        build_se_resnet(se_cfg, ShapeSpec(channels=3))


def test_reduction_checked_against_position_channels(se_cfg):
    # with the SE after the 3x3 conv, res2's SE sees only 64 channels
    se_cfg.MODEL.SE.POSITION = "3x3"
    se_cfg.MODEL.SE.REDUCTION = 128
    with pytest.raises(SEConfigError, match="at most 64"):
        build_se_resnet(se_cfg, ShapeSpec(channels=3))


@pytest.mark.parametrize(
    "depth,groups,width,position",
    [(50, 32, 4, "3x3"), (50, 1, 64, "pre"), (50, 1, 64, "standard"), (18, 1, 64, "pre")],
)
def test_se_unit_channels_is_what_the_trunk_builds(se_cfg, depth, groups, width, position):
    """The channel arithmetic the config checks and the weight converter use
    (modeling.archs.se_unit_channels) against the SE units of a built trunk (meta device)."""
    from se_detectron.modeling.archs import SE_STAGE_NAMES, se_unit_channels

    res = se_cfg.MODEL.RESNETS
    res.DEPTH, res.NUM_GROUPS, res.WIDTH_PER_GROUP = depth, groups, width
    res.RES2_OUT_CHANNELS = 64 if depth == 18 else 256
    res.STRIDE_IN_1X1 = groups == 1
    se_cfg.MODEL.SE.POSITION = position
    with torch.device("meta"):
        trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    checked = 0
    for stage_idx, name in enumerate(SE_STAGE_NAMES):
        for block_idx, block in enumerate(getattr(trunk, name)):
            want = se_unit_channels(
                position,
                stage_idx,
                block_idx,
                stem_out_channels=res.STEM_OUT_CHANNELS,
                res2_out_channels=res.RES2_OUT_CHANNELS,
                bottleneck_channels=groups * width,
            )
            assert block.se.fc1.in_channels == want, (name, block_idx)
            checked += 1
    assert checked == sum(len(getattr(trunk, n)) for n in SE_STAGE_NAMES) > 4


def test_unknown_se_key_is_rejected(se_cfg):
    # yacs: KeyError from merge_from_file, AssertionError from merge_from_list
    with pytest.raises((KeyError, AssertionError), match="MODEL.SE.RATIO"):
        se_cfg.merge_from_list(["MODEL.SE.RATIO", "8"])


def test_missing_add_se_config():
    from detectron2.config import get_cfg

    with pytest.raises(SEConfigError, match="add_se_config"):
        build_se_resnet(get_cfg(), ShapeSpec(channels=3))


def test_fpn_in_features_must_be_trunk_outputs(se_cfg):
    se_cfg.MODEL.BACKBONE.NAME = "build_se_resnet_fpn_backbone"
    se_cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    with pytest.raises(
        ValueError, match=r"MODEL.FPN.IN_FEATURES.*\['res2'\].*MODEL.RESNETS.OUT_FEATURES"
    ):
        build_backbone(se_cfg)


@pytest.mark.parametrize("depth, params", [(18, 11_768_992), (34, 21_941_844)])
def test_basic_block_trunks(se_cfg, depth, params):
    """SE-ResNet-18/34: Detectron2's BasicBlock trunk (same names and shapes) plus SE units."""
    from detectron2.modeling.backbone.resnet import BasicBlock

    from se_detectron.modeling import SEBasicBlock, build_se_resnet_classifier

    se_cfg.MODEL.RESNETS.DEPTH = depth
    se_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    plain = build_resnet_backbone(se_cfg, ShapeSpec(channels=3)).state_dict()
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    extra = set(trunk.state_dict()) - set(plain)
    assert set(plain) <= set(trunk.state_dict())
    assert extra and all(".se.fc" in k for k in extra)
    assert all(isinstance(b, SEBasicBlock) for s in ("res2", "res5") for b in getattr(trunk, s))
    assert {k: v.shape for k, v in trunk.state_dict().items() if k in plain} == {
        k: v.shape for k, v in plain.items()
    }
    # 1000-class classifier: the paper's SE-ResNet-18/34 sizes (timm rounds the SE widths up to
    # multiples of 8, which adds ~10k parameters there).
    classifier = build_se_resnet_classifier(se_cfg, num_classes=1000)
    assert sum(p.numel() for p in classifier.parameters()) == params
    se_cfg.MODEL.SE.STAGES = ["res3"]
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    assert type(trunk.res2[0]) is BasicBlock and isinstance(trunk.res3[0], SEBasicBlock)
    with torch.no_grad():
        out = trunk.eval()(torch.randn(1, 3, 64, 64))
    assert out["res5"].shape == (1, 512, 2, 2)


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity"])
def test_basic_block_positions(position):
    from se_detectron.modeling import SEBasicBlock

    torch.manual_seed(0)
    block = SEBasicBlock(32, 64, stride=2, norm="BN", se_reduction=4, se_position=position).eval()
    x = torch.randn(2, 32, 8, 8)
    with torch.no_grad():
        got = block(x)
        se = block.se
        shortcut = block.shortcut(x)
        inp = x * se.excitation(x) if position == "pre" else x
        branch = block.conv2(F.relu(block.conv1(inp)))
        if position == "standard":
            out = F.relu(branch * se.excitation(branch) + shortcut)
        elif position == "identity":
            out = F.relu(branch + shortcut * se.excitation(shortcut))
        else:
            out = F.relu(branch + shortcut)
        if position == "post":
            out = out * se.excitation(out)
    torch.testing.assert_close(got, out)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.RESNETS.RES2_OUT_CHANNELS", 256, "RES2_OUT_CHANNELS=256.*64 with MODEL.RESNETS"),
        ("MODEL.RESNETS.NUM_GROUPS", 32, "NUM_GROUPS=32"),
        ("MODEL.RESNETS.RES5_DILATION", 2, "RES5_DILATION=2"),
        ("MODEL.SE.POSITION", "3x3", "POSITION='3x3'"),
    ],
)
def test_basic_block_config_errors_name_the_key(se_cfg, key, value, message):
    se_cfg.MODEL.RESNETS.DEPTH = 18
    se_cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    se_cfg.merge_from_list([key, value])
    with pytest.raises(SEConfigError, match=message):
        build_se_resnet(se_cfg, ShapeSpec(channels=3))
