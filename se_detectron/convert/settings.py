"""The config a converted checkpoint needs, per source, and its comparison with a config.

The weights fix the trunk's shapes (:mod:`.infer`); what they cannot tell - where the stride is
(``MODEL.RESNETS.STRIDE_IN_1X1``), how the stem pools (``MODEL.SE.STEM_CEIL_POOL``), the input
normalization (``MODEL.PIXEL_MEAN``/``PIXEL_STD``, ``INPUT.FORMAT``) and the SE variant - comes
from the source format (``timm``, ``cadene``, ``se_detectron``, see :mod:`.formats`) and, for our
own checkpoints, from what they recorded.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import config_mismatches, get_se_cfg, same_value
from ..modeling.archs import ARCHS
from ..modeling.config_check import BASIC_DEPTHS
from .formats import ConversionError
from .infer import SEArchitecture

__all__ = [
    "IMAGENET_RGB_PIXEL_MEAN",
    "IMAGENET_RGB_PIXEL_STD",
    "config_mismatches",
    "required_config",
    "same_value",
    "source_settings",
]

# ImageNet mean/std of RGB images in [0, 1] (timm's IMAGENET_DEFAULT_MEAN/STD and Cadene's
# pretrained_settings) on Detectron2's 0-255 pixel scale: 255 * (0.485, 0.456, 0.406) and
# 255 * (0.229, 0.224, 0.225).
IMAGENET_RGB_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_RGB_PIXEL_STD = [58.395, 57.12, 57.375]


def source_settings(
    source: str, arch: SEArchitecture, container: Optional[Mapping[str, Any]] = None
) -> Tuple[Dict[str, Any], List[str]]:
    """The config values that depend on how the weights were trained, not on their shapes.

    * ``cadene`` (Cadene ``pretrainedmodels``, timm ``legacy_*``): RGB input in [0, 1] normalized
      with the ImageNet mean/std; stem max-pool ``ceil_mode=True`` without padding;
      ``SEResNetBottleneck`` (groups 1) strides in the first 1x1 conv, ``SEResNeXtBottleneck``
      and SENet-154's ``SEBottleneck`` in the 3x3 conv.
    * ``timm`` (``resnet.py``): same normalization; stride in the 3x3 conv; padded max-pool.
    * ``se_detectron``: a ``"se_detectron_config"`` dict stored in the checkpoint wins; else the
      architecture named by the checkpoint's ``args.arch`` in
      :data:`se_detectron.modeling.archs.ARCHS`; else the defaults of ``get_se_cfg()`` (reported
      as assumptions). The input normalization is assumed to be ImageNet RGB.

    Args:
        source: one of :data:`se_detectron.convert.SOURCE_FORMATS`.
        arch: the inferred architecture.
        container: the loaded checkpoint (for the ``se_detectron`` metadata), optional.

    Returns:
        (settings, notes): dotted config keys to values, and human-readable notes about
        assumptions.
    """
    notes: List[str] = []
    settings: Dict[str, Any] = {
        "MODEL.PIXEL_MEAN": list(IMAGENET_RGB_PIXEL_MEAN),
        "MODEL.PIXEL_STD": list(IMAGENET_RGB_PIXEL_STD),
        "INPUT.FORMAT": "RGB",
        "MODEL.SE.SQUEEZE": "avg",
        "MODEL.SE.GATE": "sigmoid",
    }
    if source == "cadene":
        if arch.depth in BASIC_DEPTHS:
            raise ConversionError(
                "Cadene / timm legacy_seresnet18/34 basic blocks apply a ReLU before the SE unit "
                "(relu(bn2(conv2)) is recalibrated), which Detectron2's BasicBlock does not have: "
                "their features cannot be reproduced by MODEL.RESNETS.DEPTH 18/34"
            )
        settings["MODEL.RESNETS.STRIDE_IN_1X1"] = (
            arch.num_groups == 1 and arch.conv1_width_ratio == 1.0
        )
        settings["MODEL.SE.STEM_CEIL_POOL"] = True
        if arch.num_groups == 1:
            notes.append("groups=1: Cadene's SEResNetBottleneck, stride in the first 1x1 conv")
    elif source == "timm":
        settings["MODEL.RESNETS.STRIDE_IN_1X1"] = False
        settings["MODEL.SE.STEM_CEIL_POOL"] = False
    elif source == "se_detectron":
        settings.update(_se_detectron_settings(container or {}, notes))
    else:
        raise ConversionError(f"unknown source format {source!r}")
    if (
        source == "se_detectron"
        and arch.se_stages
        and arch.se_position == "standard"
        and "MODEL.SE.POSITION" not in settings
    ):
        notes.append(
            "MODEL.SE.POSITION 'post' and 'identity' have the same weight shapes as 'standard'; "
            "'standard' is assumed unless the checkpoint records it"
        )
    return settings, notes


# Trunk settings taken from a pretraining checkpoint's "cfg" (its PIXEL_MEAN/STD and
# INPUT.FORMAT are Detectron2 defaults that the classification data pipeline does not use).
_TRUNK_CFG_KEYS = (
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.SE.STEM_CEIL_POOL",
    "MODEL.SE.AVG_DOWN",
    "MODEL.SE.ANTI_ALIAS",
    "MODEL.SE.SQUEEZE",
    "MODEL.SE.GATE",
    "MODEL.SE.POSITION",
)
# ... and what a pretraining run records beside them (its input normalisation)
_PRETRAIN_KEYS = _TRUNK_CFG_KEYS + ("MODEL.PIXEL_MEAN", "MODEL.PIXEL_STD", "INPUT.FORMAT")


def _se_detectron_settings(container: Mapping[str, Any], notes: List[str]) -> Dict[str, Any]:
    recorded = container.get("se_detectron_config")
    if isinstance(recorded, Mapping):
        notes.append("pretraining settings read from the checkpoint's 'se_detectron_config'")
        return {k: recorded[k] for k in _PRETRAIN_KEYS if k in recorded}
    trunk_cfg = _trunk_cfg_from_yaml(container.get("cfg"))
    if trunk_cfg:
        notes.append(
            "STRIDE_IN_1X1 / STEM_CEIL_POOL / SE settings read from the checkpoint's 'cfg' "
            "(the pretraining trunk config); input normalization: ImageNet RGB, as "
            "se_detectron.pretrain.data"
        )
        return trunk_cfg
    args = container.get("args")
    arch_name = container.get("arch") or (
        args.get("arch") if isinstance(args, Mapping) else getattr(args, "arch", None)
    )
    if arch_name:
        if arch_name in ARCHS:
            notes.append(
                f"STRIDE_IN_1X1 / STEM_CEIL_POOL from se_detectron.modeling.archs[{arch_name!r}] "
                "(the checkpoint's arch)"
            )
            arch = ARCHS[arch_name]
            return {k: arch[k] for k in _PRETRAIN_KEYS if k in arch}
        notes.append(f"arch {arch_name!r} is not in se_detectron.modeling.archs.ARCHS")
    cfg = get_se_cfg()
    notes.append(
        "the checkpoint records neither its trunk 'cfg' nor a known 'arch': assumed the "
        f"get_se_cfg() defaults STRIDE_IN_1X1={cfg.MODEL.RESNETS.STRIDE_IN_1X1}, "
        f"STEM_CEIL_POOL={cfg.MODEL.SE.STEM_CEIL_POOL} and ImageNet RGB normalization; check "
        "them against the pretraining run"
    )
    return {
        "MODEL.RESNETS.STRIDE_IN_1X1": cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        "MODEL.SE.STEM_CEIL_POOL": cfg.MODEL.SE.STEM_CEIL_POOL,
    }


def _trunk_cfg_from_yaml(text: Any) -> Dict[str, Any]:
    if not isinstance(text, str):
        return {}
    import yaml

    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    out = {}
    for key in _TRUNK_CFG_KEYS:
        node = tree
        for part in key.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            out[key] = node
    return out


def required_config(
    source: str, arch: SEArchitecture, container: Optional[Mapping[str, Any]] = None
) -> Tuple[Dict[str, Any], List[str]]:
    """Every config value a detector needs to use the converted weights as pretrained.

    Args:
        source: the source format.
        arch: the inferred architecture.
        container: the loaded checkpoint (metadata of ``se_detectron`` checkpoints), optional.

    Returns:
        (config, notes): dotted keys (``"MODEL.PIXEL_MEAN"``, ``"INPUT.FORMAT"``,
        ``"MODEL.RESNETS.*"``, ``"MODEL.SE.*"``) to values, and notes about assumptions.
    """
    settings, notes = source_settings(source, arch, container)
    config = arch.config()
    config.update(settings)  # recorded pretraining settings (e.g. POSITION "post") win
    order = (
        "MODEL.PIXEL_MEAN",
        "MODEL.PIXEL_STD",
        "INPUT.FORMAT",
        "MODEL.RESNETS.",
        "MODEL.SE.",
    )
    ordered = sorted(config.items(), key=lambda kv: _order_index(kv[0], order))
    return dict(ordered), notes


def _order_index(key: str, order: Sequence[str]) -> Tuple[int, str]:
    for i, prefix in enumerate(order):
        if key.startswith(prefix):
            return i, key
    return len(order), key
