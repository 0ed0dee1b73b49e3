"""Excitation analysis (SE paper Sec. 7): per-block, per-class excitation statistics, class
specificity, channel-importance report and figures.

See ``docs/tutorials/excitation_analysis.md``.
"""

from .metrics import block_summary, channel_importance, class_specificity
from .recorder import BlockStats, ExcitationRecorder, se_layers

__all__ = [
    "BlockStats",
    "ExcitationRecorder",
    "block_summary",
    "channel_importance",
    "class_specificity",
    "se_layers",
]
