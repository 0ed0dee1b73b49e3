from .deform_conv import DeformConv
from .roi_align import (
    CPU_ROI_ALIGN_CHOICES,
    SeparableROIAlign,
    separable_roi_align,
    use_separable_roi_align,
)
from .se import (
    SE_EXCITATIONS,
    SE_GATES,
    SE_SQUEEZES,
    SqueezeExcitation,
    eca_kernel_size,
    se_fast_path,
    se_fast_path_enabled,
    se_reduced_channels,
)

__all__ = [
    "DeformConv",
    "CPU_ROI_ALIGN_CHOICES",
    "SeparableROIAlign",
    "separable_roi_align",
    "use_separable_roi_align",
    "SE_EXCITATIONS",
    "SE_GATES",
    "SE_SQUEEZES",
    "SqueezeExcitation",
    "eca_kernel_size",
    "se_fast_path",
    "se_fast_path_enabled",
    "se_reduced_channels",
]
