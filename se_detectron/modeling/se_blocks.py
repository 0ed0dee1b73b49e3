"""The SE residual blocks: Detectron2's ``BottleneckBlock`` / ``BasicBlock`` plus an SE unit.

:class:`SEBottleneckBlock` adds the SE unit (paper Fig. 3) at one of the paper's integration
positions (Fig. 5), SENet-154's block changes (paper appendix) and the ResNet-D options of timm's
``seresnet*d`` / ``seresnext*d`` / ``seresnextaa*`` models: an average-pooled projection
shortcut ("ResNet-D", He et al., "Bag of Tricks for Image Classification with Convolutional Neural
Networks", arXiv 1812.01187, Fig. 2c) and anti-aliased downsampling (a stride-1 3x3 conv followed
by 2x2 average pooling, timm's ``aa_layer=nn.AvgPool2d``; after Zhang, "Making Convolutional
Networks Shift-Invariant Again", arXiv 1904.11486). :class:`SEBasicBlock` is the two-conv block
of SE-ResNet-18/34. Parameter names stay Detectron2's, plus ``se.fc1`` / ``se.fc2``.
"""

from typing import Optional

import torch
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from fvcore.nn import weight_init
from torch.nn import functional as F

from ..layers import SqueezeExcitation
from .archs import BASIC_SE_POSITIONS, SE_POSITIONS

__all__ = ["SEBasicBlock", "SEBottleneckBlock"]


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
    the SE unit; the SENet-154 options change the block's shape and the ResNet-D options its
    downsampling.

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
        avg_down: ResNet-D projection shortcut: 2x2 average pooling (stride ``stride``,
            ``ceil_mode=True``, padding not counted) then a stride-1 1x1 conv, instead of a
            strided 1x1 conv that drops 3/4 of the input. At stride 1 (res2, a dilated res5)
            there is no pooling, as mmdetection's ``avg_down`` (timm pools a dilated stage with a
            "same"-padded 2x2 window).
        anti_alias: anti-aliased downsampling (timm's ``aa_layer=nn.AvgPool2d``): a strided
            block runs its 3x3 conv at stride 1 and then 2x2 average-pools its output (in ceil
            mode, so that odd sizes work; timm's model needs sizes divisible by 32, where both
            agree). Needs the stride in the 3x3 conv (``stride_in_1x1=False``).
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
        avg_down: bool = False,
        anti_alias: bool = False,
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
        if anti_alias and stride > 1 and stride_in_1x1:
            raise ValueError("anti_alias needs the stride in the 3x3 conv (stride_in_1x1=False)")
        if avg_down and shortcut_kernel_size != 1:
            raise ValueError("avg_down projects with a 1x1 conv: shortcut_kernel_size must be 1")
        # 2x2 average pooling after the 3x3 conv (anti_alias) / before the projection (avg_down);
        # 1 means none.
        self.aa_stride = stride if anti_alias else 1
        self.avg_down_stride = stride if avg_down and self.shortcut is not None else 1
        conv1_channels = conv1_channels or bottleneck_channels
        if conv1_channels != bottleneck_channels or self.aa_stride > 1:
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
                stride=stride_3x3 if self.aa_stride == 1 else 1,
                padding=dilation,
                bias=False,
                groups=num_groups,
                dilation=dilation,
                norm=get_norm(norm, bottleneck_channels),
            )
            weight_init.c2_msra_fill(self.conv1)
            weight_init.c2_msra_fill(self.conv2)
        if self.shortcut is not None and (shortcut_kernel_size != 1 or avg_down):
            self.shortcut = Conv2d(
                in_channels,
                out_channels,
                kernel_size=shortcut_kernel_size,
                stride=1 if avg_down else stride,
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
        shortcut = x
        if self.shortcut is not None:
            if self.avg_down_stride > 1:
                s = self.avg_down_stride
                shortcut = F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False)
            shortcut = self.shortcut(shortcut)

        # The block owns the outputs of its convolutions, so the SE layer may overwrite them
        # (inplace=True; it does so only when autograd does not need them), never x or shortcut.
        out = self.se(x) if position == "pre" else x
        out = F.relu_(self.conv1(out))
        out = F.relu_(self.conv2(out))
        if self.aa_stride > 1:
            # ceil_mode: any input size works and matches the shortcut's size; timm floors, which
            # is the same wherever timm runs (even sizes: inputs divisible by 32)
            out = F.avg_pool2d(out, self.aa_stride, ceil_mode=True)
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
