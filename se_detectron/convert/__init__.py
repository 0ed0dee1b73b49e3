"""Conversion of pretrained SE weights into Detectron2 checkpoints, and the config they need.

* :func:`convert_checkpoint` / :func:`convert_state_dict`: our pretraining checkpoints, timm
  (``seresnet*``, ``seresnext*``, ``senet154``) and Cadene / timm ``legacy_*`` SENets to a
  Detectron2-loadable ``.pkl`` with the trunk's names, plus the config the weights require
  (:mod:`.cli` is ``se-convert-pretrained`` / ``tools/convert_pretrained.py``).
* :func:`infer_architecture`: depth, groups, widths, stem, SE reduction ... from the weights.
* :func:`required_config` / :func:`source_settings`: what the weights cannot tell (stride
  placement, stem pooling, input normalization), from the source format.

Modules: :mod:`.formats` (name rules per source), :mod:`.infer` (architecture from shapes),
:mod:`.settings` (required config), :mod:`.files` (reading and writing), :mod:`.convert` (the
pipeline), :mod:`.cli` (the command line).
"""

from ..config import config_mismatches
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
from .settings import (
    IMAGENET_RGB_PIXEL_MEAN,
    IMAGENET_RGB_PIXEL_STD,
    required_config,
    source_settings,
)

__all__ = [
    "IMAGENET_RGB_PIXEL_MEAN",
    "IMAGENET_RGB_PIXEL_STD",
    "SOURCE_FORMATS",
    "ConversionError",
    "ConversionResult",
    "SEArchitecture",
    "config_mismatches",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_source_format",
    "extract_state_dict",
    "format_summary",
    "infer_architecture",
    "load_checkpoint_file",
    "match_arch",
    "read_converted",
    "rename_state_dict",
    "required_config",
    "save_converted",
    "source_settings",
    "strip_common_prefix",
    "validate_trunk_state_dict",
    "write_config_yaml",
]
