from .se import SE_GATES, SE_SQUEEZES, SqueezeExcitation, se_reduced_channels

__all__ = ["SE_GATES", "SE_SQUEEZES", "SqueezeExcitation", "se_reduced_channels"]
