"""Inference of the SE trunk architecture from its weights, and the config a checkpoint needs.

The shapes of a trunk-named state dict fix ``MODEL.RESNETS.DEPTH`` (block counts),
``NUM_GROUPS``/``WIDTH_PER_GROUP`` (3x3 conv shapes), ``STEM_OUT_CHANNELS``,
``RES2_OUT_CHANNELS`` and ``MODEL.SE.{STEM, REDUCTION, STAGES, BIAS, CONV1_WIDTH_RATIO,
SHORTCUT_KERNEL}``. What the weights cannot tell (where the stride is, how the stem pools, the
input normalization) comes from the source format (:func:`source_settings`).
"""

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..config import config_opts, config_value, get_se_cfg
from ..modeling import build_se_resnet
from ..modeling.archs import ARCHS
from ..modeling.config_check import BASIC_DEPTHS, SE_STAGE_NAMES
from ..modeling.se_resnet import NUM_BLOCKS_PER_STAGE
from ..utils.state_dict import diff_state_dicts
from .formats import ConversionError

__all__ = [
    "IMAGENET_RGB_PIXEL_MEAN",
    "IMAGENET_RGB_PIXEL_STD",
    "SEArchitecture",
    "config_mismatches",
    "infer_architecture",
    "match_arch",
    "required_config",
    "source_settings",
    "validate_trunk_state_dict",
]

# ImageNet mean/std of RGB images in [0, 1] (timm's IMAGENET_DEFAULT_MEAN/STD and Cadene's
# pretrained_settings) on Detectron2's 0-255 pixel scale: 255 * (0.485, 0.456, 0.406) and
# 255 * (0.229, 0.224, 0.225).
IMAGENET_RGB_PIXEL_MEAN = [123.675, 116.28, 103.53]
IMAGENET_RGB_PIXEL_STD = [58.395, 57.12, 57.375]

# Config keys that fix the shapes of the trunk's weights.
STRUCTURAL_KEYS = (
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.NUM_GROUPS",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "MODEL.SE.STEM",
    "MODEL.SE.CONV1_WIDTH_RATIO",
    "MODEL.SE.SHORTCUT_KERNEL",
)


@dataclass(frozen=True)
class SEArchitecture:
    """The trunk architecture read off a trunk-named state dict.

    Attributes:
        depth: 18, 34 (basic blocks), 50, 101 or 152 (bottleneck blocks).
        block_counts: blocks in res2..res5.
        num_groups: groups of the 3x3 convs (cardinality).
        width_per_group: channels per group of res2's 3x3 convs.
        stem: ``"basic"`` (7x7 conv) or ``"deep"`` (three 3x3 convs).
        stem_out_channels: channels out of the stem.
        res2_out_channels: channels out of res2.
        conv1_width_ratio: width of the first 1x1 conv relative to the 3x3 conv.
        shortcut_kernel: kernel of res3-res5's projection shortcuts.
        se_stages: the stages with SE units.
        se_reduction: the reduction ratio r (None without SE units).
        se_bias: whether the SE layers have biases.
        se_position: ``"standard"`` unless the SE widths prove ``"pre"`` or ``"3x3"``.
        in_channels: input channels of the stem.
    """

    depth: int
    block_counts: Tuple[int, ...]
    num_groups: int
    width_per_group: int
    stem: str
    stem_out_channels: int
    res2_out_channels: int
    conv1_width_ratio: float
    shortcut_kernel: int
    se_stages: Tuple[str, ...]
    se_reduction: Optional[int]
    se_bias: bool
    se_position: str
    in_channels: int = 3

    def config(self) -> Dict[str, Any]:
        """The ``MODEL.RESNETS.*`` / ``MODEL.SE.*`` values of this architecture (dotted keys)."""
        cfg = {
            "MODEL.RESNETS.DEPTH": self.depth,
            "MODEL.RESNETS.NUM_GROUPS": self.num_groups,
            "MODEL.RESNETS.WIDTH_PER_GROUP": self.width_per_group,
            "MODEL.RESNETS.STEM_OUT_CHANNELS": self.stem_out_channels,
            "MODEL.RESNETS.RES2_OUT_CHANNELS": self.res2_out_channels,
            "MODEL.SE.STEM": self.stem,
            "MODEL.SE.CONV1_WIDTH_RATIO": self.conv1_width_ratio,
            "MODEL.SE.SHORTCUT_KERNEL": self.shortcut_kernel,
            "MODEL.SE.STAGES": list(self.se_stages),
            "MODEL.SE.BIAS": self.se_bias,
            "MODEL.SE.POSITION": self.se_position,
        }
        if self.se_reduction is not None:
            cfg["MODEL.SE.REDUCTION"] = self.se_reduction
        return cfg

    def describe(self) -> str:
        """A one-line human description, e.g. for the converter's summary."""
        kind = "SE-ResNeXt" if self.num_groups > 1 else "SE-ResNet"
        layers = self.depth
        if self.stem == "deep" and self.conv1_width_ratio != 1.0:
            kind, layers = "SENet", self.depth + 2  # SENet-154: 152 + two more stem convs
        width = f" {self.num_groups}x{self.width_per_group}d" if self.num_groups > 1 else ""
        se = (
            f"SE r={self.se_reduction} on {','.join(self.se_stages)} ({self.se_position})"
            if self.se_stages
            else "no SE units"
        )
        return (
            f"{kind}-{layers}{width}: blocks {'-'.join(map(str, self.block_counts))}, "
            f"{self.stem} stem {self.stem_out_channels} ch, "
            f"conv1 width x{self.conv1_width_ratio:g}, "
            f"{self.shortcut_kernel}x{self.shortcut_kernel} projection shortcuts, {se}"
        )


def _shape(state_dict: Mapping[str, Any], key: str) -> Tuple[int, ...]:
    if key not in state_dict:
        raise ConversionError(f"the checkpoint has no {key!r}, which every SE trunk has")
    return tuple(state_dict[key].shape)


def infer_architecture(state_dict: Mapping[str, Any]) -> SEArchitecture:
    """Read the architecture off a state dict with the trunk's names.

    Args:
        state_dict: trunk name -> tensor or array (e.g. from
            :func:`se_detectron.checkpoint.rename_state_dict`).

    Returns:
        SEArchitecture: the inferred architecture. It is checked afterwards by
        :func:`validate_trunk_state_dict`.

    Raises:
        ConversionError: for weights that no ``build_se_resnet`` config can hold (block counts
            other than those of depth 18/34 (basic) or 50/101/152 (bottleneck), tiered stems,
            SE widths that no single reduction ratio explains ...).
    """
    sd = state_dict
    # Stem.
    conv1 = _shape(sd, "stem.conv1.weight")
    in_channels = conv1[1]
    if "stem.conv2.weight" in sd:
        stem = "deep"
        widths = (conv1[0], _shape(sd, "stem.conv2.weight")[0], _shape(sd, "stem.conv3.weight")[0])
        if widths[0] != widths[2] // 2 or widths[1] != widths[2] // 2:
            raise ConversionError(
                f"deep stem widths {widths} are not supported: MODEL.SE.STEM 'deep' has "
                "STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS/2, STEM_OUT_CHANNELS (e.g. 64-64-128)"
            )
        stem_out = widths[2]
    else:
        stem = "basic"
        if conv1[2:] != (7, 7):
            raise ConversionError(f"stem conv of kernel {conv1[2:]}: the basic stem is 7x7")
        stem_out = conv1[0]

    # Stages.
    counts = []
    for name in SE_STAGE_NAMES:
        idx = {int(m.group(1)) for k in sd if (m := re.match(rf"{name}\.(\d+)\.", k))}
        if not idx:
            raise ConversionError(f"the checkpoint has no {name} blocks")
        if idx != set(range(len(idx))):
            raise ConversionError(f"{name} block indices are not contiguous: {sorted(idx)}")
        counts.append(len(idx))
    basic = "res2.0.conv3.weight" not in sd  # two 3x3 convs per block: ResNet-18/34
    depths = {d: c for d, c in NUM_BLOCKS_PER_STAGE.items() if (d in BASIC_DEPTHS) == basic}
    depth = next((d for d, c in depths.items() if tuple(c) == tuple(counts)), None)
    if depth is None:
        known = ", ".join(f"{d}: {'-'.join(map(str, c))}" for d, c in depths.items())
        total = (2 if basic else 3) * sum(counts) + 2
        kind = "basic" if basic else "bottleneck"
        raise ConversionError(
            f"{kind} blocks per stage {'-'.join(map(str, counts))} (a depth-{total} network) are "
            f"not supported by MODEL.RESNETS.DEPTH; the SE trunk knows {known}"
        )

    c1, c2 = _shape(sd, "res2.0.conv1.weight"), _shape(sd, "res2.0.conv2.weight")
    if basic:
        # Basic blocks: no grouped 3x3 conv, no bottleneck; Detectron2's R18/R34 defaults.
        groups, width_per_group, ratio = 1, 64, 1.0
        res2_out = bottleneck = c2[0]
    else:
        bottleneck, conv1_out = c2[0], c1[0]
        if conv1_out % c2[1]:
            raise ConversionError(
                f"res2.0.conv2.weight {c2} does not divide conv1's {conv1_out} ch"
            )
        groups = conv1_out // c2[1]
        if bottleneck % groups:
            raise ConversionError(f"res2.0.conv2 width {bottleneck} is not a multiple of {groups}")
        width_per_group = bottleneck // groups
        ratio = conv1_out / bottleneck
        res2_out = _shape(sd, "res2.0.conv3.weight")[0]
    shortcut_kernel = _shape(sd, "res3.0.shortcut.weight")[-1]

    # SE units.
    se_stages = tuple(n for n in SE_STAGE_NAMES if f"{n}.0.se.fc1.weight" in sd)
    reduction, position = None, "standard"
    if se_stages:
        reduction, position = _infer_se(sd, se_stages, stem_out, res2_out, bottleneck)
    se_bias = bool(se_stages) and f"{se_stages[0]}.0.se.fc1.bias" in sd
    if not se_stages:
        se_bias = True  # irrelevant without SE units; keep the default

    return SEArchitecture(
        depth=depth,
        block_counts=tuple(counts),
        num_groups=groups,
        width_per_group=width_per_group,
        stem=stem,
        stem_out_channels=stem_out,
        res2_out_channels=res2_out,
        conv1_width_ratio=float(ratio),
        shortcut_kernel=shortcut_kernel,
        se_stages=se_stages,
        se_reduction=reduction,
        se_bias=se_bias,
        se_position=position,
        in_channels=in_channels,
    )


def _infer_se(sd, se_stages, stem_out, res2_out, bottleneck) -> Tuple[int, str]:
    # Channels each candidate position gives the SE unit of block (stage_idx, block_idx).
    def channels(position, stage_idx, block_idx):
        out = res2_out * 2**stage_idx
        if position == "3x3":
            return bottleneck * 2**stage_idx
        if position == "pre" and block_idx == 0:
            return stem_out if stage_idx == 0 else out // 2
        return out

    seen = []  # (key, C, hidden)
    for name in se_stages:
        stage_idx = SE_STAGE_NAMES.index(name)
        block = 0
        while f"{name}.{block}.se.fc1.weight" in sd:
            hidden, c = _shape(sd, f"{name}.{block}.se.fc1.weight")[:2]
            seen.append((stage_idx, block, c, hidden))
            block += 1
    position = next(
        (
            p
            for p in ("standard", "3x3", "pre")
            if all(c == channels(p, s, b) for s, b, c, _ in seen)
        ),
        None,
    )
    if position is None:
        raise ConversionError(
            "the SE layers' widths match no MODEL.SE.POSITION (standard/post/identity: the "
            "block's output channels, 3x3: the 3x3 conv's, pre: the block's input channels)"
        )
    # The smallest r with C // r == hidden for every unit (timm rounds C/r to multiples of 8;
    # the standard widths divide exactly).
    _, _, c0, h0 = seen[0]
    candidates = [r for r in range(1, c0 + 1) if c0 // r == h0]
    for r in candidates:
        if all(c // r == h for _, _, c, h in seen):
            return r, position
    widths = sorted({(c, h) for _, _, c, h in seen})
    raise ConversionError(
        f"no single MODEL.SE.REDUCTION explains the SE widths (channels, hidden) {widths}"
    )


def validate_trunk_state_dict(
    state_dict: Mapping[str, Any], config: Mapping[str, Any], in_channels: int = 3
) -> None:
    """Check that a trunk-named state dict fits the trunk built from ``config`` exactly.

    The trunk is built on the ``meta`` device (no memory, no initialization cost) and its
    state dict (with ``FrozenBN``, i.e. without ``num_batches_tracked``) is compared by key and
    shape.

    Args:
        state_dict: trunk name -> tensor or array.
        config: dotted config keys to values, applied on top of ``get_se_cfg()``.
        in_channels: input channels of the stem.

    Raises:
        ConversionError: naming missing keys, unexpected keys and shape differences.
    """
    import torch
    from detectron2.layers import ShapeSpec

    cfg = get_se_cfg()
    cfg.merge_from_list(config_opts(config))
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]
    with torch.device("meta"):
        expected = build_se_resnet(cfg, ShapeSpec(channels=in_channels)).state_dict()
    missing, unexpected, wrong_shapes = diff_state_dicts(expected, state_dict)
    wrong = [f"{k}: {found} vs {want}" for k, found, want in wrong_shapes]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape (checkpoint vs trunk)", wrong),
        ):
            if keys:
                parts.append(f"{len(keys)} {label}: {_preview(keys)}")
        raise ConversionError(
            "the weights do not fit the trunk built from the inferred config "
            f"({_format_config(config)}): " + "; ".join(parts)
        )


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
        source: one of :data:`se_detectron.checkpoint.SOURCE_FORMATS`.
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


_PRETRAIN_KEYS = (
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.SE.STEM_CEIL_POOL",
    "MODEL.SE.SQUEEZE",
    "MODEL.SE.GATE",
    "MODEL.SE.POSITION",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "INPUT.FORMAT",
)


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


# Trunk settings taken from a pretraining checkpoint's "cfg" (its PIXEL_MEAN/STD and
# INPUT.FORMAT are Detectron2 defaults that the classification data pipeline does not use).
_TRUNK_CFG_KEYS = (
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.SE.STEM_CEIL_POOL",
    "MODEL.SE.SQUEEZE",
    "MODEL.SE.GATE",
    "MODEL.SE.POSITION",
)


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


def match_arch(config: Mapping[str, Any]) -> Optional[str]:
    """The name in :data:`se_detectron.modeling.archs.ARCHS` with the same weight shapes.

    Only the keys that shape the weights are compared (depth, groups, widths, stem, conv1 ratio,
    shortcut kernel): the table's ``STRIDE_IN_1X1`` / ``STEM_CEIL_POOL`` describe our own
    pretraining, which may differ from the source's.

    Args:
        config: dotted keys to values, e.g. from :meth:`SEArchitecture.config`.

    Returns:
        e.g. ``"se_resnext50_32x4d"``, or None.
    """
    for name, arch in ARCHS.items():
        if all(arch.get(k, config.get(k)) == config.get(k) for k in STRUCTURAL_KEYS):
            return name
    return None


def config_mismatches(cfg, config: Mapping[str, Any]) -> List[Tuple[str, Any, Any]]:
    """The keys where ``cfg`` differs from the required ``config``.

    Args:
        cfg: a Detectron2 config with the SE namespace.
        config: dotted keys to required values.

    Returns:
        list of (key, value in cfg, required value); floats are compared with a 1e-6 relative
        tolerance and lists/tuples element-wise.
    """
    out = []
    for key, want in config.items():
        try:
            have = config_value(cfg, key)
        except KeyError:
            out.append((key, None, want))
            continue
        if not _same(have, want):
            out.append((key, have, want))
    return out


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b and type(a) is type(b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6)
    return a == b


def _format_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in config.items())


def _preview(keys: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > n else "")
