"""The stems of the SE trunks: Detectron2's ``BasicStem`` and the deep three-conv stem.

The 7x7 stem is Detectron2's ``BasicStem`` (3x3/2 max-pool with padding 1); :class:`PooledBasicStem`
is the same conv with the other stem poolings (:data:`STEM_POOLS`). :class:`DeepStem` replaces the
7x7 conv with three 3x3 convs: SENet-154's 64-64-128 (paper appendix), ResNet-D's 32-32-64 (He et
al., "Bag of Tricks", arXiv 1812.01187, Fig. 2b; timm's ``stem_type="deep"``) or timm's tiered
24-32-64 (``stem_type="deep_tiered"``).
"""

from typing import Optional, Sequence

import torch
from detectron2.layers import CNNBlockBase, Conv2d, get_norm
from detectron2.modeling.backbone.resnet import BasicStem
from fvcore.nn import weight_init
from torch.nn import functional as F

__all__ = ["STEM_POOLS", "DeepStem", "PooledBasicStem", "stem_pool"]

#: How a stem downsamples after its convs.
#: ``"max"`` (3x3/2 max-pool, padding 1: Detectron2, torchvision, timm), ``"max_ceil"`` (3x3/2, no
#: padding, ``ceil_mode=True``: the released Caffe SENets and their Cadene / timm ``legacy_*``
#: ports) and ``"avg"`` (2x2/2 average pooling in ceil mode: timm's anti-aliased
#: ``aa_layer=nn.AvgPool2d`` models, which floor; equal on even sizes).
STEM_POOLS = ("max", "max_ceil", "avg")


def stem_pool(x: torch.Tensor, pool: str) -> torch.Tensor:
    """Downsample a stem's output by 2 with one of :data:`STEM_POOLS`."""
    if pool == "max_ceil":
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
    if pool == "avg":
        # ceil_mode as the anti-aliased blocks' pools (equal to timm's for even sizes)
        return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)
    return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


def _check_pool(pool: str) -> str:
    if pool not in STEM_POOLS:
        raise ValueError(f"stem pool must be one of {STEM_POOLS}, got {pool!r}")
    return pool


class DeepStem(CNNBlockBase):
    """Three 3x3 convs (the first with stride 2), each with norm and ReLU, then a pooling.

    Args:
        in_channels: input channels.
        out_channels: channels of the last conv.
        norm: normalization after each conv.
        pool: one of :data:`STEM_POOLS`.
        widths: output channels of the first two convs; None means ``out_channels // 2`` both
            (SENet-154's 64-64-128, ResNet-D's 32-32-64). timm's tiered stem is ``(24, 32)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 128,
        norm="BN",
        pool: str = "max_ceil",
        widths: Optional[Sequence[int]] = None,
    ):
        super().__init__(in_channels, out_channels, 4)
        w1, w2 = widths or (out_channels // 2, out_channels // 2)
        self.pool = _check_pool(pool)
        self.conv1 = Conv2d(
            in_channels, w1, 3, stride=2, padding=1, bias=False, norm=get_norm(norm, w1)
        )
        self.conv2 = Conv2d(w1, w2, 3, padding=1, bias=False, norm=get_norm(norm, w2))
        self.conv3 = Conv2d(
            w2, out_channels, 3, padding=1, bias=False, norm=get_norm(norm, out_channels)
        )
        for layer in (self.conv1, self.conv2, self.conv3):
            weight_init.c2_msra_fill(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return stem_pool(x, self.pool)


class PooledBasicStem(BasicStem):
    """Detectron2's ``BasicStem`` (7x7/2 conv, same names) with another pooling.

    Args:
        in_channels: input channels.
        out_channels: channels of the 7x7 conv.
        norm: normalization after the conv.
        pool: one of :data:`STEM_POOLS` (``"max"`` is ``BasicStem`` itself).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm="BN", pool="max_ceil"):
        super().__init__(in_channels, out_channels, norm)
        self.pool = _check_pool(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return stem_pool(F.relu_(self.conv1(x)), self.pool)
