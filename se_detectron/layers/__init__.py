"""Layers: the Squeeze-and-Excitation unit and the separable CPU RoIAlign.

:class:`SqueezeExcitation` is the only implementation of the SE math in the package (paper
Sec. 3); :func:`use_separable_roi_align` swaps torchvision's CPU RoIAlign for the exact separable
form (``MODEL.CPU_ROI_ALIGN``).
"""

from .roi_align import (
    CPU_ROI_ALIGN_CHOICES,
    SeparableROIAlign,
    separable_roi_align,
    use_separable_roi_align,
)
from .se import (
    SE_GATES,
    SE_SQUEEZES,
    SqueezeExcitation,
    se_fast_path,
    se_fast_path_enabled,
    se_reduced_channels,
)

__all__ = [
    "CPU_ROI_ALIGN_CHOICES",
    "SeparableROIAlign",
    "separable_roi_align",
    "use_separable_roi_align",
    "SE_GATES",
    "SE_SQUEEZES",
    "SqueezeExcitation",
    "se_fast_path",
    "se_fast_path_enabled",
    "se_reduced_channels",
]
