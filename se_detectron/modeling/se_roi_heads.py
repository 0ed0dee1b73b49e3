"""``SERes5ROIHeads``: Detectron2's C4 box head with SE bottlenecks in its res5 stage.

In C4 models (``faster_rcnn_R_50_C4``) the trunk stops at res4 and res5 runs on each RoI inside
``Res5ROIHeads``, which builds three plain ``BottleneckBlock``s itself. This subclass builds them
with :func:`~se_detectron.modeling.se_resnet.se_block_kwargs`, the same choice of block and
options as the trunk's other stages, so an SE-ResNet's res5 is SE in C4 models too (when
``"res5"`` is in ``MODEL.SE.STAGES``). The names are Detectron2's (``roi_heads.res5.0.conv1``
...) plus ``se.fc1``/``se.fc2``, so converted trunk weights (``res5.*``) load into it by name.
"""

from detectron2.modeling.backbone.resnet import ResNet
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads
from torch import nn

from .archs import BASIC_DEPTHS
from .config_check import SEConfigError, check_se_config
from .se_resnet import se_block_kwargs

__all__ = ["SERes5ROIHeads"]


@ROI_HEADS_REGISTRY.register()
class SERes5ROIHeads(Res5ROIHeads):
    """``Res5ROIHeads`` whose res5 has SE bottlenecks; select it with
    ``MODEL.ROI_HEADS.NAME: "SERes5ROIHeads"`` (see ``configs/Base-SE-RCNN-C4.yaml``)."""

    @classmethod
    def _build_res5_block(cls, cfg):
        check_se_config(cfg)
        res = cfg.MODEL.RESNETS
        if res.DEPTH in BASIC_DEPTHS:
            raise SEConfigError(
                f"MODEL.RESNETS.DEPTH={res.DEPTH} is invalid with MODEL.ROI_HEADS.NAME="
                "SERes5ROIHeads: Detectron2's C4 head is three bottleneck blocks (depth 50, 101 "
                "or 152); use an FPN config for SE-ResNet-18/34"
            )
        stage_channel_factor = 2**3  # res5 is 8x res2, as Detectron2's Res5ROIHeads
        out_channels = res.RES2_OUT_CHANNELS * stage_channel_factor
        bottleneck_channels = res.NUM_GROUPS * res.WIDTH_PER_GROUP * stage_channel_factor
        blocks = ResNet.make_stage(
            num_blocks=3,
            stride_per_block=[2, 1, 1],
            in_channels=out_channels // 2,
            out_channels=out_channels,
            norm=res.NORM,
            **se_block_kwargs(cfg, "res5", bottleneck_channels),
        )
        return nn.Sequential(*blocks), out_channels
