"""Conversion of pretrained SE-ResNet weights to a Detectron2-loadable file (the tool's logic)."""

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

from ..config import get_se_cfg
from .files import extract_state_dict, load_checkpoint_file, save_converted, write_config_yaml
from .formats import (
    SOURCE_FORMATS,
    ConversionError,
    detect_source_format,
    rename_state_dict,
    strip_common_prefix,
)
from .infer import SEArchitecture, infer_architecture, match_arch, validate_trunk_state_dict
from .settings import config_mismatches, required_config

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
        input_path / output_path / config_path: files involved (when converting files).
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
) -> ConversionResult:
    """Rename a source state dict to the trunk's names and infer the config it needs.

    Args:
        state_dict: the source weights (a ``module.`` prefix is removed).
        source: ``"auto"`` or one of :data:`SOURCE_FORMATS` (``"se_detectron"``, ``"timm"``,
            ``"cadene"``; timm's ``legacy_*`` models use the ``"cadene"`` layout).
        container: the whole loaded checkpoint, for the metadata of ``se_detectron``
            checkpoints (``"se_detectron_config"``, ``"args"``).

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
    arch = infer_architecture(renamed.state_dict)
    config, notes = required_config(source, arch, container)
    validate_trunk_state_dict(renamed.state_dict, config, in_channels=arch.in_channels)
    return ConversionResult(
        source=source,
        detected=detected,
        state_dict=renamed.state_dict,
        renamed=renamed.renamed,
        dropped=renamed.dropped,
        arch=arch,
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
            :attr:`ConversionResult.base_differences`. Required with ``write_config``.

    Returns:
        ConversionResult: with the file paths filled in.
    """
    if write_config and not base_config:
        raise ConversionError("--write-config needs --base-config (the config to inherit from)")
    container = load_checkpoint_file(input_path, trust_pickle=trust_pickle)
    weights, weights_key = extract_state_dict(container, ema=ema)
    result = convert_state_dict(weights, source, container=container)
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
