"""Trunk options beyond the paper: deformable 3x3 convs (torchvision's op, Detectron2's keys and
names), activation checkpointing per stage, ECA as an excitation of the SE layer, timm's rounded
SE widths and the basic block's ReLU before SE. Tiny inputs and trunks, random weights."""

import pytest
import torch
from detectron2.layers import ShapeSpec
from torch.nn import functional as F

from se_detectron.analysis.recorder import ExcitationRecorder
from se_detectron.export.core import ExportRouteError, export_backbone
from se_detectron.layers import DeformConv, SqueezeExcitation, eca_kernel_size, se_fast_path
from se_detectron.modeling import SEBasicBlock, SEBottleneckBlock, build_se_resnet, make_se_resnet
from se_detectron.modeling.activation_checkpoint import CheckpointedStage

TINY = dict(depth=26, width_per_group=8, res2_out_channels=32, stem_out_channels=16, norm="BN")


def _block(**kwargs):
    torch.manual_seed(0)
    args = dict(bottleneck_channels=8, stride=2, num_groups=2, norm="BN", se_reduction=4)
    args.update(kwargs)
    return SEBottleneckBlock(16, 32, **args).eval()


def _randomize_bn(module):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return module


@pytest.mark.parametrize("modulated", [False, True])
def test_deformable_block_starts_as_the_plain_block(modulated):
    """conv2_offset starts at zero (Detectron2's init): DCNv1 is the plain block; DCNv2's mask is
    sigmoid(0) = 0.5, i.e. the plain block with half the 3x3 weights."""
    deform = _randomize_bn(_block(deform=True, deform_modulated=modulated, deform_num_groups=2))
    plain = _randomize_bn(_block())
    assert isinstance(deform.conv2, DeformConv)
    assert deform.conv2_offset.weight.shape == ((27 if modulated else 18) * 2, 8, 3, 3)
    state = {k: v for k, v in deform.state_dict().items() if "conv2_offset" not in k}
    assert set(deform.state_dict()) - set(state) == {"conv2_offset.weight", "conv2_offset.bias"}
    if modulated:
        state["conv2.weight"] = state["conv2.weight"] * 0.5
    plain.load_state_dict(state)
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(deform(x), plain(x))


@pytest.mark.parametrize("stride, dilation, groups", [(1, 1, 1), (2, 2, 2)])
def test_deform_conv_is_the_convolution_at_zero_offsets(stride, dilation, groups):
    torch.manual_seed(0)
    conv = DeformConv(
        4, 6, 3, stride=stride, padding=dilation, dilation=dilation, groups=groups, bias=False
    )
    x = torch.randn(2, 4, 8, 9)
    h, w = conv._conv_forward(x, conv.weight, None).shape[-2:]
    offset = torch.zeros(2, 18, h, w)
    with torch.no_grad():
        torch.testing.assert_close(
            conv(x, offset), F.conv2d(x, conv.weight, None, stride, dilation, dilation, groups)
        )
        # a whole-pixel offset of +1 row samples the next row: the conv of the shifted input
        shifted = torch.zeros_like(offset)
        shifted[:, 0::2] = 1.0
        d = dilation  # the padded input moved up by one row (zeros past its last row)
        moved = F.pad(F.pad(x, (d, d, d, d))[:, :, 1:], (0, 0, 0, 1))
        ref = F.conv2d(moved, conv.weight, None, stride, 0, dilation, groups)
        torch.testing.assert_close(conv(x, shifted, torch.ones(2, 9, h, w)), ref)


def test_deform_conv_gradcheck():
    """Gradients of input, offsets, mask and weight (float64, fractional offsets)."""
    g = torch.Generator().manual_seed(0)
    conv = DeformConv(1, 2, 3, padding=1, bias=False).double()
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    offset = (torch.rand(1, 18, 3, 3, dtype=torch.float64, generator=g) - 0.5).requires_grad_()
    mask = torch.rand(1, 9, 3, 3, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: conv(*a), (x, offset, mask), eps=1e-6, atol=1e-5)


def test_deformable_trunk_trains_and_exports_to_torchscript(tmp_path):
    torch.manual_seed(0)
    trunk = make_se_resnet(
        **TINY, deform_on_per_stage=[False, True, True, True], deform_modulated=True
    )
    assert trunk.res2[0].conv2_offset is None and trunk.res3[0].conv2_offset is not None
    opt = torch.optim.SGD(trunk.parameters(), lr=0.1)
    x = torch.randn(2, 3, 32, 32)
    loss = sum(v.square().mean() for v in trunk(x).values())
    loss.backward()
    assert trunk.res4[0].conv2_offset.weight.grad.abs().sum() > 0  # offsets learn
    opt.step()
    assert trunk.res4[0].conv2_offset.weight.abs().sum() > 0
    trunk.eval()
    with torch.no_grad():
        ref = trunk(x)
    result = export_backbone(trunk, x, "torchscript", "scripting", str(tmp_path))
    got = result.run(x)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key])
    with pytest.raises(ExportRouteError, match="torchvision's deform_conv2d has no ONNX"):
        export_backbone(trunk, x, "onnx", "tracing", str(tmp_path))


def test_deform_config_keys(se_cfg):
    se_cfg.MODEL.RESNETS.NORM = "BN"
    se_cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, True]
    se_cfg.MODEL.RESNETS.DEFORM_NUM_GROUPS = 2
    trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    assert trunk.res5[0].conv2_offset.out_channels == 36 and trunk.res4[0].conv2_offset is None
    se_cfg.MODEL.SE.STAGES = ["res2", "res3", "res4"]
    with pytest.raises(ValueError, match=r"DEFORM_ON_PER_STAGE=.*plain stages \['res5'\]"):
        build_se_resnet(se_cfg, ShapeSpec(channels=3))


def test_activation_checkpointing_same_loss_gradients_and_statistics():
    """With the fused SE path and a deformable res4 inside the checkpointed stages."""
    torch.manual_seed(0)
    opts = dict(TINY, se_stages=["res2", "res3", "res4", "res5"])
    opts.update(deform_on_per_stage=[False, False, True, False])
    plain = make_se_resnet(**opts)
    checkpointed = make_se_resnet(**opts, activation_checkpointing=["res2", "res3", "res4"])
    checkpointed.load_state_dict(plain.state_dict())
    assert (
        isinstance(checkpointed.res3, CheckpointedStage)
        and checkpointed.stages[1] is checkpointed.res3
    )
    assert list(checkpointed.state_dict()) == list(plain.state_dict())
    calls = []
    checkpointed.res3[0].conv1.register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    losses = [sum(v.square().mean() for v in m(x).values()) for m in (plain, checkpointed)]
    for loss in losses:
        loss.backward()
    assert losses[0].item() == losses[1].item()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        assert torch.equal(a.grad, b.grad), name
    # the block ran again in the backward pass; BatchNorm counted the batch once
    assert len(calls) == 2
    for (name, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values()):
        assert torch.equal(a, b), name
    # inference does not checkpoint
    checkpointed.eval()
    with torch.no_grad():
        checkpointed(x)
    assert len(calls) == 3


def test_activation_checkpointing_config_key(se_cfg):
    se_cfg.MODEL.RESNETS.NORM = "BN"
    se_cfg.MODEL.SE.ACTIVATION_CHECKPOINTING = ["res4", "res5"]
    with torch.device("meta"):
        trunk = build_se_resnet(se_cfg, ShapeSpec(channels=3))
    assert [type(s).__name__ for s in trunk.stages] == ["Sequential"] * 2 + [
        "CheckpointedStage"
    ] * 2


@pytest.mark.parametrize("channels, k", [(32, 3), (64, 3), (128, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size(channels, k):
    """k = |log2(C)/gamma + b/gamma|_odd with gamma = 2, b = 1 (ECA-Net Sec. 3.3), at least 3."""
    assert eca_kernel_size(channels) == k
    layer = SqueezeExcitation(channels, excitation="eca")
    assert layer.conv.kernel_size == (k,) and layer.fc1 is None
    assert sum(p.numel() for p in layer.parameters()) == k  # no reduction, no bias


def test_eca_is_a_1d_convolution_across_channels():
    torch.manual_seed(0)
    layer = SqueezeExcitation(16, squeeze="max", gate="tanh", excitation="eca")
    x = torch.randn(2, 16, 5, 6)
    z = x.amax((2, 3))
    w = layer.conv.weight.view(-1)
    padded = F.pad(z, (1, 1))
    s = torch.tanh(sum(w[i] * padded[:, i : i + 16] for i in range(3)))
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x * s[:, :, None, None])


@pytest.mark.parametrize("position", ["standard", "pre", "post", "identity", "3x3"])
def test_eca_every_position_fast_path_and_recorder(position):
    block = _block(se_excitation="eca", se_position=position).train()
    x = torch.randn(2, 16, 8, 8)
    grads = []
    for fast in (True, False):
        block.zero_grad()
        with se_fast_path(fast):
            out = block(x)
        out.square().sum().backward()
        grads.append((out.detach(), block.se.conv.weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    with ExcitationRecorder(block, num_classes=2) as rec, torch.no_grad():
        rec.set_labels([0, 1])
        block.eval()(x)
    channels = {"pre": 16, "3x3": 8}.get(position, 32)
    assert rec.stats["se"].mean().shape == (channels,)


def test_hidden_divisor_gives_timm_widths():
    widths = [
        SqueezeExcitation(c, 16, hidden_divisor=8).fc1.out_channels for c in (64, 128, 256, 512)
    ]
    assert widths == [8, 8, 16, 32]
    assert [SqueezeExcitation(c, 16).fc1.out_channels for c in (64, 128)] == [4, 8]


def test_basic_block_relu_before_se():
    torch.manual_seed(0)
    block = SEBasicBlock(8, 8, norm="BN", se_reduction=4, se_relu_before_se=True).eval()
    _randomize_bn(block)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        branch = F.relu(block.conv2(F.relu(block.conv1(x))))
        torch.testing.assert_close(block(x), F.relu(branch * block.se.excitation(branch) + x))
    with pytest.raises(ValueError, match="needs the 'standard' SE position"):
        SEBasicBlock(8, 8, se_relu_before_se=True, se_position="post")
