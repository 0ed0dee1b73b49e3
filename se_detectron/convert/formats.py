"""Renaming of SE-ResNet state dicts from their source layouts to the trunk's parameter names.

The trunk (:func:`se_detectron.modeling.build_se_resnet`) is Detectron2's ``ResNet``: its names
are ``stem.conv1.weight``, ``stem.conv1.norm.{weight,bias,running_mean,running_var}`` (deep stem:
``stem.conv{1,2,3}``), ``res2.0.conv{1,2,3}[.norm].*``, ``res2.0.shortcut[.norm].*``,
``res2.0.se.fc{1,2}.{weight,bias}`` ... ``res5.*``. Three source layouts are understood:

``se_detectron``
    our own pretraining checkpoints (``build_se_resnet_classifier``): trunk names already, plus
    the classifier ``linear.*``.
``timm``
    timm's ``resnet.py`` models (``seresnet50``, ``seresnext50_32x4d``, ``senet154``, the
    ResNet-D ``seresnet152d`` / ``seresnext26d_32x4d`` / ``seresnext26t_32x4d`` /
    ``seresnextaa101d_32x8d`` ... and torchvision's ResNet naming): ``conv1``/``bn1`` (deep stem:
    ``conv1.{0,1,3,4,6}`` + ``bn1``), ``layer{1-4}.M.conv{1,2,3}``/``bn{1,2,3}``,
    ``downsample.{0,1}`` (ResNet-D: ``downsample.0`` is the average pool, ``downsample.{1,2}``
    the conv and its norm), ``se.fc{1,2}``, classifier ``fc``.
``cadene``
    Cadene's ``pretrainedmodels`` SENets and their timm port ``legacy_*`` (same names):
    ``layer0.conv1``/``bn1`` (SENet-154: also ``conv2``/``bn2``/``conv3``/``bn3``),
    ``layer{1-4}.M.conv{1,2,3}``/``bn{1,2,3}``, ``downsample.{0,1}``, ``se_module.fc{1,2}``,
    classifier ``last_linear``.

BatchNorm ``num_batches_tracked`` counters are dropped, as in Detectron2's own converted models
(``FrozenBatchNorm2d`` has none and ``BatchNorm2d`` restores a missing one).
"""

import re
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from ..errors import SEDetectronError

__all__ = [
    "SOURCE_FORMATS",
    "ConversionError",
    "RenamedStateDict",
    "detect_source_format",
    "rename_state_dict",
]


class ConversionError(SEDetectronError, ValueError):
    """A checkpoint that cannot be converted to the SE trunk, with the reason."""


#: Source format name -> one-line description (printed in errors and by
#: ``tools/convert_pretrained.py``).
SOURCE_FORMATS: Dict[str, str] = {
    "se_detectron": "se_detectron pretraining checkpoint (stem.*, res2.*..res5.*, linear.*)",
    "timm": "timm resnet.py SE-ResNet/SE-ResNeXt/SENet-154 (conv1, bn1, layer1.0.se.fc1, fc)",
    "cadene": (
        "Cadene pretrainedmodels / timm legacy_* SENet "
        "(layer0.conv1, layer1.0.se_module.fc1, last_linear)"
    ),
}

_BN_FIELDS = r"(weight|bias|running_mean|running_var)"
_BLOCK = r"^layer([1-4])\.(\d+)\."

# Renaming rules shared by timm and Cadene: (pattern, replacement); replacement None = dropped.
_BLOCK_RULES: List[Tuple[str, Optional[str]]] = [
    (_BLOCK + r"conv([123])\.weight$", r"res{s}.\2.conv\3.weight"),
    (_BLOCK + r"bn([123])\." + _BN_FIELDS + "$", r"res{s}.\2.conv\3.norm.\4"),
    (_BLOCK + r"downsample\.{conv}\.weight$", r"res{s}.\2.shortcut.weight"),
    (_BLOCK + r"downsample\.{norm}\." + _BN_FIELDS + "$", r"res{s}.\2.shortcut.norm.\3"),
]

_RULES: Dict[str, List[Tuple[str, Optional[str]]]] = {
    "timm": [
        (r"^conv1\.weight$", "stem.conv1.weight"),
        (r"^conv1\.0\.weight$", "stem.conv1.weight"),
        (r"^conv1\.1\." + _BN_FIELDS + "$", r"stem.conv1.norm.\1"),
        (r"^conv1\.3\.weight$", "stem.conv2.weight"),
        (r"^conv1\.4\." + _BN_FIELDS + "$", r"stem.conv2.norm.\1"),
        (r"^conv1\.6\.weight$", "stem.conv3.weight"),
        (r"^bn1\." + _BN_FIELDS + "$", r"stem.{last_stem_conv}.norm.\1"),
        *_BLOCK_RULES,
        (_BLOCK + r"se\.(fc[12])\.(weight|bias)$", r"res{s}.\2.se.\3.\4"),
        (r"^fc\.(weight|bias)$", None),
    ],
    "cadene": [
        (r"^layer0\.conv([123])\.weight$", r"stem.conv\1.weight"),
        (r"^layer0\.bn([123])\." + _BN_FIELDS + "$", r"stem.conv\1.norm.\2"),
        *_BLOCK_RULES,
        (_BLOCK + r"se_module\.(fc[12])\.(weight|bias)$", r"res{s}.\2.se.\3.\4"),
        (r"^last_linear\.(weight|bias)$", None),
    ],
    "se_detectron": [
        (r"^(stem\.conv[123](\.norm)?\.\w+)$", r"\1"),
        (r"^(res[2-5]\.\d+\.[\w.]+)$", r"\1"),
        (r"^linear\.(weight|bias)$", None),
    ],
}


def _compile(rules, conv: str, norm: str):
    return [(re.compile(p.replace("{conv}", conv).replace("{norm}", norm)), r) for p, r in rules]


# The projection shortcut is downsample.0 (conv) / .1 (norm), or in timm's ResNet-D layout
# (avg_down) downsample.1 / .2 after a parameter-free average pool at downsample.0.
_COMPILED = {fmt: _compile(rules, "0", "1") for fmt, rules in _RULES.items()}
_COMPILED_AVG_DOWN = {fmt: _compile(rules, "1", "2") for fmt, rules in _RULES.items()}

# What the key names of each layout look like, for auto-detection.
_SIGNATURES: Dict[str, Tuple[str, ...]] = {
    "se_detectron": ("stem.conv1.weight", "res2.0.conv1.weight"),
    "cadene": ("layer0.conv1.weight", "layer1.0.conv1.weight"),
    "timm": ("bn1.weight", "layer1.0.conv1.weight"),
}


class RenamedStateDict(NamedTuple):
    """The result of :func:`rename_state_dict`.

    Attributes:
        state_dict: trunk name -> tensor, in the source order.
        renamed: trunk name -> source name.
        dropped: source names left out on purpose (classifier, ``num_batches_tracked``).
        avg_down: the source has timm's ResNet-D average-pooled shortcuts (``downsample.2``).
    """

    state_dict: Dict[str, object]
    renamed: Dict[str, str]
    dropped: List[str]
    avg_down: bool = False


def strip_common_prefix(state_dict: Mapping[str, object]) -> Dict[str, object]:
    """Remove a ``module.`` / ``model.`` prefix present on every key (DataParallel, DDP, EMA).

    The ``n_averaged`` counter of ``torch.optim.swa_utils.AveragedModel`` (EMA) state dicts is
    dropped.
    """
    state_dict = {k: v for k, v in state_dict.items() if k != "n_averaged"}
    keys = list(state_dict)
    for prefix in ("module.", "model."):
        if keys and all(k.startswith(prefix) for k in keys):
            return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def detect_source_format(keys: Sequence[str]) -> str:
    """Find the layout of a state dict from its key names.

    Args:
        keys: the state dict's keys (after removing a ``module.`` prefix).

    Returns:
        One of :data:`SOURCE_FORMATS`.

    Raises:
        ConversionError: if no layout matches, listing the known layouts and sample keys.
    """
    key_set = set(keys)
    found = [fmt for fmt, sig in _SIGNATURES.items() if all(k in key_set for k in sig)]
    if len(found) == 1:
        return found[0]
    if "conv1.0.weight" in key_set and "layer1.0.conv1.weight" in key_set:
        return "timm"  # timm deep stem ("c"/"d"/"s" variants, senet154)
    formats = "\n".join(f"  {name}: {desc}" for name, desc in SOURCE_FORMATS.items())
    sample = ", ".join(sorted(keys)[:8])
    what = f"matches several layouts ({found})" if found else "matches none of the layouts"
    raise ConversionError(
        f"Cannot tell the source format of the checkpoint: its keys {what}. Known formats "
        f"(choose one with --source):\n{formats}\nFirst keys of the checkpoint: {sample}"
    )


def rename_state_dict(state_dict: Mapping[str, object], source: str) -> RenamedStateDict:
    """Rename a state dict of the given layout to the trunk's names.

    Args:
        state_dict: source name -> tensor (without a ``module.`` prefix).
        source: one of :data:`SOURCE_FORMATS`.

    Returns:
        RenamedStateDict: the renamed tensors, the name mapping and the dropped names.

    Raises:
        ConversionError: for an unknown ``source``, or keys the layout does not explain (e.g.
            a blur-pool anti-aliasing layer or an SE with a norm layer), listed in the message.
    """
    if source not in _COMPILED:
        raise ConversionError(
            f"Unknown source format {source!r}; known: {', '.join(SOURCE_FORMATS)}"
        )
    last_stem_conv = "conv3" if "conv1.6.weight" in state_dict else "conv1"
    avg_down = source == "timm" and any(
        re.match(_BLOCK + r"downsample\.2\.", k) for k in state_dict
    )
    rules = (_COMPILED_AVG_DOWN if avg_down else _COMPILED)[source]
    out: Dict[str, object] = {}
    renamed: Dict[str, str] = {}
    dropped: List[str] = []
    unknown: List[str] = []
    for key, value in state_dict.items():
        if key.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        for pattern, repl in rules:
            m = pattern.match(key)
            if m is None:
                continue
            if repl is None:
                dropped.append(key)
            else:
                stage = f"{int(m.group(1)) + 1}" if pattern.pattern.startswith(_BLOCK) else ""
                new = m.expand(repl.format(s=stage, last_stem_conv=last_stem_conv))
                out[new] = value
                renamed[new] = key
            break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(
            f"{len(unknown)} keys of the {source!r} checkpoint have no counterpart in the SE "
            f"trunk: {_preview(unknown)}"
        )
    return RenamedStateDict(out, renamed, dropped, avg_down)


def _preview(keys: Sequence[str], n: int = 8) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > n else "")
