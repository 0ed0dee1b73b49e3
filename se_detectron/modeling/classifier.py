"""The SE trunk with an ImageNet classification head, for pretraining.

It is Detectron2's ``ResNet`` with ``num_classes`` set (global average pool + a linear layer named
``linear``), built by the same :func:`build_se_resnet` as the detection backbones. Its parameter
names are therefore those of the detector's trunk (``stem.*``, ``res2.*`` ... ``res5.*``), and a
pretraining checkpoint loads into ``build_se_resnet_backbone`` / ``build_se_resnet_fpn_backbone``
by name.
"""

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone.resnet import ResNet

from .se_resnet import build_se_resnet

__all__ = ["build_se_resnet_classifier"]


def build_se_resnet_classifier(cfg, num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """Build the classification model of the trunk described by ``cfg``.

    ``MODEL.BACKBONE.FREEZE_AT`` and ``MODEL.RESNETS.OUT_FEATURES`` are detection settings and are
    ignored: nothing is frozen and the output is ``{"linear": logits}``.

    Args:
        cfg: a config with ``add_se_config`` applied (``MODEL.RESNETS.*`` and ``MODEL.SE.*``).
        num_classes: number of classes of the linear head.
        in_channels: input image channels.

    Returns:
        ResNet: call it on an (N, C, H, W) batch; ``model(x)["linear"]`` are the logits.
    """
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    return build_se_resnet(cfg, ShapeSpec(channels=in_channels), num_classes=num_classes)
