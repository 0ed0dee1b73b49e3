"""ONNX export for any image size: one file serves every image of a dataset.

The exported graph takes one preprocessed image, exactly what Detectron2's ``DefaultPredictor``
hands its model: a float32 ``(3, H, W)`` tensor in ``INPUT.FORMAT`` channel order, already resized
by ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, INPUT.MAX_SIZE_TEST)``; ``H`` and ``W`` are dynamic
axes. Normalisation, padding to ``SIZE_DIVISIBILITY``, anchors, NMS and the heads are inside the
graph (Detectron2 writes them trace-friendly: sizes stay tensors while tracing). The outputs are
named :data:`GRAPH_OUTPUTS`: boxes in the coordinates of the graph's input and, for Mask R-CNN,
the per-box ``28x28`` mask probabilities. Rescaling to the original image and pasting the masks
happens outside the graph with Detectron2's own ``detector_postprocess`` (see
:mod:`se_detectron.deploy`), as in Detectron2's ``GeneralizedRCNN.inference(do_postprocess=True)``.

The file carries its config (``cfg.dump()``) and the output names in the ONNX metadata
(``se_detectron.config``, ...), so a runtime needs nothing but the file.
"""

import io
from typing import Dict, Optional, Tuple

import torch
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.roi_heads import CascadeROIHeads, Res5ROIHeads, StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image
from detectron2.structures import Boxes
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import SEDetectronError
from ..utils import atomic_write
from ..version import __version__

__all__ = [
    "GRAPH_OUTPUTS",
    "METADATA_CONFIG",
    "METADATA_OUTPUTS",
    "METADATA_VERSION",
    "DetectorGraph",
    "UnsupportedExportError",
    "check_exportable",
    "export_dynamic_onnx",
    "model_config_keys",
]

#: output names of an exported detector, in order; ``masks`` only for Mask R-CNN
GRAPH_OUTPUTS = ("boxes", "scores", "classes", "masks")
METADATA_CONFIG = "se_detectron.config"
METADATA_OUTPUTS = "se_detectron.outputs"
METADATA_VERSION = "se_detectron.version"


class UnsupportedExportError(SEDetectronError, ValueError):
    """The model (or the requested opset) cannot be exported for any image size."""


def check_exportable(model: nn.Module, opset: int) -> None:
    """Refuse what the dynamic ONNX route cannot export faithfully.

    Args:
        model: the detector.
        opset: the requested ONNX opset.

    Raises:
        UnsupportedExportError: one line naming the model or opset and why.
    """
    if opset < 16:
        raise UnsupportedExportError(
            f"--opset {opset}: the aligned RoIAlign of the box/mask heads needs ONNX opset >= 16 "
            "(RoiAlign coordinate_transformation_mode='half_pixel'); older opsets shift boxes"
        )
    roi_heads = getattr(model, "roi_heads", None)
    if isinstance(roi_heads, CascadeROIHeads):
        raise UnsupportedExportError(
            "Cascade R-CNN cannot be exported for any image size: each of its stages splits "
            "the predictions per image by proposal counts that tracing freezes to the sample "
            "image (the file fails on other images); export Faster/Mask R-CNN or RetinaNet"
        )
    if roi_heads is not None and not isinstance(roi_heads, (StandardROIHeads, Res5ROIHeads)):
        raise UnsupportedExportError(
            f"ROI heads {type(roi_heads).__name__} are not supported by the ONNX export "
            "(supported: StandardROIHeads (FPN), Res5ROIHeads (C4), RetinaNet)"
        )
    if roi_heads is not None and getattr(roi_heads, "keypoint_on", False):
        raise UnsupportedExportError("keypoint heads are not supported by the ONNX export")


def model_config_keys(cfg) -> Dict[str, str]:
    """The config values an exported file depends on (``MODEL.*`` but the weights and device,
    and the test-time input settings), flattened to ``{key: repr(value)}``."""
    flat: Dict[str, str] = {}

    def plain(value):  # a YAML round trip turns tuples into lists
        return [plain(v) for v in value] if isinstance(value, (list, tuple)) else value

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if hasattr(value, "items"):
                walk(value, name + ".")
            else:
                flat[name] = repr(plain(value))

    walk(cfg.MODEL, "MODEL.")
    for key in ("MODEL.WEIGHTS", "MODEL.DEVICE"):
        flat.pop(key, None)
    for key in ("FORMAT", "MIN_SIZE_TEST", "MAX_SIZE_TEST"):
        flat[f"INPUT.{key}"] = repr(plain(cfg.INPUT[key]))
    flat["TEST.DETECTIONS_PER_IMAGE"] = repr(cfg.TEST.DETECTIONS_PER_IMAGE)
    return flat


class DetectorGraph(nn.Module):
    """The traced function: ``image (3, H, W) -> (boxes, scores, classes[, masks])``.

    R-CNN (FPN or C4 box head, with or without masks) is run for one image from Detectron2's
    public pieces: ``preprocess_image``, ``backbone``, ``proposal_generator``, the ROI heads'
    pooler/head/predictor modules, ``Box2BoxTransform.apply_deltas`` and
    ``fast_rcnn_inference_single_image``: the same arithmetic as
    ``GeneralizedRCNN.inference(do_postprocess=False)``, without its per-image
    ``Tensor.split(num_proposals_per_image)``, whose Python-int sizes a trace would freeze to the
    sample image's proposal/detection counts (the file would then fail on other images).
    RetinaNet runs its ``forward`` (no per-image split; its postprocessing to the input's own size
    leaves the boxes in the input's coordinates, clipped to it).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        roi_heads = getattr(model, "roi_heads", None)
        self.has_masks = bool(roi_heads is not None and roi_heads.mask_on)

    def _box_features(self, features: Dict[str, Tensor], boxes: Boxes) -> Tensor:
        heads = self.model.roi_heads
        if isinstance(heads, Res5ROIHeads):  # C4: pooled res4 features through res5
            x = heads.res5(heads.pooler([features[f] for f in heads.in_features], [boxes]))
            return x
        x = heads.box_pooler([features[f] for f in heads.box_in_features], [boxes])
        return heads.box_head(x)

    def _mask_logits(self, features: Dict[str, Tensor], boxes: Boxes) -> Tensor:
        heads = self.model.roi_heads
        if isinstance(heads, Res5ROIHeads):
            x = heads.res5(heads.pooler([features[f] for f in heads.in_features], [boxes]))
        else:
            x = heads.mask_pooler([features[f] for f in heads.mask_in_features], [boxes])
        return heads.mask_head.layers(x)

    def _rcnn(self, image: Tensor) -> Tuple[Tensor, ...]:
        model, heads = self.model, self.model.roi_heads
        images = model.preprocess_image([{"image": image}])
        features = model.backbone(images.tensor)
        proposals, _ = model.proposal_generator(images, features, None)
        proposal_boxes = proposals[0].proposal_boxes
        x = self._box_features(features, proposal_boxes)
        if isinstance(heads, Res5ROIHeads):
            x = x.mean(dim=[2, 3])
        predictor = heads.box_predictor
        logits, deltas = predictor(x)
        boxes = predictor.box2box_transform.apply_deltas(deltas, proposal_boxes.tensor)
        probs = logits.sigmoid() if predictor.use_sigmoid_ce else F.softmax(logits, dim=-1)
        instances, _ = fast_rcnn_inference_single_image(
            boxes,
            probs,
            images.image_sizes[0],
            predictor.test_score_thresh,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
        )
        outputs = (instances.pred_boxes.tensor, instances.scores, instances.pred_classes)
        if self.has_masks:
            mask_logits = self._mask_logits(features, instances.pred_boxes)
            if mask_logits.shape[1] > 1:  # class-specific masks: the predicted class's
                rows = torch.arange(mask_logits.shape[0])
                mask_logits = mask_logits[rows, instances.pred_classes][:, None]
            outputs += (mask_logits.sigmoid(),)
        return outputs

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        if isinstance(self.model, GeneralizedRCNN):
            return self._rcnn(image)
        instances = self.model([{"image": image}])[0]["instances"]
        return (instances.pred_boxes.tensor, instances.scores, instances.pred_classes)

    @property
    def output_names(self) -> Tuple[str, ...]:
        """:data:`GRAPH_OUTPUTS` of this detector."""
        return GRAPH_OUTPUTS if self.has_masks else GRAPH_OUTPUTS[:3]


def export_dynamic_onnx(
    model: nn.Module,
    image: Tensor,
    path: str,
    opset: int,
    cfg=None,
) -> Tuple[str, ...]:
    """Trace ``model`` on ``image`` and write an ONNX file whose input height/width are dynamic.

    Args:
        model: a Faster R-CNN, Mask R-CNN or RetinaNet in eval mode (C4 or FPN).
        image: a sample preprocessed ``(3, H, W)`` float image (only traces the graph).
        path: the ``.onnx`` file, written atomically (nothing is left on failure).
        opset: ONNX opset (>= 16).
        cfg: the model's config, stored in the file's metadata (recommended: the runtimes of
            :mod:`se_detectron.deploy` read the input format and test sizes from it).

    Returns:
        The names of the graph's outputs (:data:`GRAPH_OUTPUTS`).

    Raises:
        UnsupportedExportError: for Cascade R-CNN or an opset below 16.
    """
    import onnx

    check_exportable(model, opset)
    model.eval()
    graph = DetectorGraph(model).eval()
    names = graph.output_names
    buffer = io.BytesIO()
    dynamic = {"image": {1: "height", 2: "width"}}
    dynamic.update({name: {0: "detections"} for name in names})
    with torch.no_grad():
        torch.onnx.export(
            graph,
            (image,),
            buffer,
            opset_version=opset,
            input_names=["image"],
            output_names=list(names),
            dynamic_axes=dynamic,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = {METADATA_OUTPUTS: ",".join(names), METADATA_VERSION: __version__}
    if cfg is not None:
        metadata[METADATA_CONFIG] = cfg.dump()
    onnx.helper.set_model_props(proto, metadata)
    atomic_write(path, lambda f: f.write(proto.SerializeToString()))
    return names


def read_metadata(path: str) -> Dict[str, str]:
    """The ``se_detectron.*`` metadata of an exported ONNX file (empty if it has none)."""
    import onnx

    proto = onnx.load(path, load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


def optional_config(metadata: Dict[str, str]) -> Optional[str]:
    """The config YAML stored in ``metadata``, or None."""
    return metadata.get(METADATA_CONFIG)
