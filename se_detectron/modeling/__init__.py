"""SE backbones and the SE C4 head; importing this module registers them in Detectron2's
BACKBONE_REGISTRY and ROI_HEADS_REGISTRY."""

from .archs import SE_POSITIONS, SE_STAGE_NAMES
from .classifier import build_se_resnet_classifier
from .config_check import SE_TRUNK_CFG_KEYS, SEConfigError, check_se_config, check_se_options
from .se_fpn import build_retinanet_se_resnet_fpn_backbone, build_se_resnet_fpn_backbone
from .se_resnet import (
    DeepStem,
    PooledBasicStem,
    SEBasicBlock,
    SEBottleneckBlock,
    build_se_resnet,
    build_se_resnet_backbone,
    make_se_resnet,
)
from .se_roi_heads import SERes5ROIHeads

__all__ = [
    "SE_POSITIONS",
    "SE_STAGE_NAMES",
    "SE_TRUNK_CFG_KEYS",
    "PooledBasicStem",
    "DeepStem",
    "SEBasicBlock",
    "SEBottleneckBlock",
    "SEConfigError",
    "SERes5ROIHeads",
    "build_retinanet_se_resnet_fpn_backbone",
    "build_se_resnet",
    "build_se_resnet_backbone",
    "build_se_resnet_classifier",
    "build_se_resnet_fpn_backbone",
    "check_se_config",
    "check_se_options",
    "make_se_resnet",
]
