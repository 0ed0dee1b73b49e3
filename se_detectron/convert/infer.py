"""Inference of the SE trunk architecture from its weights (names and shapes only).

The shapes of a trunk-named state dict fix ``MODEL.RESNETS.DEPTH`` (block counts),
``NUM_GROUPS``/``WIDTH_PER_GROUP`` (3x3 conv shapes), ``STEM_OUT_CHANNELS``,
``RES2_OUT_CHANNELS`` and ``MODEL.SE.{STEM, STEM_WIDTHS, REDUCTION, STAGES, BIAS,
CONV1_WIDTH_RATIO, SHORTCUT_KERNEL}``. What the weights cannot tell (where the stride is, how the
stem pools, the input normalization, parameter-free layers such as ResNet-D's shortcut pooling or
anti-aliasing) comes from the source layout and format (:mod:`.formats`, :mod:`.settings`) or the
converter's ``--arch``.
"""

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..config import config_opts, get_se_cfg, same_value
from ..modeling import build_se_resnet
from ..modeling.archs import ARCHS
from ..modeling.config_check import BASIC_DEPTHS, SE_STAGE_NAMES
from ..modeling.se_resnet import NUM_BLOCKS_PER_STAGE
from ..utils.state_dict import diff_state_dicts
from .formats import ConversionError

__all__ = [
    "LAYOUT_KEYS",
    "STRUCTURAL_KEYS",
    "SEArchitecture",
    "infer_architecture",
    "match_arch",
    "same_value",
    "validate_trunk_state_dict",
]


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
    "MODEL.SE.STEM_WIDTHS",
)
# Parameter-free layout keys, set from the source layout (AVG_DOWN) or --arch (ANTI_ALIAS).
LAYOUT_KEYS = ("MODEL.SE.AVG_DOWN", "MODEL.SE.ANTI_ALIAS")


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
        stem_widths: the deep stem's first two conv widths; empty if both are
            ``stem_out_channels // 2``.
        avg_down: ResNet-D average-pooled shortcuts (from the source layout, not the shapes).
        anti_alias: anti-aliased downsampling (has no weights: from ``--arch`` or a record).
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
    stem_widths: Tuple[int, ...] = ()
    avg_down: bool = False
    anti_alias: bool = False

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
            "MODEL.SE.STEM_WIDTHS": list(self.stem_widths),
            "MODEL.SE.AVG_DOWN": self.avg_down,
            "MODEL.SE.ANTI_ALIAS": self.anti_alias,
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
        resnet_d = ("-D" if self.avg_down else "") + (" anti-aliased" if self.anti_alias else "")
        width = f" {self.num_groups}x{self.width_per_group}d" if self.num_groups > 1 else ""
        se = (
            f"SE r={self.se_reduction} on {','.join(self.se_stages)} ({self.se_position})"
            if self.se_stages
            else "no SE units"
        )
        return (
            f"{kind}-{layers}{resnet_d}{width}: blocks {'-'.join(map(str, self.block_counts))}, "
            f"{self.stem} stem "
            + "-".join(map(str, (*self.stem_widths, self.stem_out_channels)))
            + " ch, "
            f"conv1 width x{self.conv1_width_ratio:g}, "
            f"{'avg-pool + ' if self.avg_down else ''}{self.shortcut_kernel}x{self.shortcut_kernel}"
            f" projection shortcuts, {se}"
        )


def _shape(state_dict: Mapping[str, Any], key: str) -> Tuple[int, ...]:
    if key not in state_dict:
        raise ConversionError(f"the checkpoint has no {key!r}, which every SE trunk has")
    return tuple(state_dict[key].shape)


def infer_architecture(state_dict: Mapping[str, Any]) -> SEArchitecture:
    """Read the architecture off a state dict with the trunk's names.

    Args:
        state_dict: trunk name -> tensor or array (e.g. from
            :func:`se_detectron.convert.rename_state_dict`).

    Returns:
        SEArchitecture: the inferred architecture. It is checked afterwards by
        :func:`validate_trunk_state_dict`.

    Raises:
        ConversionError: for weights that no ``build_se_resnet`` config can hold (block counts
            of no ``MODEL.RESNETS.DEPTH``, SE widths that no single reduction ratio explains ...).
    """
    sd = state_dict
    # Stem.
    conv1 = _shape(sd, "stem.conv1.weight")
    in_channels = conv1[1]
    if "stem.conv2.weight" in sd:
        stem = "deep"
        w1, w2 = conv1[0], _shape(sd, "stem.conv2.weight")[0]
        stem_out = _shape(sd, "stem.conv3.weight")[0]
        # MODEL.SE.STEM_WIDTHS [] means STEM_OUT_CHANNELS/2 twice (64-64-128, 32-32-64)
        stem_widths = () if w1 == w2 == stem_out // 2 else (w1, w2)
    else:
        stem, stem_widths = "basic", ()
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
        stem_widths=stem_widths,
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


def match_arch(config: Mapping[str, Any]) -> Optional[str]:
    """The name in :data:`se_detectron.modeling.archs.ARCHS` with the same weight shapes.

    The keys that shape the weights (depth, groups, widths, stem, conv1 ratio, shortcut kernel)
    and the parameter-free layout keys (``AVG_DOWN``, ``ANTI_ALIAS``) are compared: the table's
    ``STRIDE_IN_1X1`` / ``STEM_CEIL_POOL`` describe our own pretraining, which may differ from
    the source's.

    Args:
        config: dotted keys to values, e.g. from :meth:`SEArchitecture.config`.

    Returns:
        e.g. ``"se_resnext50_32x4d"``, or None.
    """
    for name, arch in ARCHS.items():
        keys = STRUCTURAL_KEYS + LAYOUT_KEYS
        if all(same_value(arch.get(k, config.get(k)), config.get(k)) for k in keys):
            return name
    return None


def _format_config(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in config.items())


def _preview(keys: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > n else "")
