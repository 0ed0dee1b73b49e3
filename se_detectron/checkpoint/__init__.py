"""Pretrained weights for the SE trunks: conversion, config inference and a strict checkpointer.

* :func:`convert_checkpoint` / :func:`convert_state_dict`: our pretraining checkpoints, timm
  (``seresnet*``, ``seresnext*``, ``senet154``) and Cadene / timm ``legacy_*`` SENets to a
  Detectron2-loadable ``.pkl`` with the trunk's names, plus the config the weights require
  (``tools/convert_pretrained.py`` is the command line).
* :func:`infer_architecture`: depth, groups, widths, stem, SE reduction ... from the weights.
* :class:`SEDetectionCheckpointer`: atomic saves, FileNotFoundError for missing weights, errors
  for backbone shape mismatches and for frozen layers left random;
  :func:`check_no_frozen_random_init` for runs without weights.
* :func:`prepare_run_dir`: a training run's output folder is never overwritten by accident;
  :func:`load_weights_file`: a damaged weights file is one error naming it.
"""

from .checkpointer import (
    BackboneShapeMismatchError,
    ConvertedConfigMismatchError,
    FrozenRandomInitError,
    SEDetectionCheckpointer,
    check_no_frozen_random_init,
    frozen_state_keys,
)
from .convert import ConversionResult, convert_checkpoint, convert_state_dict, format_summary
from .files import (
    extract_state_dict,
    load_checkpoint_file,
    read_converted,
    save_converted,
    write_config_yaml,
)
from .formats import (
    SOURCE_FORMATS,
    ConversionError,
    detect_source_format,
    rename_state_dict,
    strip_common_prefix,
)
from .infer import SEArchitecture, infer_architecture, match_arch, validate_trunk_state_dict
from .run_dir import RunDirError, prepare_run_dir, remove_stale_temp_files
from .settings import (
    IMAGENET_RGB_PIXEL_MEAN,
    IMAGENET_RGB_PIXEL_STD,
    config_mismatches,
    required_config,
    source_settings,
)
from .weights_file import WeightsFileError, load_weights_file

__all__ = [
    "IMAGENET_RGB_PIXEL_MEAN",
    "IMAGENET_RGB_PIXEL_STD",
    "SOURCE_FORMATS",
    "BackboneShapeMismatchError",
    "ConvertedConfigMismatchError",
    "ConversionError",
    "ConversionResult",
    "FrozenRandomInitError",
    "SEArchitecture",
    "RunDirError",
    "SEDetectionCheckpointer",
    "WeightsFileError",
    "check_no_frozen_random_init",
    "config_mismatches",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_source_format",
    "extract_state_dict",
    "format_summary",
    "frozen_state_keys",
    "infer_architecture",
    "load_weights_file",
    "load_checkpoint_file",
    "match_arch",
    "prepare_run_dir",
    "read_converted",
    "remove_stale_temp_files",
    "rename_state_dict",
    "required_config",
    "save_converted",
    "source_settings",
    "strip_common_prefix",
    "validate_trunk_state_dict",
    "write_config_yaml",
]
