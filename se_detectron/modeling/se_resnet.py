"""SE-ResNet / SE-ResNeXt / SENet-154 / SE-ResNet-D trunks built from Detectron2's own ResNet.

Only what Squeeze-and-Excitation needs is added to Detectron2: the SE blocks
(:mod:`.se_blocks`) and the stems Detectron2 lacks (:mod:`.stems`). Stages are made with
``ResNet.make_stage`` and assembled by Detectron2's ``ResNet``, so module names, ``freeze_at``,
``out_features`` and ``output_shape()`` behave exactly like ``build_resnet_backbone``.
:func:`make_se_resnet` is the keyword-argument (LazyConfig) constructor, :func:`build_se_resnet`
the yacs one; both assemble the trunk with the same code.
"""

import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from detectron2.layers import CNNBlockBase, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import BasicBlock, BasicStem, BottleneckBlock, ResNet

from .activation_checkpoint import checkpoint_stages
from .archs import BASIC_DEPTHS, NUM_BLOCKS_PER_STAGE, SE_POSITIONS, SE_STAGE_NAMES
from .config_check import (
    SE_TRUNK_DEFAULTS,
    SEConfigError,
    check_se_config,
    check_se_options,
    se_trunk_options,
)
from .se_blocks import SEBasicBlock, SEBottleneckBlock
from .stems import DeepStem, PooledBasicStem

__all__ = [
    "NUM_BLOCKS_PER_STAGE",
    "SE_POSITIONS",
    "DeepStem",
    "PooledBasicStem",
    "SEBasicBlock",
    "SEBottleneckBlock",
    "build_se_resnet",
    "build_se_resnet_backbone",
    "make_se_resnet",
]

logger = logging.getLogger(__name__)


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
        "se_hidden_divisor": o["se_hidden_divisor"],
        "se_excitation": o["se_excitation"],
    }
    with_se = stage in o["se_stages"]
    if o["depth"] in BASIC_DEPTHS:
        # ResNet-18/34: BasicBlock takes no bottleneck/group/dilation arguments (as Detectron2's)
        if with_se:
            return {
                "block_class": SEBasicBlock,
                "se_relu_before_se": o["se_relu_before_se"],
                **se_kwargs,
            }
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
            avg_down=o["avg_down"],
            anti_alias=o["anti_alias"],
            **se_kwargs,
        )
        if o["deform_on_per_stage"][SE_STAGE_NAMES.index(stage)]:
            kwargs.update(
                deform=True,
                deform_modulated=o["deform_modulated"],
                deform_num_groups=o["deform_num_groups"],
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
    stem_widths: Sequence[int] = (),
    avg_down: bool = False,
    anti_alias: bool = False,
    se_excitation: str = "fc",
    se_hidden_divisor: int = 1,
    se_relu_before_se: bool = False,
    deform_on_per_stage: Sequence[bool] = (False, False, False, False),
    deform_modulated: bool = False,
    deform_num_groups: int = 1,
    activation_checkpointing: Sequence[str] = (),
    in_channels: int = 3,
    num_classes: Optional[int] = None,
) -> ResNet:
    """An SE-ResNet / SE-ResNeXt / SENet-154 / SE-ResNet-D trunk from keyword arguments.

    The keyword form of :func:`build_se_resnet` (which calls this same assembly with the
    options read from a yacs config; ``config_check.SE_TRUNK_CFG_KEYS`` gives the key of each
    argument). Use it where Detectron2's LazyConfigs use ``L(ResNet)(stem=..., stages=...)``::

        from detectron2.config import LazyCall as L
        from se_detectron.modeling import make_se_resnet

        model.backbone.bottom_up = L(make_se_resnet)(
            depth=50, norm="FrozenBN", freeze_at=2, out_features=["res2", "res3", "res4", "res5"]
        )

    Args:
        depth: 18, 34 (basic blocks), 26, 50, 101, 152, 200 or 269 (bottleneck blocks; see
            :data:`NUM_BLOCKS_PER_STAGE`).
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
        stem_widths: widths of the deep stem's first two convs; empty: ``stem_out_channels //
            2`` both. timm's tiered stem (``seresnext26t_32x4d``) is ``(24, 32)``.
        avg_down: ResNet-D average-pooled projection shortcuts (timm's ``avg_down``).
        anti_alias: anti-aliased downsampling (timm's ``aa_layer=nn.AvgPool2d``): strided 3x3
            convs run at stride 1 followed by 2x2 average pooling, and the stem average-pools
            instead of max-pooling. Needs ``stride_in_1x1=False``.
        se_excitation: ``"fc"`` (the paper's two FC layers) or ``"eca"`` (ECA-Net's 1-D conv).
        se_hidden_divisor: rounding of the SE hidden width (1: ``C // r``; 8: timm's).
        se_relu_before_se: basic blocks: a ReLU before the SE unit (released SE-ResNet-18/34).
        deform_on_per_stage: deformable 3x3 convs in res2..res5 (SE stages, bottleneck blocks;
            Detectron2's ``MODEL.RESNETS.DEFORM_ON_PER_STAGE``).
        deform_modulated: modulated deformable convs (DCNv2).
        deform_num_groups: offset groups of the deformable convs.
        activation_checkpointing: stages whose blocks run under activation checkpointing.
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
        "stem_widths": stem_widths,
        "avg_down": avg_down,
        "anti_alias": anti_alias,
        "se_excitation": se_excitation,
        "se_hidden_divisor": se_hidden_divisor,
        "se_relu_before_se": se_relu_before_se,
        "deform_on_per_stage": deform_on_per_stage,
        "deform_modulated": deform_modulated,
        "deform_num_groups": deform_num_groups,
        "activation_checkpointing": activation_checkpointing,
    }
    assert set(options) >= set(SE_TRUNK_DEFAULTS)
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
    pool = "avg" if o["anti_alias"] else "max_ceil" if o["stem_ceil_pool"] else "max"
    if o["stem"] == "deep":
        widths = list(o["stem_widths"]) or None
        stem = DeepStem(in_channels, stem_out_channels, norm, pool=pool, widths=widths)
    elif pool == "max":
        stem = BasicStem(in_channels, stem_out_channels, norm)
    else:
        stem = PooledBasicStem(in_channels, stem_out_channels, norm, pool=pool)

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
        resnet = ResNet(stem, stages, num_classes=num_classes, out_features=None)
    else:
        resnet = ResNet(
            stem, stages, out_features=list(o["out_features"]), freeze_at=o["freeze_at"]
        )
    checkpoint_stages(resnet, o["activation_checkpointing"])
    return resnet


@BACKBONE_REGISTRY.register()
def build_se_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """Backbone builder: the SE trunk, outputs ``MODEL.RESNETS.OUT_FEATURES``.

    Select it with ``MODEL.BACKBONE.NAME: "build_se_resnet_backbone"`` (e.g. C4-style models).
    With Detectron2's ``Res5ROIHeads`` (a C4 config that swaps only the backbone), res5 lives in
    the box head and would have no SE units: a warning names ``SERes5ROIHeads``.
    """
    if cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeads" and "res5" in cfg.MODEL.SE.STAGES:
        logger.warning(
            "MODEL.ROI_HEADS.NAME is Detectron2's Res5ROIHeads: the res5 stage of this C4 model "
            "is in the box head and has no SE units although MODEL.SE.STAGES lists res5. Set "
            "MODEL.ROI_HEADS.NAME SERes5ROIHeads (as configs/Base-SE-RCNN-C4.yaml does)"
        )
    return build_se_resnet(cfg, input_shape)
