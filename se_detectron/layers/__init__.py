from .se import (
    SE_GATES,
    SE_SQUEEZES,
    SqueezeExcitation,
    se_fast_path,
    se_fast_path_enabled,
    se_reduced_channels,
)

__all__ = [
    "SE_GATES",
    "SE_SQUEEZES",
    "SqueezeExcitation",
    "se_fast_path",
    "se_fast_path_enabled",
    "se_reduced_channels",
]
