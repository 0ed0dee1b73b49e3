"""Export SE detectors and backbones to TorchScript and ONNX, and verify the exported files.

The routes are Detectron2's (``tools/deploy/export_model.py``): tracing through
:class:`detectron2.export.TracingAdapter` (TorchScript or ONNX) and scripting through
:func:`detectron2.export.scripting_with_instances` (TorchScript only).
See ``docs/tutorials/export.md``.
"""

from .core import (
    EXPORT_FORMATS,
    EXPORT_METHODS,
    ONNX_OPSET_VERSION,
    ExportResult,
    export_backbone,
    export_detector,
    load_sample_image,
    reference_outputs,
)
from .verify import ExportVerificationError, compare_detections, compare_outputs

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "ONNX_OPSET_VERSION",
    "ExportResult",
    "ExportVerificationError",
    "compare_detections",
    "compare_outputs",
    "export_backbone",
    "export_detector",
    "load_sample_image",
    "reference_outputs",
]
