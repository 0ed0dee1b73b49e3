"""FPN backbones over the SE trunk: Detectron2's own ``FPN`` and top blocks, nothing copied."""

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import FPN, LastLevelMaxPool, LastLevelP6P7

from .se_resnet import build_se_resnet

__all__ = ["build_retinanet_se_resnet_fpn_backbone", "build_se_resnet_fpn_backbone"]


def _build_fpn(cfg, input_shape: ShapeSpec, top_block_factory) -> FPN:
    bottom_up = build_se_resnet(cfg, input_shape)
    # fmt: off
    in_features  = cfg.MODEL.FPN.IN_FEATURES
    out_channels = cfg.MODEL.FPN.OUT_CHANNELS
    norm         = cfg.MODEL.FPN.NORM
    fuse_type    = cfg.MODEL.FPN.FUSE_TYPE
    # fmt: on
    available = bottom_up.output_shape()
    missing = [f for f in in_features if f not in available]
    if missing:
        raise ValueError(
            f"MODEL.FPN.IN_FEATURES={list(in_features)} asks for {missing}, which the trunk does "
            f"not output: add them to MODEL.RESNETS.OUT_FEATURES (now {list(available)})"
        )
    return FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=out_channels,
        norm=norm,
        top_block=top_block_factory(bottom_up, out_channels),
        fuse_type=fuse_type,
    )


@BACKBONE_REGISTRY.register()
def build_se_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """SE trunk + FPN with P2-P6 (P6 by max-pooling P5), as ``build_resnet_fpn_backbone``."""
    return _build_fpn(cfg, input_shape, lambda bottom_up, out_channels: LastLevelMaxPool())


@BACKBONE_REGISTRY.register()
def build_retinanet_se_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """SE trunk + FPN with P3-P7 (P6/P7 from res5), as ``build_retinanet_resnet_fpn_backbone``."""
    return _build_fpn(
        cfg,
        input_shape,
        lambda bottom_up, out_channels: LastLevelP6P7(
            bottom_up.output_shape()["res5"].channels, out_channels
        ),
    )
