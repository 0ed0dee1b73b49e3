"""``MODEL.CPU_ROI_ALIGN``: which RoIAlign a built detector's poolers run on CPU tensors."""

import logging

from torch import nn

from ..layers.roi_align import use_separable_roi_align
from .config_check import cpu_roi_align_choice

__all__ = ["apply_cpu_roi_align"]

logger = logging.getLogger(__name__)


def apply_cpu_roi_align(model: nn.Module, cfg) -> int:
    """Give ``model``'s poolers the CPU RoIAlign named by ``cfg.MODEL.CPU_ROI_ALIGN``.

    Args:
        model: a model built from ``cfg`` (modified in place).
        cfg: its config; a config without the key (no ``add_se_config``) keeps torchvision's.

    Returns:
        The number of pooler levels switched to
        :class:`~se_detectron.layers.roi_align.SeparableROIAlign`.

    Raises:
        SEConfigError: naming ``MODEL.CPU_ROI_ALIGN`` for an unknown value.
    """
    choice = cpu_roi_align_choice(cfg)
    if choice == "torchvision":
        return 0
    replaced = use_separable_roi_align(model)
    logger.info(f"MODEL.CPU_ROI_ALIGN: {replaced} pooler level(s) use the separable RoIAlign")
    return replaced
