"""The named SE architectures as ``MODEL.RESNETS.*`` / ``MODEL.SE.*`` config overrides.

This table is the single place that says what ``se_resnet50`` ... ``senet154`` mean in config
terms; the pretraining tool (``--arch``), the benchmark and the weight converters read it. It
imports only :mod:`se_detectron.config`, so any layer above can use it.

Every entry sets every key that shapes the trunk, so applying an architecture on top of any config
(e.g. a detection config for another depth) fully determines the trunk. SE-ResNets stride in the
first 1x1 conv (as the paper's Caffe models and MSRA ResNet); SE-ResNeXts and SENet-154 stride in
the 3x3 conv, as the released models. SENet-154 is SE-ResNeXt-152 64x4d with the paper appendix's
changes: a three-conv 64-64-128 stem, a ceil-mode stem pooling, halved first 1x1 convs and 3x3
stride-2 projection shortcuts.
"""

from typing import Any, Dict, List, Optional

from ..config import config_opts, config_value

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "TIMM_MODEL_NAMES",
    "apply_arch",
    "arch_opts",
    "arch_overrides",
    "find_arch",
    "resolve_arch_name",
]


def _trunk(
    depth: int,
    groups: int = 1,
    width: int = 64,
    stride_in_1x1: bool = True,
    res2_out: int = 256,
    **senet154: Any,
) -> Dict[str, Any]:
    """Every trunk-shaping key of one architecture; ``senet154`` holds the other changes."""
    overrides = {
        "MODEL.RESNETS.DEPTH": depth,
        "MODEL.RESNETS.NUM_GROUPS": groups,
        "MODEL.RESNETS.WIDTH_PER_GROUP": width,
        "MODEL.RESNETS.STRIDE_IN_1X1": stride_in_1x1,
        "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
        "MODEL.RESNETS.RES2_OUT_CHANNELS": res2_out,
        "MODEL.SE.STEM": "basic",
        "MODEL.SE.STEM_CEIL_POOL": False,
        "MODEL.SE.CONV1_WIDTH_RATIO": 1.0,
        "MODEL.SE.SHORTCUT_KERNEL": 1,
        "MODEL.SE.STEM_WIDTHS": [],
        "MODEL.SE.AVG_DOWN": False,
        "MODEL.SE.ANTI_ALIAS": False,
    }
    overrides.update(senet154)
    return overrides


#: Architecture name -> ``{"FULL.CONFIG.KEY": value}`` overrides describing its trunk.
ARCHS: Dict[str, Dict[str, Any]] = {
    # Basic-block trunks: two 3x3 convs per block, 64 channels out of res2 (as Detectron2's R18).
    "se_resnet18": _trunk(18, res2_out=64),
    "se_resnet34": _trunk(34, res2_out=64),
    "se_resnet50": _trunk(50),
    "se_resnet101": _trunk(101),
    "se_resnet152": _trunk(152),
    "se_resnext50_32x4d": _trunk(50, groups=32, width=4, stride_in_1x1=False),
    "se_resnext101_32x4d": _trunk(101, groups=32, width=4, stride_in_1x1=False),
    "se_resnext101_32x8d": _trunk(101, groups=32, width=8, stride_in_1x1=False),
    "se_resnext101_64x4d": _trunk(101, groups=64, width=4, stride_in_1x1=False),
    "senet154": _trunk(
        152,
        groups=64,
        width=4,
        stride_in_1x1=False,
        **{
            "MODEL.RESNETS.STEM_OUT_CHANNELS": 128,
            "MODEL.SE.STEM": "deep",
            "MODEL.SE.STEM_CEIL_POOL": True,
            "MODEL.SE.CONV1_WIDTH_RATIO": 0.5,
            "MODEL.SE.SHORTCUT_KERNEL": 3,
        },
    ),
}


def _resnet_d(
    depth: int, groups: int = 1, width: int = 64, tiered: bool = False, aa: bool = False
) -> Dict[str, Any]:
    """timm's SE-ResNet-D: deep 32-32-64 (or tiered 24-32-64) stem, average-pooled shortcuts."""
    return _trunk(
        depth,
        groups=groups,
        width=width,
        stride_in_1x1=False,
        **{
            "MODEL.SE.STEM": "deep",
            "MODEL.SE.STEM_WIDTHS": [24, 32] if tiered else [],
            "MODEL.SE.AVG_DOWN": True,
            "MODEL.SE.ANTI_ALIAS": aa,
        },
    )


ARCHS.update(
    {
        "se_resnet50t": _resnet_d(50, tiered=True),
        "se_resnetaa50d": _resnet_d(50, aa=True),
        "se_resnet152d": _resnet_d(152),
        "se_resnet200d": _resnet_d(200),
        "se_resnet269d": _resnet_d(269),
        "se_resnext26d_32x4d": _resnet_d(26, groups=32, width=4),
        "se_resnext26t_32x4d": _resnet_d(26, groups=32, width=4, tiered=True),
        "se_resnext101d_32x8d": _resnet_d(101, groups=32, width=8),
        "se_resnextaa101d_32x8d": _resnet_d(101, groups=32, width=8, aa=True),
    }
)

#: The architecture names, in table order.
ARCH_NAMES = tuple(ARCHS)
BASIC_ARCHS = ("se_resnet18", "se_resnet34")

#: Architecture name -> the timm model (``timm.create_model`` name) with the same layers and
#: parameter count. Their weights convert with ``tools/convert_pretrained.py``, which also accepts
#: these names for ``--arch``. ``se_resnet18/34`` are not listed: timm's round their SE widths up to
#: multiples of 8 (see docs/tutorials/weights.md).
TIMM_MODEL_NAMES: Dict[str, str] = {
    name: name.replace("se_", "se", 1) for name in ARCH_NAMES if name not in BASIC_ARCHS
}
TIMM_MODEL_NAMES["senet154"] = "senet154"


def arch_overrides(name: str) -> Dict[str, Any]:
    """The config overrides of one named architecture.

    Args:
        name: one of :data:`ARCH_NAMES`, e.g. ``"se_resnext101_32x4d"``.

    Returns:
        dict: a fresh ``{"MODEL.RESNETS.DEPTH": 101, ...}`` mapping (safe to modify).

    Raises:
        KeyError: naming the unknown architecture and the known ones.
    """
    if name not in ARCHS:
        raise KeyError(f"unknown SE architecture {name!r}; known: {', '.join(ARCH_NAMES)}")
    return dict(ARCHS[name])


def arch_opts(name: str) -> List[Any]:
    """The overrides of ``name`` as a flat ``[KEY, VALUE, ...]`` list for ``merge_from_list``.

    Args:
        name: one of :data:`ARCH_NAMES`.
    """
    return config_opts(arch_overrides(name))


def apply_arch(cfg, name: str):
    """Set the trunk keys of ``cfg`` to those of the named architecture.

    Args:
        cfg: a config with ``add_se_config`` applied (e.g. from ``se_detectron.get_se_cfg()``),
            modified in place.
        name: one of :data:`ARCH_NAMES`.

    Returns:
        CfgNode: ``cfg``.
    """
    cfg.merge_from_list(arch_opts(name))
    return cfg


def find_arch(cfg) -> Optional[str]:
    """The name of the architecture whose overrides ``cfg`` matches, if any.

    Args:
        cfg: a config with ``add_se_config`` applied.

    Returns:
        str or None: e.g. ``"se_resnet50"``; None for a trunk that is not in the table.
    """
    for name, overrides in ARCHS.items():
        if all(config_value(cfg, key) == value for key, value in overrides.items()):
            return name
    return None


def resolve_arch_name(name: str) -> str:
    """An architecture of :data:`ARCHS` from its own name or its timm name.

    Args:
        name: e.g. ``"se_resnextaa101d_32x8d"`` or timm's ``"seresnextaa101d_32x8d"``.

    Raises:
        KeyError: naming the unknown name and the known ones.
    """
    if name in ARCHS:
        return name
    by_timm = {timm_name: arch for arch, timm_name in TIMM_MODEL_NAMES.items()}
    if name in by_timm:
        return by_timm[name]
    raise KeyError(
        f"unknown SE architecture {name!r}; known: {', '.join(ARCH_NAMES)} (or their timm names "
        f"{', '.join(TIMM_MODEL_NAMES.values())})"
    )
