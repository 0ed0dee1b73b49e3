"""The strict checkpointer for SE detectors and the checks on weights files.

* :class:`SEDetectionCheckpointer`: atomic saves, FileNotFoundError for missing weights, errors
  for backbone shape mismatches and for frozen layers left random;
  :func:`check_no_frozen_random_init` for runs without weights.
* :func:`load_weights_file`: a damaged weights file is one error naming it.

Weight conversion (timm / Cadene / our pretraining checkpoints to a Detectron2 ``.pkl``) is
:mod:`se_detectron.convert`; the run-folder policy is :mod:`se_detectron.utils.run_dir`. Their
names are still found here for existing code, with a ``DeprecationWarning`` naming the new place.
"""

import importlib
import warnings

from .checkpointer import (
    BackboneShapeMismatchError,
    ConvertedConfigMismatchError,
    FrozenRandomInitError,
    SEDetectionCheckpointer,
    check_no_frozen_random_init,
    frozen_state_keys,
)
from .weights_file import WeightsFileError, load_weights_file

__all__ = [
    "BackboneShapeMismatchError",
    "ConvertedConfigMismatchError",
    "FrozenRandomInitError",
    "SEDetectionCheckpointer",
    "WeightsFileError",
    "check_no_frozen_random_init",
    "frozen_state_keys",
    "load_weights_file",
]

# Names this package exported before conversion and the run-folder policy had packages of their
# own: name -> the module that has it now. Resolved on first access (``convert`` imports this
# package's weights-file checks, so it cannot be imported here).
_MOVED = {
    **dict.fromkeys(
        (
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
        ),
        "se_detectron.convert",
    ),
    **dict.fromkeys(
        ("RunDirError", "prepare_run_dir", "remove_stale_temp_files"), "se_detectron.utils.run_dir"
    ),
}
_warned = set()


def __getattr__(name):
    """``se_detectron.checkpoint.NAME`` for a name that moved: the new object, warning once."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MOVED[name]
    if name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"se_detectron.checkpoint.{name} is now {module}.{name}; import it from {module}",
            DeprecationWarning,
            stacklevel=2,
        )
    return getattr(importlib.import_module(module), name)
