"""Validation of the config keys the SE trunks read, with errors that name the key to fix."""

from ..errors import SEDetectronError
from ..layers.se import SE_GATES, SE_SQUEEZES

__all__ = [
    "BASIC_DEPTHS",
    "BASIC_SE_POSITIONS",
    "SE_DEPTHS",
    "SE_POSITIONS",
    "SE_STAGE_NAMES",
    "SE_STEMS",
    "SEConfigError",
    "check_se_config",
]

SE_POSITIONS = ("standard", "pre", "post", "identity", "3x3")
# A basic block (ResNet-18/34) has no 3x3 conv between two 1x1 convs.
BASIC_SE_POSITIONS = ("standard", "pre", "post", "identity")
SE_STAGE_NAMES = ("res2", "res3", "res4", "res5")
SE_STEMS = ("basic", "deep")
SE_DEPTHS = (18, 34, 50, 101, 152)
BASIC_DEPTHS = (18, 34)


class SEConfigError(SEDetectronError, ValueError):
    """An invalid ``MODEL.SE.*`` or ``MODEL.RESNETS.*`` value for an SE trunk."""


def _bad(key, value, expected):
    return SEConfigError(f"{key}={value!r} is invalid: expected {expected}")


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
    se, res = cfg.MODEL.SE, cfg.MODEL.RESNETS
    if res.DEPTH not in SE_DEPTHS:
        raise _bad(
            "MODEL.RESNETS.DEPTH",
            res.DEPTH,
            f"one of {SE_DEPTHS} (18/34: basic blocks, 50/101/152: bottleneck blocks)",
        )
    if res.DEPTH in BASIC_DEPTHS:
        _check_basic_block_config(cfg)
    if res.RES5_DILATION not in (1, 2):
        raise _bad("MODEL.RESNETS.RES5_DILATION", res.RES5_DILATION, "1 or 2")
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
    if res.NUM_GROUPS < 1 or res.WIDTH_PER_GROUP < 1:
        raise SEConfigError(
            "MODEL.RESNETS.NUM_GROUPS and MODEL.RESNETS.WIDTH_PER_GROUP must be positive, got "
            f"{res.NUM_GROUPS} and {res.WIDTH_PER_GROUP}"
        )
    bad_out = [f for f in res.OUT_FEATURES if f not in ("stem",) + SE_STAGE_NAMES]
    if bad_out:
        raise _bad(
            "MODEL.RESNETS.OUT_FEATURES",
            list(res.OUT_FEATURES),
            f"names among stem, {SE_STAGE_NAMES}",
        )
    if not 0 <= cfg.MODEL.BACKBONE.FREEZE_AT <= 5:
        raise _bad(
            "MODEL.BACKBONE.FREEZE_AT",
            cfg.MODEL.BACKBONE.FREEZE_AT,
            "0 (nothing) .. 5 (stem and res2-res5)",
        )

    if se.SQUEEZE not in SE_SQUEEZES:
        raise _bad("MODEL.SE.SQUEEZE", se.SQUEEZE, f"one of {SE_SQUEEZES}")
    if se.GATE not in SE_GATES:
        raise _bad("MODEL.SE.GATE", se.GATE, f"one of {SE_GATES}")
    if se.POSITION not in SE_POSITIONS:
        raise _bad("MODEL.SE.POSITION", se.POSITION, f"one of {SE_POSITIONS}")
    if se.STEM not in SE_STEMS:
        raise _bad("MODEL.SE.STEM", se.STEM, f"one of {SE_STEMS}")
    if not isinstance(se.STAGES, (list, tuple)):
        raise _bad("MODEL.SE.STAGES", se.STAGES, f"a list of names among {SE_STAGE_NAMES}")
    unknown = [s for s in se.STAGES if s not in SE_STAGE_NAMES]
    if unknown:
        raise _bad(
            "MODEL.SE.STAGES", list(se.STAGES), f"names among {SE_STAGE_NAMES} (unknown: {unknown})"
        )
    for key in ("BIAS", "STEM_CEIL_POOL"):
        if not isinstance(se[key], bool):
            raise _bad(f"MODEL.SE.{key}", se[key], "True or False")
    if se.SHORTCUT_KERNEL not in (1, 3):
        raise _bad("MODEL.SE.SHORTCUT_KERNEL", se.SHORTCUT_KERNEL, "1 or 3")
    if not (isinstance(se.CONV1_WIDTH_RATIO, (int, float)) and 0 < se.CONV1_WIDTH_RATIO <= 4):
        raise _bad(
            "MODEL.SE.CONV1_WIDTH_RATIO",
            se.CONV1_WIDTH_RATIO,
            "a number in (0, 4], 1.0 normally, 0.5 for SENet-154",
        )

    r = se.REDUCTION
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise _bad("MODEL.SE.REDUCTION", r, "a positive integer (the paper uses 16)")
    for idx, name in enumerate(SE_STAGE_NAMES):
        if name not in se.STAGES:
            continue
        channels = _se_channels(cfg, idx)
        if r > channels:
            raise _bad(
                "MODEL.SE.REDUCTION",
                r,
                f"at most {channels}: the SE units of {name} (position {se.POSITION!r}) see "
                f"{channels} channels and C/r must be at least 1",
            )


def _check_basic_block_config(cfg):
    """The keys a basic-block trunk (depth 18/34) cannot honour, as Detectron2's R18/R34."""
    res, se = cfg.MODEL.RESNETS, cfg.MODEL.SE
    depth = f"with MODEL.RESNETS.DEPTH={res.DEPTH} (basic blocks)"
    if res.RES2_OUT_CHANNELS != 64:
        raise _bad("MODEL.RESNETS.RES2_OUT_CHANNELS", res.RES2_OUT_CHANNELS, f"64 {depth}")
    if res.RES5_DILATION != 1:
        raise _bad("MODEL.RESNETS.RES5_DILATION", res.RES5_DILATION, f"1 {depth}")
    if res.NUM_GROUPS != 1:
        raise _bad("MODEL.RESNETS.NUM_GROUPS", res.NUM_GROUPS, f"1 {depth}")
    if se.POSITION not in BASIC_SE_POSITIONS:
        raise _bad("MODEL.SE.POSITION", se.POSITION, f"one of {BASIC_SE_POSITIONS} {depth}")
    if se.CONV1_WIDTH_RATIO != 1.0:
        raise _bad("MODEL.SE.CONV1_WIDTH_RATIO", se.CONV1_WIDTH_RATIO, f"1.0 {depth}")
    if se.SHORTCUT_KERNEL != 1:
        raise _bad("MODEL.SE.SHORTCUT_KERNEL", se.SHORTCUT_KERNEL, f"1 {depth}")


def _se_channels(cfg, stage_idx):
    """Channels seen by the smallest SE unit of stage ``stage_idx`` (0 for res2)."""
    res, se = cfg.MODEL.RESNETS, cfg.MODEL.SE
    out_channels = res.RES2_OUT_CHANNELS * 2**stage_idx
    if se.POSITION == "3x3":
        return res.NUM_GROUPS * res.WIDTH_PER_GROUP * 2**stage_idx
    if se.POSITION == "pre":
        first_in = res.STEM_OUT_CHANNELS if stage_idx == 0 else out_channels // 2
        return min(first_in, out_channels)
    return out_channels
