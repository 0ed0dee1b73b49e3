"""Conversion of pretrained SE-ResNet weights to a Detectron2-loadable file (the tool's logic)."""

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional

from ..config import get_se_cfg
from ..modeling.archs import ARCHS, resolve_arch_name
from .files import extract_state_dict, load_checkpoint_file, save_converted, write_config_yaml
from .formats import (
    SOURCE_FORMATS,
    ConversionError,
    detect_source_format,
    rename_state_dict,
    strip_common_prefix,
)
from .infer import (
    LAYOUT_KEYS,
    STRUCTURAL_KEYS,
    SEArchitecture,
    infer_architecture,
    match_arch,
    validate_trunk_state_dict,
)
from .settings import config_mismatches, required_config, same_value

__all__ = ["ConversionResult", "convert_checkpoint", "convert_state_dict", "format_summary"]


@dataclass
class ConversionResult:
    """Everything a conversion produced.

    Attributes:
        source: the source format (a key of :data:`SOURCE_FORMATS`).
        detected: whether ``source`` was auto-detected.
        state_dict: trunk name -> tensor.
        renamed: trunk name -> source name.
        dropped: source keys left out (classifier, ``num_batches_tracked``).
        arch: the inferred architecture.
        arch_name: its name in ``se_detectron.modeling.archs.ARCHS`` (None if not there).
        config: the config values the weights require (dotted keys).
        notes: assumptions and remarks.
        weights_key: where the weights were in the input (``"model"``, ``"model_ema"``, ...).
        input_path: the file converted (when converting files).
        output_path: the ``.pkl`` written.
        config_path: the config written (``write_config``).
        base_config: the ``_BASE_`` of that config.
        base_differences: the values of ``config`` that differ from ``base_config``.
    """

    source: str
    detected: bool
    state_dict: Dict[str, Any]
    renamed: Dict[str, str]
    dropped: List[str]
    arch: SEArchitecture
    arch_name: Optional[str]
    config: Dict[str, Any]
    notes: List[str] = field(default_factory=list)
    weights_key: str = ""
    input_path: str = ""
    output_path: str = ""
    config_path: str = ""
    base_config: str = ""
    base_differences: List[Any] = field(default_factory=list)


def convert_state_dict(
    state_dict: Mapping[str, Any],
    source: str = "auto",
    *,
    container: Optional[Mapping[str, Any]] = None,
    arch: Optional[str] = None,
) -> ConversionResult:
    """Rename a source state dict to the trunk's names and infer the config it needs.

    Args:
        state_dict: the source weights (a ``module.`` prefix is removed).
        source: ``"auto"`` or one of :data:`SOURCE_FORMATS` (``"se_detectron"``, ``"timm"``,
            ``"cadene"``; timm's ``legacy_*`` models use the ``"cadene"`` layout).
        container: the whole loaded checkpoint, for the metadata of ``se_detectron``
            checkpoints (``"se_detectron_config"``, ``"args"``).
        arch: the network the weights are, an :data:`~se_detectron.modeling.archs.ARCHS` name or
            its timm name (e.g. ``"seresnextaa101d_32x8d"``). It must agree with the weights'
            shapes; it provides what has no weights (``MODEL.SE.ANTI_ALIAS``). None: inferred.

    Returns:
        ConversionResult: renamed weights (same tensor objects), architecture and config. The
        weights are checked against the trunk built from that config.

    Raises:
        ConversionError: unknown or ambiguous layout, keys without a counterpart, or an
            architecture the SE trunk cannot build.
    """
    sd = strip_common_prefix(state_dict)
    detected = source == "auto"
    if detected:
        source = detect_source_format(list(sd))
    elif source not in SOURCE_FORMATS:
        raise ConversionError(
            f"unknown --source {source!r}; choose auto or one of {', '.join(SOURCE_FORMATS)}"
        )
    renamed = rename_state_dict(sd, source)
    if not renamed.state_dict:
        raise ConversionError(f"no trunk weights in the checkpoint read as {source!r}")
    inferred = replace(infer_architecture(renamed.state_dict), avg_down=renamed.avg_down)
    if not inferred.se_stages:
        raise ConversionError(
            f"the checkpoint (read as {source!r}) has no SE units: a plain {inferred.depth}-layer "
            "ResNet/ResNeXt (e.g. torchvision's), for which se_detectron's SE trunks "
            "would keep every SE layer at its random initialization. Convert SE weights "
            "(timm seresnet*/seresnext*, Cadene SENets, tools/pretrain_imagenet.py) or train a "
            "plain ResNet with Detectron2's own configs"
        )
    config, notes = required_config(source, inferred, container)
    if arch:
        notes.append(_apply_arch(arch, config))
    elif config["MODEL.SE.AVG_DOWN"] and source == "timm":
        notes.append(
            "MODEL.SE.ANTI_ALIAS False assumed: anti-aliasing has no weights, so timm's "
            "seresnetaa* / seresnextaa* files look like their ResNet-D twins; convert those with "
            "--arch (e.g. --arch seresnextaa101d_32x8d)"
        )
    # the recorded / --arch values of the parameter-free keys win over the layout's
    inferred = replace(
        inferred,
        avg_down=config["MODEL.SE.AVG_DOWN"],
        anti_alias=config["MODEL.SE.ANTI_ALIAS"],
    )
    validate_trunk_state_dict(renamed.state_dict, config, in_channels=inferred.in_channels)
    return ConversionResult(
        source=source,
        detected=detected,
        state_dict=renamed.state_dict,
        renamed=renamed.renamed,
        dropped=renamed.dropped,
        arch=inferred,
        arch_name=match_arch(config),
        config=config,
        notes=notes,
    )


def convert_checkpoint(
    input_path: str,
    output_path: str,
    *,
    source: str = "auto",
    ema: bool = False,
    trust_pickle: bool = False,
    write_config: Optional[str] = None,
    base_config: Optional[str] = None,
    arch: Optional[str] = None,
) -> ConversionResult:
    """Convert a pretrained checkpoint file to a Detectron2 ``.pkl`` (and optionally a config).

    Args:
        input_path: ``.pth``/``.pt`` (a state dict, or a dict with ``"model"``/``"state_dict"``)
            or ``.safetensors``.
        output_path: the ``.pkl`` to write; it holds the weights and the required config (under
            ``"se_detectron_config"``).
        source: ``"auto"`` or a key of :data:`SOURCE_FORMATS`.
        ema: convert the EMA weights (``"model_ema"`` / ``"state_dict_ema"``).
        trust_pickle: allow arbitrary pickled objects in the input (see
            :func:`load_checkpoint_file`).
        write_config: if given, write a leaf YAML config there (``_BASE_: base_config``,
            ``MODEL.WEIGHTS: output_path`` and the required values).
        base_config: the config to inherit from; also the reference for
            ``ConversionResult.base_differences``. Required with ``write_config``.
        arch: see :func:`convert_state_dict`. None: the ``"architecture"`` of a timm
            ``config.json`` next to the input (as the Hugging Face hub stores timm models), if
            there is one.

    Returns:
        ConversionResult: with the file paths filled in.
    """
    if write_config and not base_config:
        raise ConversionError("--write-config needs --base-config (the config to inherit from)")
    container = load_checkpoint_file(input_path, trust_pickle=trust_pickle)
    weights, weights_key = extract_state_dict(container, ema=ema)
    hub_note = None
    if arch is None:
        arch, hub_note = _hub_architecture(input_path)
    result = convert_state_dict(weights, source, container=container, arch=arch)
    if hub_note:
        result.notes.insert(0, hub_note)
    result.weights_key = weights_key
    result.input_path = input_path
    if base_config:
        result.base_config = base_config
        result.base_differences = config_mismatches(get_se_cfg(base_config), result.config)
    metadata = {
        "input": os.path.basename(input_path),
        "source": result.source,
        "weights_key": weights_key,
        "arch": result.arch_name,
        "dropped": result.dropped,
    }
    save_converted(output_path, result.state_dict, result.config, metadata=metadata)
    result.output_path = output_path
    if write_config:
        header = (
            f"Generated by tools/convert_pretrained.py from {os.path.basename(input_path)}\n"
            f"(source format: {result.source}; architecture: {result.arch.describe()}).\n"
            "The MODEL.* / INPUT.FORMAT values below are required by the converted weights."
        )
        write_config_yaml(write_config, base_config, output_path, result.config, header=header)
        result.config_path = write_config
    return result


def _apply_arch(name: str, config: Dict[str, Any]) -> str:
    """Check ``--arch`` against the inferred ``config`` and take its parameter-free keys."""
    try:
        arch_name = resolve_arch_name(name)
    except KeyError as e:
        raise ConversionError(f"--arch: {e.args[0]}") from None
    overrides = ARCHS[arch_name]
    for key in STRUCTURAL_KEYS + ("MODEL.SE.AVG_DOWN",):
        want, have = overrides[key], config[key]
        if not same_value(have, want):
            raise ConversionError(
                f"--arch {name}: the architecture has {key}={want!r} but the weights have "
                f"{have!r}; these weights are not {name}"
            )
    for key in LAYOUT_KEYS:
        config[key] = overrides[key]
    return f"--arch {name}: {arch_name}, MODEL.SE.ANTI_ALIAS {overrides['MODEL.SE.ANTI_ALIAS']}"


def _hub_architecture(input_path: str):
    """``(architecture, note)`` from a timm ``config.json`` beside ``input_path``, if any."""
    path = os.path.join(os.path.dirname(os.path.abspath(input_path)), "config.json")
    if not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            name = json.load(f).get("architecture")
    except (OSError, ValueError, AttributeError):
        return None, f"{path} is not a timm config.json; ignored"
    if not isinstance(name, str):
        return None, None
    try:
        resolve_arch_name(name)
    except KeyError:
        return None, f"architecture {name!r} of {path} is not an SE architecture; ignored"
    return name, f"architecture {name!r} read from {path}"


def format_summary(result: ConversionResult) -> str:
    """The converter's human-readable report of a :class:`ConversionResult`."""
    classifier = sorted(k for k in result.dropped if not k.endswith("num_batches_tracked"))
    counters = len(result.dropped) - len(classifier)
    how = "auto-detected" if result.detected else "given with --source"
    lines = [
        f"input          : {result.input_path or '(state dict)'}"
        + (f" [weights under {result.weights_key!r}]" if result.weights_key else ""),
        f"source format  : {result.source} ({how}): {SOURCE_FORMATS[result.source]}",
        f"architecture   : {result.arch_name or 'unnamed'}: {result.arch.describe()}",
        f"tensors        : {len(result.state_dict)} converted",
        f"dropped        : {len(classifier)} classifier keys ({', '.join(classifier) or '-'})"
        + (f", {counters} BatchNorm num_batches_tracked counters" if counters else ""),
    ]
    if result.output_path:
        lines.append(f"output         : {result.output_path}")
    lines.append("config required by these weights:")
    lines += [f"  {k}: {_fmt(v)}" for k, v in result.config.items()]
    if result.base_config:
        if result.base_differences:
            lines.append(f"changes to {result.base_config}:")
            lines += [
                f"  {k}: {_fmt(have)} -> {_fmt(want)}" for k, have, want in result.base_differences
            ]
        else:
            lines.append(f"{result.base_config} already has all of these values")
    for note in result.notes:
        lines.append(f"note: {note}")
    if result.config_path:
        lines.append(f"wrote config   : {result.config_path}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
