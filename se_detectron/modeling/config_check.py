"""Validation of the options the SE trunks read, with errors that name the key or argument to fix.

The trunk has one set of options (:data:`SE_TRUNK_CFG_KEYS`): the keyword arguments of
:func:`~se_detectron.modeling.make_se_resnet` (LazyConfig) and, for the yacs path, the
``MODEL.RESNETS.*`` / ``MODEL.BACKBONE.FREEZE_AT`` / ``MODEL.SE.*`` keys they come from.
:func:`check_se_options` checks them once for both paths; its messages name the argument
(``se_gate='foo' is invalid``) or, through :func:`check_se_config`, the config key
(``MODEL.SE.GATE='foo' is invalid``).
"""

from collections.abc import Sequence
from typing import Any, Dict, Mapping, Optional

from ..config import config_value
from ..errors import SEDetectronError
from ..layers.roi_align import CPU_ROI_ALIGN_CHOICES
from ..layers.se import SE_GATES, SE_SQUEEZES

__all__ = [
    "BASIC_DEPTHS",
    "BASIC_SE_POSITIONS",
    "NUM_BLOCKS_PER_STAGE",
    "SE_DEPTHS",
    "SE_POSITIONS",
    "SE_STAGE_NAMES",
    "SE_STEMS",
    "SE_TRUNK_CFG_KEYS",
    "SEConfigError",
    "check_se_config",
    "check_se_options",
    "cpu_roi_align_choice",
    "se_trunk_options",
]

#: The values of ``MODEL.SE.POSITION`` (paper Fig. 5 and Table 15).
SE_POSITIONS = ("standard", "pre", "post", "identity", "3x3")
#: The positions a basic block (ResNet-18/34) takes, which has no 3x3 conv between two 1x1 convs.
BASIC_SE_POSITIONS = ("standard", "pre", "post", "identity")
SE_STAGE_NAMES = ("res2", "res3", "res4", "res5")
SE_STEMS = ("basic", "deep")
BASIC_DEPTHS = (18, 34)

#: Blocks per stage of each ``MODEL.RESNETS.DEPTH``. 18/34 are basic (two-conv) blocks and
#: 50/101/152 bottleneck blocks (ResNet paper Table 1, as Detectron2); 26, 200 and 269 are the
#: deeper/shallower bottleneck ResNets of timm's ``seresnext26d``/``seresnet200d``/``269d``.
NUM_BLOCKS_PER_STAGE = {
    18: [2, 2, 2, 2],
    34: [3, 4, 6, 3],
    26: [2, 2, 2, 2],
    50: [3, 4, 6, 3],
    101: [3, 4, 23, 3],
    152: [3, 8, 36, 3],
    200: [3, 24, 36, 3],
    269: [3, 30, 48, 8],
}
SE_DEPTHS = tuple(NUM_BLOCKS_PER_STAGE)

#: Option of the SE trunk (keyword argument of ``make_se_resnet``) -> the yacs key it comes from.
SE_TRUNK_CFG_KEYS: Dict[str, str] = {
    "depth": "MODEL.RESNETS.DEPTH",
    "num_groups": "MODEL.RESNETS.NUM_GROUPS",
    "width_per_group": "MODEL.RESNETS.WIDTH_PER_GROUP",
    "stride_in_1x1": "MODEL.RESNETS.STRIDE_IN_1X1",
    "stem_out_channels": "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "res2_out_channels": "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "res5_dilation": "MODEL.RESNETS.RES5_DILATION",
    "norm": "MODEL.RESNETS.NORM",
    "out_features": "MODEL.RESNETS.OUT_FEATURES",
    "freeze_at": "MODEL.BACKBONE.FREEZE_AT",
    "se_stages": "MODEL.SE.STAGES",
    "se_reduction": "MODEL.SE.REDUCTION",
    "se_squeeze": "MODEL.SE.SQUEEZE",
    "se_gate": "MODEL.SE.GATE",
    "se_bias": "MODEL.SE.BIAS",
    "se_position": "MODEL.SE.POSITION",
    "stem": "MODEL.SE.STEM",
    "stem_ceil_pool": "MODEL.SE.STEM_CEIL_POOL",
    "conv1_width_ratio": "MODEL.SE.CONV1_WIDTH_RATIO",
    "shortcut_kernel": "MODEL.SE.SHORTCUT_KERNEL",
    "stem_widths": "MODEL.SE.STEM_WIDTHS",
    "avg_down": "MODEL.SE.AVG_DOWN",
    "anti_alias": "MODEL.SE.ANTI_ALIAS",
}


class SEConfigError(SEDetectronError, ValueError):
    """An invalid SE trunk option (``MODEL.SE.*`` / ``MODEL.RESNETS.*`` key or argument)."""


def _bad(key, value, expected):
    return SEConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_names(value) -> bool:
    """A list/tuple (or OmegaConf ListConfig) of strings."""
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and all(isinstance(v, str) for v in value)
    )


def se_trunk_options(cfg) -> Dict[str, Any]:
    """The trunk options of a yacs config, as ``make_se_resnet`` keyword arguments.

    Args:
        cfg: a config with ``add_se_config`` applied.

    Returns:
        dict: option name -> value, one entry per :data:`SE_TRUNK_CFG_KEYS` key.
    """
    return {name: config_value(cfg, key) for name, key in SE_TRUNK_CFG_KEYS.items()}


def check_se_config(cfg):
    """Check every key the SE trunk builder reads, before anything is built.

    Args:
        cfg: a config with ``add_se_config`` applied.

    Raises:
        SEConfigError: naming the offending key, its value and what is accepted.
    """
    if "SE" not in cfg.MODEL:
        raise SEConfigError(
            "cfg.MODEL.SE is missing: call se_detectron.add_se_config(cfg) before merging an "
            "se_detectron config or building an SE backbone"
        )
    res = cfg.MODEL.RESNETS
    if any(res.DEFORM_ON_PER_STAGE):
        # Detectron2's ResNet would build DeformBottleneckBlocks; the SE blocks have no
        # deformable variant, so the key would be silently ignored.
        raise _bad(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE",
            list(res.DEFORM_ON_PER_STAGE),
            "[False, False, False, False]: the SE trunks have no deformable-conv blocks (and the "
            "sal-detectron2 wheel's detectron2._C, which deformable convs need, does not load "
            "on Python 3.11)",
        )
    check_se_options(se_trunk_options(cfg), SE_TRUNK_CFG_KEYS)
    cpu_roi_align_choice(cfg)


def cpu_roi_align_choice(cfg) -> str:
    """``MODEL.CPU_ROI_ALIGN``, checked (``"torchvision"`` for a config without the key).

    Raises:
        SEConfigError: naming the key for a value other than :data:`CPU_ROI_ALIGN_CHOICES`.
    """
    choice = cfg.MODEL.get("CPU_ROI_ALIGN", "torchvision")
    if choice not in CPU_ROI_ALIGN_CHOICES:
        raise _bad(
            "MODEL.CPU_ROI_ALIGN",
            choice,
            f"one of {', '.join(repr(c) for c in CPU_ROI_ALIGN_CHOICES)}",
        )
    return choice


def check_se_options(options: Mapping[str, Any], names: Optional[Mapping[str, str]] = None):
    """Check the options of an SE trunk (all :data:`SE_TRUNK_CFG_KEYS` keys) before building it.

    Args:
        options: option name -> value (the keyword arguments of ``make_se_resnet``).
        names: how to name each option in messages (e.g. :data:`SE_TRUNK_CFG_KEYS` for config
            keys); default: the option names themselves.

    Raises:
        SEConfigError: naming the offending option, its value and what is accepted.
    """
    o = options

    def key(option):
        return names[option] if names else option

    if o["depth"] not in SE_DEPTHS or not _is_int(o["depth"]):
        raise _bad(
            key("depth"),
            o["depth"],
            f"one of {SE_DEPTHS} (18/34: basic blocks, the others bottleneck blocks)",
        )
    for option in ("stem_out_channels", "res2_out_channels"):
        if not _is_int(o[option]) or o[option] < 1:
            raise _bad(key(option), o[option], "a positive integer")
    if o["depth"] in BASIC_DEPTHS:
        _check_basic_block_options(o, key)
    if o["res5_dilation"] not in (1, 2) or not _is_int(o["res5_dilation"]):
        raise _bad(key("res5_dilation"), o["res5_dilation"], "1 or 2")
    groups, width = o["num_groups"], o["width_per_group"]
    if not (_is_int(groups) and _is_int(width)) or groups < 1 or width < 1:
        raise SEConfigError(
            f"{key('num_groups')} and {key('width_per_group')} must be positive integers, got "
            f"{groups!r} and {width!r}"
        )
    for option in ("stride_in_1x1", "se_bias", "stem_ceil_pool", "avg_down", "anti_alias"):
        if not isinstance(o[option], bool):
            raise _bad(key(option), o[option], "True or False")
    out = o["out_features"]
    if not _is_names(out) or any(f not in ("stem",) + SE_STAGE_NAMES for f in out):
        shown = list(out) if _is_names(out) else out
        raise _bad(key("out_features"), shown, f"names among stem, {SE_STAGE_NAMES}")
    if not _is_int(o["freeze_at"]) or not 0 <= o["freeze_at"] <= 5:
        raise _bad(key("freeze_at"), o["freeze_at"], "0 (nothing) .. 5 (stem and res2-res5)")

    if o["se_squeeze"] not in SE_SQUEEZES:
        raise _bad(key("se_squeeze"), o["se_squeeze"], f"one of {SE_SQUEEZES}")
    if o["se_gate"] not in SE_GATES:
        raise _bad(key("se_gate"), o["se_gate"], f"one of {SE_GATES}")
    if o["se_position"] not in SE_POSITIONS:
        raise _bad(key("se_position"), o["se_position"], f"one of {SE_POSITIONS}")
    if o["stem"] not in SE_STEMS:
        raise _bad(key("stem"), o["stem"], f"one of {SE_STEMS}")
    stages = o["se_stages"]
    if not _is_names(stages):
        raise _bad(key("se_stages"), stages, f"a list of names among {SE_STAGE_NAMES}")
    unknown = [s for s in stages if s not in SE_STAGE_NAMES]
    if unknown:
        raise _bad(
            key("se_stages"), list(stages), f"names among {SE_STAGE_NAMES} (unknown: {unknown})"
        )
    if o["shortcut_kernel"] not in (1, 3) or not _is_int(o["shortcut_kernel"]):
        raise _bad(key("shortcut_kernel"), o["shortcut_kernel"], "1 or 3")
    _check_resnet_d_options(o, key)
    ratio = o["conv1_width_ratio"]
    if not (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 4):
        raise _bad(
            key("conv1_width_ratio"), ratio, "a number in (0, 4], 1.0 normally, 0.5 for SENet-154"
        )

    r = o["se_reduction"]
    if not _is_int(r) or r <= 0:
        raise _bad(key("se_reduction"), r, "a positive integer (the paper uses 16)")
    for idx, name in enumerate(SE_STAGE_NAMES):
        if name not in stages:
            continue
        channels = _se_channels(o, idx)
        if r > channels:
            raise _bad(
                key("se_reduction"),
                r,
                f"at most {channels}: the SE units of {name} (position {o['se_position']!r}) see "
                f"{channels} channels and C/r must be at least 1",
            )


def _check_resnet_d_options(o, key):
    """Deep-stem widths, average-pooled shortcuts and anti-aliasing (timm's ResNet-D SE models)."""
    widths = o["stem_widths"]
    if not (
        isinstance(widths, Sequence)
        and not isinstance(widths, str)
        and len(widths) in (0, 2)
        and all(_is_int(w) and w > 0 for w in widths)
    ):
        raise _bad(
            key("stem_widths"),
            widths,
            "[] (STEM_OUT_CHANNELS / 2 twice) or two positive integers, e.g. [24, 32]",
        )
    if len(widths) and o["stem"] != "deep":
        raise _bad(key("stem_widths"), list(widths), f"[] with {key('stem')}={o['stem']!r}")
    resnet_d = [k for k in ("avg_down", "anti_alias") if o[k]]
    if resnet_d and tuple(o["se_stages"]) != SE_STAGE_NAMES:
        raise _bad(
            key("se_stages"),
            list(o["se_stages"]),
            f"all of {list(SE_STAGE_NAMES)} with {key(resnet_d[0])}=True (Detectron2's plain "
            "blocks have no average-pooled shortcut or anti-aliasing)",
        )
    if o["avg_down"] and o["shortcut_kernel"] != 1:
        raise _bad(
            key("shortcut_kernel"),
            o["shortcut_kernel"],
            f"1 with {key('avg_down')}=True (the average-pooled shortcut projects with a 1x1 conv)",
        )
    if o["anti_alias"]:
        if o["stride_in_1x1"]:
            raise _bad(
                key("stride_in_1x1"),
                True,
                f"False with {key('anti_alias')}=True (the 3x3 conv is the one followed by the "
                "anti-aliasing pool)",
            )
        if o["stem_ceil_pool"]:
            raise _bad(
                key("stem_ceil_pool"),
                True,
                f"False with {key('anti_alias')}=True (the stem average-pools instead)",
            )


def _check_basic_block_options(o, key):
    """The options a basic-block trunk (depth 18/34) cannot honour, as Detectron2's R18/R34."""
    depth = f"with {key('depth')}={o['depth']} (basic blocks)"
    if o["res2_out_channels"] != 64:
        raise _bad(key("res2_out_channels"), o["res2_out_channels"], f"64 {depth}")
    if o["res5_dilation"] != 1:
        raise _bad(key("res5_dilation"), o["res5_dilation"], f"1 {depth}")
    if o["num_groups"] != 1:
        raise _bad(key("num_groups"), o["num_groups"], f"1 {depth}")
    if o["se_position"] not in BASIC_SE_POSITIONS:
        raise _bad(key("se_position"), o["se_position"], f"one of {BASIC_SE_POSITIONS} {depth}")
    if o["conv1_width_ratio"] != 1.0:
        raise _bad(key("conv1_width_ratio"), o["conv1_width_ratio"], f"1.0 {depth}")
    if o["shortcut_kernel"] != 1:
        raise _bad(key("shortcut_kernel"), o["shortcut_kernel"], f"1 {depth}")
    for option in ("avg_down", "anti_alias"):
        if o[option]:
            raise _bad(key(option), True, f"False {depth}")


def _se_channels(o, stage_idx):
    """Channels seen by the smallest SE unit of stage ``stage_idx`` (0 for res2)."""
    out_channels = o["res2_out_channels"] * 2**stage_idx
    if o["se_position"] == "3x3":
        return o["num_groups"] * o["width_per_group"] * 2**stage_idx
    if o["se_position"] == "pre":
        first_in = o["stem_out_channels"] if stage_idx == 0 else out_channels // 2
        return min(first_in, out_channels)
    return out_channels
