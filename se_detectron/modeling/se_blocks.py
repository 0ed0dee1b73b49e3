"""The SE residual blocks: Detectron2's ``BottleneckBlock`` / ``BasicBlock`` plus an SE unit.

:class:`SEBottleneckBlock` adds the SE unit (paper Fig. 3) at one of the paper's integration
positions (Fig. 5), SENet-154's block changes (paper appendix) and the ResNet-D options of timm's
``seresnet*d`` / ``seresnext*d`` / ``seresnextaa*`` models: an average-pooled projection
shortcut ("ResNet-D", He et al., "Bag of Tricks for Image Classification with Convolutional Neural
Networks", arXiv 1812.01187, Fig. 2c) and anti-aliased downsampling (a stride-1 3x3 conv followed
by 2x2 average pooling, timm's ``aa_layer=nn.AvgPool2d``; after Zhang, "Making Convolutional
Networks Shift-Invariant Again", arXiv 1904.11486), and Detectron2's deformable 3x3 conv
(``DeformBottleneckBlock``'s ``conv2_offset`` predicting the offsets, and the mask with
modulation; computed by torchvision, see :class:`~se_detectron.layers.DeformConv`).
:class:`SEBasicBlock` is the two-conv block of SE-ResNet-18/34. Parameter names stay Detectron2's
(``conv2_offset`` included), plus ``se.fc1`` / ``se.fc2`` (ECA: ``se.conv``).
"""

from typing import Optional

import torch
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from fvcore.nn import weight_init
from torch import nn
from torch.nn import functional as F

from ..layers import DeformConv, SqueezeExcitation
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
        se_hidden_divisor: rounding of the SE hidden width (1: ``C // r``; 8: timm's).
        se_excitation: ``"fc"`` (the paper's) or ``"eca"`` (ECA-Net's 1-D convolution).
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
        deform: a deformable 3x3 conv (Detectron2's ``DeformBottleneckBlock``): ``conv2_offset``,
            a 3x3 conv initialised to zero (so the block starts as the plain one), predicts the
            sampling offsets (and, modulated, the mask) from conv1's output.
        deform_modulated: modulated deformable conv (DCNv2: a sigmoid mask per sample).
        deform_num_groups: offset groups (Detectron2's ``deform_num_groups``).
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
        se_hidden_divisor: int = 1,
        se_excitation: str = "fc",
        conv1_channels: Optional[int] = None,
        shortcut_kernel_size: int = 1,
        avg_down: bool = False,
        anti_alias: bool = False,
        deform: bool = False,
        deform_modulated: bool = False,
        deform_num_groups: int = 1,
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
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        if self.aa_stride > 1:
            stride_3x3 = 1
        if conv1_channels != bottleneck_channels or self.aa_stride > 1:
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
        self.deform_modulated = deform_modulated
        self.conv2_offset = None
        if deform:
            self.conv2 = DeformConv(
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
            weight_init.c2_msra_fill(self.conv2)
            # (dy, dx) per kernel position and offset group, plus the mask when modulated
            offset_channels = (27 if deform_modulated else 18) * deform_num_groups
            self.conv2_offset = Conv2d(
                conv1_channels,
                offset_channels,
                kernel_size=3,
                stride=stride_3x3,
                padding=dilation,
                dilation=dilation,
            )
            # zero offsets (and a 0.5 mask) at the start, as Detectron2's DeformBottleneckBlock
            nn.init.constant_(self.conv2_offset.weight, 0)
            nn.init.constant_(self.conv2_offset.bias, 0)
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
            se_channels,
            reduction=se_reduction,
            squeeze=se_squeeze,
            gate=se_gate,
            bias=se_bias,
            hidden_divisor=se_hidden_divisor,
            excitation=se_excitation,
        )

    def _deform_conv2(self, x: torch.Tensor) -> torch.Tensor:
        """The deformable 3x3 conv of ``x`` (conv1's output), as ``DeformBottleneckBlock``."""
        offset_layer = self.conv2_offset
        assert offset_layer is not None
        offset = offset_layer(x)
        if self.deform_modulated:
            dy_dx, mask = offset.split([offset.shape[1] * 2 // 3, offset.shape[1] // 3], dim=1)
            return self.conv2(x, dy_dx, mask.sigmoid())
        return self.conv2(x, offset)

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
        if self.conv2_offset is not None:
            out = F.relu_(self._deform_conv2(out))
        else:
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
        se_hidden_divisor: rounding of the SE hidden width (1: ``C // r``; 8: timm's
            ``seresnet18/34``).
        se_excitation: ``"fc"`` (the paper's) or ``"eca"`` (ECA-Net's 1-D convolution).
        se_relu_before_se: a ReLU on the residual branch before the SE unit (the released Caffe
            SE-ResNet-18/34 and their Cadene / timm ``legacy_seresnet18/34`` ports); needs the
            ``"standard"`` position.
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
        se_hidden_divisor: int = 1,
        se_excitation: str = "fc",
        se_relu_before_se: bool = False,
    ):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        if se_position not in BASIC_SE_POSITIONS:
            raise ValueError(
                f"SE position of a basic block must be one of {BASIC_SE_POSITIONS}, "
                f"got {se_position!r}"
            )
        if se_relu_before_se and se_position != "standard":
            raise ValueError(
                f"se_relu_before_se needs the 'standard' SE position, got {se_position!r}"
            )
        self.se_position = se_position
        self.relu_before_se = se_relu_before_se
        se_channels = in_channels if se_position == "pre" else out_channels
        self.se = SqueezeExcitation(
            se_channels,
            reduction=se_reduction,
            squeeze=se_squeeze,
            gate=se_gate,
            bias=se_bias,
            hidden_divisor=se_hidden_divisor,
            excitation=se_excitation,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        position = self.se_position
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = self.se(x) if position == "pre" else x
        out = F.relu_(self.conv1(out))
        out = self.conv2(out)
        if self.relu_before_se:
            out = F.relu_(out)
        return self._join_branches(out, shortcut)
