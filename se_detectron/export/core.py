"""Export routes for SE detectors (Faster / Mask R-CNN, RetinaNet) and their backbones.

This follows Detectron2's ``tools/deploy/export_model.py`` and reuses its public pieces:

* **tracing** (``torchscript`` or ``onnx``): :class:`detectron2.export.TracingAdapter` flattens
  the model's inputs/outputs (``Instances`` become tuples of tensors) so that
  :func:`torch.jit.trace` / :func:`torch.onnx.export` can run on it; its ``outputs_schema``
  rebuilds ``Instances`` from the flat outputs of the exported file. ONNX uses Detectron2's
  opset :data:`ONNX_OPSET_VERSION` (16: Detectron2's ``STABLE_ONNX_OPSET_VERSION`` 11 cannot
  express the aligned ROIAlign) and the TorchScript-based exporter (``dynamo=False``).
* **scripting** (``torchscript`` only): :func:`detectron2.export.scripting_with_instances`
  with the ``Instances`` fields of the detectors.

Every exported file is reloaded from disk (``torch.jit.load`` or an onnxruntime session) and
wrapped as a function ``image -> {output name: tensor}`` so that it can be compared with the
PyTorch model (:func:`se_detectron.export.compare_outputs`). As in Detectron2, Faster R-CNN is
exported with ``do_postprocess=False`` (boxes in the coordinates of the network input; Mask
R-CNN's ``pred_masks`` are the per-box 28x28 mask probabilities, not pasted into the image),
RetinaNet through its ``forward`` (boxes rescaled to the input's own size, i.e. unchanged).
"""

import io
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from detectron2.export import (
    STABLE_ONNX_OPSET_VERSION,
    TracingAdapter,
    scripting_with_instances,
)
from detectron2.modeling import GeneralizedRCNN
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from se_detectron.utils import atomic_write

from ..checkpoint.checkpointer import SEDetectionCheckpointer
from ..data.synthetic import register_synthetic_datasets

__all__ = [
    "DETECTION_OUTPUTS",
    "EXPORT_FORMATS",
    "EXPORT_METHODS",
    "ONNX_OPSET_VERSION",
    "OPTIONAL_OUTPUTS",
    "ExportResult",
    "build_eval_model",
    "export_backbone",
    "export_detector",
    "load_sample_image",
    "reference_outputs",
]

EXPORT_FORMATS = ("torchscript", "onnx")
EXPORT_METHODS = ("tracing", "scripting")
#: The default ONNX opset. Detectron2's ``STABLE_ONNX_OPSET_VERSION`` (11) has no aligned
#: ROIAlign, so torchvision exports ``ROIAlign(aligned=False)`` and Faster R-CNN boxes differ by up
#: to ~100 px; opset 16 adds RoiAlign's ``coordinate_transformation_mode="half_pixel"``, which is
#: exact.
ONNX_OPSET_VERSION = max(STABLE_ONNX_OPSET_VERSION, 16)
#: The ``Instances`` fields an exported detector's outputs are compared on.
DETECTION_OUTPUTS = ("pred_boxes", "scores", "pred_classes")
# Outputs that only some detectors have (Mask R-CNN), compared when the model produces them.
OPTIONAL_OUTPUTS = ("pred_masks",)

# The Instances fields of Faster R-CNN / RetinaNet outputs, for scripting (as Detectron2's tool).
_SCRIPTING_FIELDS = {
    "proposal_boxes": Boxes,
    "objectness_logits": Tensor,
    "pred_boxes": Boxes,
    "scores": Tensor,
    "pred_classes": Tensor,
    "pred_masks": Tensor,
}


@dataclass
class ExportResult:
    """An exported file and a function running it.

    Attributes:
        path: the written file (``model.ts`` or ``model.onnx``).
        format: ``"torchscript"`` or ``"onnx"``.
        method: ``"tracing"`` or ``"scripting"``.
        run: ``run(image) -> {output name: tensor}`` on the file reloaded from disk.
        notes: remarks on the route (e.g. fixed input size).
    """

    path: str
    format: str
    method: str
    run: Callable[[Tensor], Dict[str, Tensor]]
    notes: List[str] = field(default_factory=list)


def _check_route(fmt: str, method: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if method not in EXPORT_METHODS:
        raise ValueError(f"export method must be one of {EXPORT_METHODS}, got {method!r}")
    if method == "scripting" and fmt != "torchscript":
        raise ValueError(
            "scripting only produces TorchScript (as in Detectron2); use --export-method "
            "tracing for ONNX"
        )


def build_eval_model(cfg) -> nn.Module:
    """Build ``cfg``'s model in eval mode and load ``cfg.MODEL.WEIGHTS`` (if set)."""
    from detectron2.modeling import build_model

    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        SEDetectionCheckpointer(model, cfg=cfg).load(cfg.MODEL.WEIGHTS)
    return model.eval()


def load_sample_image(cfg, path: Optional[str] = None) -> Tensor:
    """Read an image and preprocess it as Detectron2's ``DefaultPredictor`` does.

    Args:
        cfg: the model's config (``INPUT.FORMAT``, ``INPUT.MIN_SIZE_TEST``/``MAX_SIZE_TEST``).
        path: the image; default: the first image of the bundled ``se_synthetic_val`` set
            (generated on first use).

    Returns:
        A float32 (C, H, W) tensor, resized to the test size, in ``INPUT.FORMAT`` channel order.
    """
    from detectron2.data import DatasetCatalog
    from detectron2.data import detection_utils as utils
    from detectron2.data import transforms as T

    if path is None:
        register_synthetic_datasets()
        path = DatasetCatalog.get("se_synthetic_val")[0]["file_name"]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--sample-image {path!r} does not exist")
    image = utils.read_image(path, format=cfg.INPUT.FORMAT)
    resize = T.ResizeShortestEdge(
        [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
    )
    image = resize.get_transform(image).apply_image(image)
    return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def _rcnn_inference(model, inputs):
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def _output_names(fields) -> Tuple[str, ...]:
    """:data:`DETECTION_OUTPUTS` plus the :data:`OPTIONAL_OUTPUTS` present in ``fields``."""
    return DETECTION_OUTPUTS + tuple(name for name in OPTIONAL_OUTPUTS if name in fields)


def _instances_outputs(instances: Instances) -> Dict[str, Tensor]:
    fields = instances.get_fields()
    return {name: fields[name] for name in _output_names(fields)}


def reference_outputs(model: nn.Module, image: Tensor) -> Dict[str, Tensor]:
    """The PyTorch detector's outputs on ``image``, computed as the exported model computes them.

    Args:
        model: a ``GeneralizedRCNN`` or ``RetinaNet`` in eval mode.
        image: a (C, H, W) float tensor.

    Returns:
        ``{"pred_boxes": Boxes, "scores": Tensor, "pred_classes": Tensor}``, plus
        ``"pred_masks"`` (N, 1, 28, 28 mask probabilities) for Mask R-CNN.
    """
    inputs = [{"image": image}]
    with torch.no_grad():
        if isinstance(model, GeneralizedRCNN):
            instances = _rcnn_inference(model, inputs)[0]["instances"]
        else:
            instances = model(inputs)[0]["instances"]
    return _instances_outputs(instances)


def _save_torchscript(module, path: str):
    atomic_write(path, lambda f: torch.jit.save(module, f))
    return torch.jit.load(path)


def _export_onnx(adapter: nn.Module, inputs: Tuple[Tensor, ...], path: str, opset: int):
    import onnxruntime

    def write(f):
        buffer = io.BytesIO()
        torch.onnx.export(adapter, inputs, buffer, opset_version=opset, dynamo=False)
        f.write(buffer.getvalue())

    atomic_write(path, write)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run_flat(*args: Tensor) -> List[Tensor]:
        feeds = {n: a.detach().cpu().numpy() for n, a in zip(names, args)}
        return [torch.from_numpy(o) for o in session.run(None, feeds)]

    return run_flat


def _trace(adapter: TracingAdapter, inputs, fmt: str, output_dir: str, opset: int):
    """Export a ``TracingAdapter``; returns (path, function running the flat exported model)."""
    if fmt == "torchscript":
        path = os.path.join(output_dir, "model.ts")
        with torch.no_grad():
            traced = torch.jit.trace(adapter, inputs)
        return path, _save_torchscript(traced, path)
    path = os.path.join(output_dir, "model.onnx")
    with torch.no_grad():
        return path, _export_onnx(adapter, inputs, path, opset)


class _ScriptableRCNN(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        instances = self.model.inference(inputs, do_postprocess=False)
        return [i.get_fields() for i in instances]


class _ScriptableOneStage(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: Tuple[Dict[str, Tensor]]) -> List[Dict[str, Tensor]]:
        instances = self.model(inputs)
        return [i.get_fields() for i in instances]


def export_detector(
    model: nn.Module,
    image: Tensor,
    fmt: str,
    method: str,
    output_dir: str,
    opset: int = ONNX_OPSET_VERSION,
) -> ExportResult:
    """Export a Faster R-CNN or RetinaNet detector.

    Args:
        model: the detector, in eval mode.
        image: a sample (C, H, W) input used for tracing.
        fmt: ``"torchscript"`` or ``"onnx"``.
        method: ``"tracing"`` or ``"scripting"`` (TorchScript only).
        output_dir: folder of the written ``model.ts`` / ``model.onnx``.
        opset: ONNX opset version (:data:`ONNX_OPSET_VERSION`).

    Returns:
        The :class:`ExportResult`; its ``run`` returns the :data:`DETECTION_OUTPUTS` (and
        ``pred_masks`` for Mask R-CNN).
    """
    _check_route(fmt, method)
    model.eval()
    is_rcnn = isinstance(model, GeneralizedRCNN)
    if method == "scripting":
        adapter = (_ScriptableRCNN if is_rcnn else _ScriptableOneStage)(model).eval()
        path = os.path.join(output_dir, "model.ts")
        loaded = _save_torchscript(scripting_with_instances(adapter, _SCRIPTING_FIELDS), path)

        def run(img: Tensor) -> Dict[str, Tensor]:
            with torch.no_grad():
                fields = loaded(({"image": img},))[0]
            outputs = {name: fields[name] for name in _output_names(fields)}
            if not is_rcnn:
                # A scripted RetinaNet returns its raw detections: clip the boxes to the image
                # as the eager forward's detector_postprocess does (the size is unchanged).
                boxes = Boxes(outputs["pred_boxes"].clone())
                boxes.clip(tuple(img.shape[-2:]))
                outputs["pred_boxes"] = boxes.tensor
            return outputs

        return ExportResult(path, fmt, method, run, ["input size is dynamic"])

    # A new module is in training mode, and torch.onnx.export restores the mode it found
    # recursively: without .eval() the wrapped model would be left in training mode.
    adapter = TracingAdapter(model, [{"image": image}], _rcnn_inference if is_rcnn else None)
    adapter.eval()
    path, flat = _trace(adapter, (image,), fmt, output_dir, opset)

    def run(img: Tensor) -> Dict[str, Tensor]:
        with torch.no_grad():
            outputs = flat(img)
        return _instances_outputs(adapter.outputs_schema(outputs)[0]["instances"])

    notes = ["traced on a fixed input size: other sizes are not guaranteed to work"]
    return ExportResult(path, fmt, method, run, notes)


def export_backbone(
    backbone: nn.Module,
    images: Tensor,
    fmt: str,
    method: str,
    output_dir: str,
    opset: int = ONNX_OPSET_VERSION,
) -> ExportResult:
    """Export a backbone (SE trunk or SE-FPN) alone.

    Args:
        backbone: the backbone, in eval mode; ``backbone(x)`` returns a dict of feature maps.
        images: a normalized (N, C, H, W) input batch.
        fmt: ``"torchscript"`` or ``"onnx"``.
        method: ``"tracing"`` or ``"scripting"`` (TorchScript only).
        output_dir: folder of the written ``model.ts`` / ``model.onnx``.
        opset: ONNX opset version (:data:`ONNX_OPSET_VERSION`).

    Returns:
        The :class:`ExportResult`; its ``run`` returns the backbone's feature dict.
    """
    _check_route(fmt, method)
    backbone.eval()
    if method == "scripting":
        # detectron2.export (imported above) gives ResNet/FPN their __prepare_scriptable__
        path = os.path.join(output_dir, "model.ts")
        scripted = _save_torchscript(torch.jit.script(backbone), path)

        def run_scripted(x: Tensor) -> Dict[str, Tensor]:
            with torch.no_grad():
                return dict(scripted(x))

        return ExportResult(path, fmt, method, run_scripted, ["input size is dynamic"])

    adapter = TracingAdapter(backbone, images)
    adapter.eval()  # see export_detector
    path, flat = _trace(adapter, (images,), fmt, output_dir, opset)

    def run(x: Tensor) -> Dict[str, Tensor]:
        with torch.no_grad():
            return dict(adapter.outputs_schema(flat(x)))

    return ExportResult(path, fmt, method, run)
