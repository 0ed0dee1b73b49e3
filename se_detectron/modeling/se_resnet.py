"""SE-ResNet / SE-ResNeXt / SENet-154 trunks built from Detectron2's own ResNet.

Only what Squeeze-and-Excitation needs is added here: :class:`SEBottleneckBlock` (Detectron2's
``BottleneckBlock`` plus an SE unit at one of the paper's integration positions),
:class:`SEBasicBlock` (the same for Detectron2's two-conv ``BasicBlock`` of ResNet-18/34) and
:class:`DeepStem` (SENet-154's three-conv stem). Stages are made with ``ResNet.make_stage`` and
assembled by Detectron2's ``ResNet``, so module names, ``freeze_at``, ``out_features`` and
``output_shape()`` behave exactly like ``build_resnet_backbone``. :func:`make_se_resnet` is the
keyword-argument (LazyConfig) constructor, :func:`build_se_resnet` the yacs one; both assemble the
trunk with the same code.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from detectron2.layers import CNNBlockBase, Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet
from fvcore.nn import weight_init
from torch.nn import functional as F

from ..layers import SqueezeExcitation
from .config_check import (
    BASIC_DEPTHS,
    BASIC_SE_POSITIONS,
    SE_POSITIONS,
    SE_STAGE_NAMES,
    SEConfigError,
    check_se_config,
    check_se_options,
    se_trunk_options,
)

__all__ = [
    "SE_POSITIONS",
    "DeepStem",
    "SEBasicBlock",
    "SEBottleneckBlock",
    "build_se_resnet",
    "build_se_resnet_backbone",
    "make_se_resnet",
]


# Blocks per stage (ResNet paper Table 1): depths 18/34 are made of two-conv basic blocks, the
# others of bottleneck blocks.
NUM_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
}


class _SEResidualJoin:
    """The end of an SE residual block, shared by :class:`SEBottleneckBlock` and
    :class:`SEBasicBlock` (a method, so that TorchScript scripting compiles it with the block)."""

    def _join_branches(self, branch: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        """Addition with the SE unit at ``self.se_position``, then ReLU.

        ``standard`` scales the residual branch before the addition, ``identity`` the shortcut,
        ``post`` the sum after the ReLU (paper Fig. 5); ``pre`` / ``3x3`` were applied earlier.
        The block owns ``branch`` (its last conv's output), so it may be overwritten;
        ``shortcut`` may be the block input and never is.
        """
        position = self.se_position
        if position == "standard":
            out = self.se.scale_add(branch, shortcut, inplace=True)
        elif position == "identity":
            out = self.se.scale_add(shortcut, branch)
        else:
            out = branch + shortcut
        out = F.relu_(out)
        if position == "post":
            out = self.se(out, inplace=True)
        return out


class SEBottleneckBlock(BottleneckBlock, _SEResidualJoin):
    """Detectron2's bottleneck block with a Squeeze-and-Excitation unit (paper Fig. 3, Fig. 5).

    All of ``BottleneckBlock``'s arguments keep their meaning; the ``se_*`` arguments configure
    the SE unit and the two SENet-154 options change the block's shape.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        bottleneck_channels: channels of the 3x3 conv.
        stride: stride of the block.
        num_groups: groups of the 3x3 conv (cardinality, for SE-ResNeXt).
        norm: normalization of every conv, see ``detectron2.layers.get_norm``.
        stride_in_1x1: put the stride in the first 1x1 conv (as the paper and MSRA ResNet) rather
            than in the 3x3 conv.
        dilation: dilation of the 3x3 conv.
        se_reduction: reduction ratio r.
        se_squeeze: ``"avg"`` or ``"max"``.
        se_gate: ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
        se_bias: biases in the excitation FC layers.
        se_position: one of :data:`SE_POSITIONS` (see ``MODEL.SE.POSITION`` in config.py).
        conv1_channels: output channels of the first 1x1 conv; None means ``bottleneck_channels``.
            SENet-154 uses half of it.
        shortcut_kernel_size: kernel of the projection shortcut conv (1, or 3 in SENet-154).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm="BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
        se_reduction: int = 16,
        se_squeeze: str = "avg",
        se_gate: str = "sigmoid",
        se_bias: bool = True,
        se_position: str = "standard",
        conv1_channels: Optional[int] = None,
        shortcut_kernel_size: int = 1,
    ):
        super().__init__(
            in_channels,
            out_channels,
            bottleneck_channels=bottleneck_channels,
            stride=stride,
            num_groups=num_groups,
            norm=norm,
            stride_in_1x1=stride_in_1x1,
            dilation=dilation,
        )
        if se_position not in SE_POSITIONS:
            raise ValueError(f"SE position must be one of {SE_POSITIONS}, got {se_position!r}")
        if conv1_channels is not None and conv1_channels != bottleneck_channels:
            stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
            self.conv1 = Conv2d(
                in_channels,
                conv1_channels,
                kernel_size=1,
                stride=stride_1x1,
                bias=False,
                norm=get_norm(norm, conv1_channels),
            )
            self.conv2 = Conv2d(
                conv1_channels,
                bottleneck_channels,
                kernel_size=3,
                stride=stride_3x3,
                padding=dilation,
                bias=False,
                groups=num_groups,
                dilation=dilation,
                norm=get_norm(norm, bottleneck_channels),
            )
            weight_init.c2_msra_fill(self.conv1)
            weight_init.c2_msra_fill(self.conv2)
        if shortcut_kernel_size != 1 and self.shortcut is not None:
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=shortcut_kernel_size,
                stride=stride,
                padding=shortcut_kernel_size // 2,
                bias=False,
                norm=get_norm(norm, out_channels),
            )
            weight_init.c2_msra_fill(self.shortcut)

        se_channels = {"pre": in_channels, "3x3": bottleneck_channels}.get(
            se_position, out_channels
        )
        self.se_position = se_position
        self.se = SqueezeExcitation(
            se_channels, reduction=se_reduction, squeeze=se_squeeze, gate=se_gate, bias=se_bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.se_position
        shortcut = x if self.shortcut is None else self.shortcut(x)

        # The block owns the outputs of its convolutions, so the SE layer may overwrite them
        # (inplace=True; it does so only when autograd does not need them), never x or shortcut.
        out = self.se(x) if position == "pre" else x
        out = F.relu_(self.conv1(out))
        out = F.relu_(self.conv2(out))
        if position == "3x3":
            out = self.se(out, inplace=True)
        return self._join_branches(self.conv3(out), shortcut)


class SEBasicBlock(BasicBlock, _SEResidualJoin):
    """Detectron2's two-conv basic block (ResNet-18/34) with a Squeeze-and-Excitation unit.

    The SE unit recalibrates the residual branch before the addition (the paper's standard
    position, as timm's ``seresnet18/34``), or sits at the ``pre``, ``post`` or ``identity``
    position of Fig. 5. Parameter names are ``BasicBlock``'s plus ``se.fc1`` / ``se.fc2``.

    Args:
        in_channels: input channels.
        out_channels: output channels (of both 3x3 convs).
        stride: stride of the first 3x3 conv and of the projection shortcut.
        norm: normalization of every conv, see ``detectron2.layers.get_norm``.
        se_reduction: reduction ratio r.
        se_squeeze: ``"avg"`` or ``"max"``.
        se_gate: ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
        se_bias: biases in the excitation FC layers.
        se_position: ``"standard"``, ``"pre"``, ``"post"`` or ``"identity"`` (a basic block has
            no 3x3-between-1x1s position).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        stride: int = 1,
        norm="BN",
        se_reduction: int = 16,
        se_squeeze: str = "avg",
        se_gate: str = "sigmoid",
        se_bias: bool = True,
        se_position: str = "standard",
    ):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        if se_position not in BASIC_SE_POSITIONS:
            raise ValueError(
                f"SE position of a basic block must be one of {BASIC_SE_POSITIONS}, "
                f"got {se_position!r}"
            )
        self.se_position = se_position
        se_channels = in_channels if se_position == "pre" else out_channels
        self.se = SqueezeExcitation(
            se_channels, reduction=se_reduction, squeeze=se_squeeze, gate=se_gate, bias=se_bias
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.se_position
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.se(x) if position == "pre" else x
        out = F.relu_(self.conv1(out))
        return self._join_branches(self.conv2(out), shortcut)


class DeepStem(CNNBlockBase):
    """SENet-154's stem: three 3x3 convs replace the 7x7 conv (paper appendix), then max-pool.

    Args:
        in_channels: input channels.
        out_channels: channels of the last conv; the first two have ``out_channels // 2``
            (64-64-128 in SENet-154).
        norm: normalization after each conv.
        ceil_pool: max-pool with ``ceil_mode=True`` and no padding, as the released model;
            False pools with padding 1 like ``BasicStem``.
    """

    def __init__(self, in_channels=3, out_channels=128, norm="BN", ceil_pool=True):
        super().__init__(in_channels, out_channels, 4)
        mid = out_channels // 2
        self.ceil_pool = ceil_pool
        self.conv1 = Conv2d(
            in_channels, mid, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, mid)
        )
        self.conv2 = Conv2d(mid, mid, 3, padding=1, bias=False, norm=get_norm(norm, mid))
        self.conv3 = Conv2d(
            mid, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return _stem_pool(x, self.ceil_pool)


class CeilPoolBasicStem(BasicStem):
    """Detectron2's BasicStem with the released SENet models' max-pool (ceil mode, no padding)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _stem_pool(F.relu_(self.conv1(x)), True)


def _stem_pool(x: torch.Tensor, ceil_pool: bool) -> torch.Tensor:
    if ceil_pool:
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def se_block_kwargs(cfg, stage: str, bottleneck_channels: int, dilation: int = 1) -> Dict[str, Any]:
    """The ``block_class`` and block arguments of one stage, for ``ResNet.make_stage``.

    The config form of :func:`_stage_block_kwargs`, used by
    :class:`~se_detectron.modeling.SERes5ROIHeads` for the C4 head's res5 (the same choice of
    block and options as the trunk's stages).

    Args:
        cfg: a config with ``add_se_config`` applied (already checked).
        stage: ``"res2"`` ... ``"res5"``; SE blocks if it is in ``MODEL.SE.STAGES``.
        bottleneck_channels: the stage's 3x3 conv width (bottleneck blocks).
        dilation: the stage's dilation (bottleneck blocks).

    Returns:
        dict: ``block_class`` and its keyword arguments (without channels, strides and norm).
    """
    return _stage_block_kwargs(se_trunk_options(cfg), stage, bottleneck_channels, dilation)


def _stage_block_kwargs(
    options: Dict[str, Any], stage: str, bottleneck_channels: int, dilation: int = 1
) -> Dict[str, Any]:
    """The one place that decides plain vs SE block and passes the block options of a stage.

    Args:
        options: the trunk options (:func:`make_se_resnet`'s keyword arguments, checked).
        stage: ``"res2"`` ... ``"res5"``; SE blocks if it is in ``options["se_stages"]``.
        bottleneck_channels: the stage's 3x3 conv width (bottleneck blocks).
        dilation: the stage's dilation (bottleneck blocks).
    """
    o = options
    se_kwargs = {
        "se_reduction": o["se_reduction"],
        "se_squeeze": o["se_squeeze"],
        "se_gate": o["se_gate"],
        "se_bias": o["se_bias"],
        "se_position": o["se_position"],
    }
    with_se = stage in o["se_stages"]
    if o["depth"] in BASIC_DEPTHS:
        # ResNet-18/34: BasicBlock takes no bottleneck/group/dilation arguments (as Detectron2's)
        if with_se:
            return {"block_class": SEBasicBlock, **se_kwargs}
        return {"block_class": BasicBlock}
    kwargs = {
        "block_class": BottleneckBlock,
        "bottleneck_channels": bottleneck_channels,
        "num_groups": o["num_groups"],
        "stride_in_1x1": o["stride_in_1x1"],
        "dilation": dilation,
    }
    if with_se:
        kwargs.update(
            block_class=SEBottleneckBlock,
            conv1_channels=int(round(bottleneck_channels * o["conv1_width_ratio"])),
            shortcut_kernel_size=o["shortcut_kernel"] if stage != "res2" else 1,
            **se_kwargs,
        )
    return kwargs


def make_se_resnet(
    *,
    depth: int = 50,
    num_groups: int = 1,
    width_per_group: int = 64,
    stride_in_1x1: bool = True,
    stem_out_channels: int = 64,
    res2_out_channels: Optional[int] = None,
    res5_dilation: int = 1,
    norm: Union[str, Callable] = "BN",
    out_features: Sequence[str] = SE_STAGE_NAMES,
    freeze_at: int = 0,
    se_stages: Sequence[str] = SE_STAGE_NAMES,
    se_reduction: int = 16,
    se_squeeze: str = "avg",
    se_gate: str = "sigmoid",
    se_bias: bool = True,
    se_position: str = "standard",
    stem: str = "basic",
    stem_ceil_pool: bool = False,
    conv1_width_ratio: float = 1.0,
    shortcut_kernel: int = 1,
    in_channels: int = 3,
    num_classes: Optional[int] = None,
) -> ResNet:
    """An SE-ResNet / SE-ResNeXt / SENet-154 trunk from keyword arguments (LazyConfig-friendly).

    The keyword form of :func:`build_se_resnet` (which calls this same assembly with the
    options read from a yacs config; ``config_check.SE_TRUNK_CFG_KEYS`` gives the key of each
    argument). Use it where Detectron2's LazyConfigs use ``L(ResNet)(stem=..., stages=...)``::

        from detectron2.config import LazyCall as L
        from se_detectron.modeling import make_se_resnet

        model.backbone.bottom_up = L(make_se_resnet)(
            depth=50, norm="FrozenBN", freeze_at=2, out_features=["res2", "res3", "res4", "res5"]
        )

    Args:
        depth: 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        num_groups: groups of the 3x3 convs (32 for SE-ResNeXt 32x4d).
        width_per_group: 3x3 conv width per group in res2 (4 for SE-ResNeXt 32x4d).
        stride_in_1x1: stride in the first 1x1 conv (SE-ResNet, MSRA) or in the 3x3 conv.
        stem_out_channels: channels out of the stem (128 for SENet-154).
        res2_out_channels: channels out of res2; None: 64 for depth 18/34, else 256.
        res5_dilation: 1, or 2 for a res5 without stride.
        norm: normalization of every conv (``"BN"``, ``"FrozenBN"``, ``"SyncBN"``, ``"GN"``...
            or a callable, see ``detectron2.layers.get_norm``).
        out_features: outputs among ``"stem"``, ``"res2"`` ... ``"res5"``.
        freeze_at: 0 (nothing frozen) .. 5: freeze the stem and the first stages, as
            ``MODEL.BACKBONE.FREEZE_AT``.
        se_stages: stages with SE blocks; the others use Detectron2's plain blocks.
        se_reduction: reduction ratio r (paper default 16).
        se_squeeze: ``"avg"`` or ``"max"``.
        se_gate: ``"sigmoid"``, ``"tanh"`` or ``"relu"``.
        se_bias: biases in the excitation FC layers.
        se_position: one of :data:`SE_POSITIONS` (``"3x3"`` only with bottleneck blocks).
        stem: ``"basic"`` (7x7 conv) or ``"deep"`` (SENet-154's three 3x3 convs).
        stem_ceil_pool: the released models' ceil-mode stem max-pool.
        conv1_width_ratio: width of each bottleneck's first 1x1 conv relative to its 3x3 conv
            (0.5 in SENet-154).
        shortcut_kernel: kernel of the strided projection shortcuts of res3-res5 (1 or 3).
        in_channels: image channels.
        num_classes: if given, a classifier head named ``linear`` (ImageNet pretraining); the
            output is then ``linear`` and ``out_features`` / ``freeze_at`` are not used.

    Returns:
        ResNet: Detectron2's ``ResNet``; ``state_dict`` names are ``build_resnet_backbone``'s.

    Raises:
        SEConfigError: naming the invalid argument, its value and what is accepted.
    """
    if res2_out_channels is None:
        res2_out_channels = 64 if depth in BASIC_DEPTHS else 256
    options = {
        "depth": depth,
        "num_groups": num_groups,
        "width_per_group": width_per_group,
        "stride_in_1x1": stride_in_1x1,
        "stem_out_channels": stem_out_channels,
        "res2_out_channels": res2_out_channels,
        "res5_dilation": res5_dilation,
        "norm": norm,
        "out_features": out_features,
        "freeze_at": freeze_at,
        "se_stages": se_stages,
        "se_reduction": se_reduction,
        "se_squeeze": se_squeeze,
        "se_gate": se_gate,
        "se_bias": se_bias,
        "se_position": se_position,
        "stem": stem,
        "stem_ceil_pool": stem_ceil_pool,
        "conv1_width_ratio": conv1_width_ratio,
        "shortcut_kernel": shortcut_kernel,
    }
    check_se_options(options)
    if not isinstance(in_channels, int) or in_channels < 1:
        raise SEConfigError(f"in_channels={in_channels!r} is invalid: expected a positive integer")
    return _assemble_se_resnet(options, in_channels, num_classes)


def build_se_resnet(cfg, input_shape: ShapeSpec, num_classes: Optional[int] = None) -> ResNet:
    """Build a Detectron2 ``ResNet`` whose stages in ``MODEL.SE.STAGES`` use SE bottlenecks.

    Reads ``MODEL.RESNETS.*`` with Detectron2's meaning, ``MODEL.BACKBONE.FREEZE_AT`` and
    ``MODEL.SE.*``; validates them first (see :func:`check_se_config`). The trunk is assembled
    by the same code as :func:`make_se_resnet` (its keyword form).

    Args:
        cfg: a config with ``add_se_config`` applied.
        input_shape: shape of the input image tensor (its channels are used).
        num_classes: if given, a classifier (global average pool + linear layer named
            ``linear``) is added and ``linear`` is the output feature, for ImageNet pretraining.

    Returns:
        ResNet: the trunk; its ``state_dict`` names are those of ``build_resnet_backbone``.
    """
    check_se_config(cfg)
    return _assemble_se_resnet(se_trunk_options(cfg), input_shape.channels, num_classes)


def _assemble_se_resnet(
    options: Dict[str, Any], in_channels: int, num_classes: Optional[int]
) -> ResNet:
    """Stem + stages of checked trunk ``options`` (:func:`make_se_resnet`'s arguments)."""
    o = options
    norm, stem_out_channels = o["norm"], o["stem_out_channels"]
    if o["stem"] == "deep":
        stem = DeepStem(in_channels, stem_out_channels, norm, ceil_pool=o["stem_ceil_pool"])
    else:
        stem_class = CeilPoolBasicStem if o["stem_ceil_pool"] else BasicStem
        stem = stem_class(in_channels, stem_out_channels, norm)

    in_channels = stem_out_channels
    out_channels = o["res2_out_channels"]
    bottleneck_channels = o["num_groups"] * o["width_per_group"]
    stages: List[List[CNNBlockBase]] = []
    blocks_per_stage = NUM_BLOCKS_PER_STAGE[o["depth"]]
    for idx, (name, num_blocks) in enumerate(zip(SE_STAGE_NAMES, blocks_per_stage)):
        # res5_dilation is used this way as a convention in R-FCN & Deformable Conv paper
        dilation = o["res5_dilation"] if name == "res5" else 1
        first_stride = 1 if idx == 0 or (name == "res5" and dilation == 2) else 2
        stage_kwargs = {
            "num_blocks": num_blocks,
            "stride_per_block": [first_stride] + [1] * (num_blocks - 1),
            "in_channels": in_channels,
            "out_channels": out_channels,
            "norm": norm,
        }
        stage_kwargs.update(_stage_block_kwargs(o, name, bottleneck_channels, dilation=dilation))
        stages.append(ResNet.make_stage(**stage_kwargs))
        in_channels = out_channels
        out_channels *= 2
        bottleneck_channels *= 2

    if num_classes is not None:
        # out_features=None makes ResNet keep every stage and output "linear" (an explicit
        # ["linear"] would make it drop all stages).
        return ResNet(stem, stages, num_classes=num_classes, out_features=None)
    return ResNet(stem, stages, out_features=list(o["out_features"]), freeze_at=o["freeze_at"])


@BACKBONE_REGISTRY.register()
def build_se_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Backbone builder: the SE trunk, outputs ``MODEL.RESNETS.OUT_FEATURES``.

    Select it with ``MODEL.BACKBONE.NAME: "build_se_resnet_backbone"`` (e.g. C4-style models).
    """
    return build_se_resnet(cfg, input_shape)
