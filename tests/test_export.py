"""Export of SE backbones and detectors (TorchScript tracing/scripting, ONNX via onnxruntime)."""

import numpy as np
import pytest
import torch

from se_detectron import get_se_cfg
from se_detectron.export import (
    ExportVerificationError,
    compare_detections,
    compare_outputs,
    export_backbone,
    export_detector,
    reference_outputs,
)
from se_detectron.export.core import build_eval_model

pytest.importorskip("onnxruntime")

ROUTES = [("torchscript", "tracing"), ("onnx", "tracing"), ("torchscript", "scripting")]
CONFIGS = {
    "faster_rcnn": "quick_schedules/faster_rcnn_SE_R_50_FPN_instant_test.yaml",
    "retinanet": "quick_schedules/retinanet_SE_R_50_FPN_instant_test.yaml",
    "mask_rcnn": "quick_schedules/mask_rcnn_SE_R_50_FPN_instant_test.yaml",
}


def _model(name):
    # a narrow SE-R50 (a quarter of the widths) keeps the exports fast
    opts = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16"]
    opts += ["MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.WIDTH_PER_GROUP", "16"]
    opts += ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64"]
    opts += ["MODEL.ROI_MASK_HEAD.CONV_DIM", "32"]
    opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.RETINANET.SCORE_THRESH_TEST", "0.0"]
    opts += ["TEST.DETECTIONS_PER_IMAGE", "20"]
    torch.manual_seed(0)
    model = build_eval_model(get_se_cfg(CONFIGS[name], opts))
    if name == "retinanet":
        # A fresh RetinaNet scores every anchor ~0.01 (prior): ties would make the top-k choice
        # backend-dependent. Spread the scores so the detections are well defined.
        torch.nn.init.normal_(model.head.cls_score.weight, std=0.3)
    return model


@pytest.fixture(scope="module")
def models():
    return {name: _model(name) for name in CONFIGS}


@pytest.fixture(scope="module")
def image():
    return torch.rand(3, 64, 96, generator=torch.Generator().manual_seed(1)) * 255


@pytest.mark.slow
@pytest.mark.parametrize("fmt,method", ROUTES)
def test_backbone_export_equals_pytorch(models, fmt, method, tmp_path):
    backbone = models["faster_rcnn"].backbone
    x = torch.randn(1, 3, 64, 96)
    result = export_backbone(backbone, x, fmt, method, str(tmp_path))
    with torch.no_grad():
        expected = backbone(x)
    diffs = compare_outputs(expected, result.run(x), atol=1e-4, rtol=1e-4)
    assert set(diffs) == {"p2", "p3", "p4", "p5", "p6"}
    assert not backbone.training  # the export leaves the model in eval mode


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("fmt,method", ROUTES)
def test_detector_export_equals_pytorch(models, image, name, fmt, method, tmp_path):
    model = models[name]
    expected = reference_outputs(model, image)
    assert len(expected["scores"]) > 0, "no detections to compare"
    result = export_detector(model, image, fmt, method, str(tmp_path))
    assert result.path.endswith(".onnx" if fmt == "onnx" else ".ts")
    diffs = compare_detections(expected, result.run(image))
    outputs = {"pred_boxes", "scores", "pred_classes"}
    if name == "mask_rcnn":
        outputs.add("pred_masks")
        assert expected["pred_masks"].shape == (len(expected["scores"]), 1, 28, 28)
    assert set(diffs) == outputs
    assert not model.training


def test_scripting_onnx_is_rejected(models, image, tmp_path):
    with pytest.raises(ValueError, match="scripting only produces TorchScript"):
        export_detector(models["faster_rcnn"], image, "onnx", "scripting", str(tmp_path))


def test_verification_error_names_output_and_difference():
    expected = {"scores": torch.tensor([0.5, 0.4]), "pred_classes": torch.tensor([1, 2])}
    with pytest.raises(ExportVerificationError, match=r"'scores'.*max difference 0\.1"):
        compare_outputs(expected, {**expected, "scores": torch.tensor([0.5, 0.5])})
    with pytest.raises(ExportVerificationError, match="'pred_classes'"):
        compare_outputs(expected, {**expected, "pred_classes": torch.tensor([1, 3])})
    with pytest.raises(ExportVerificationError, match="no output 'scores'"):
        compare_outputs(expected, {"pred_classes": expected["pred_classes"]})


def test_compare_detections_tolerates_reordering_only():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], dtype=np.float32)
    expected = {
        "pred_boxes": boxes,
        "scores": np.array([0.5, 0.5]),
        "pred_classes": np.array([0, 1]),
    }
    swapped = {k: v[::-1].copy() for k, v in expected.items()}
    assert compare_detections(expected, swapped)["pred_boxes"] == 0
    moved = {**swapped, "pred_boxes": swapped["pred_boxes"] + 1}
    with pytest.raises(ExportVerificationError, match="pred_boxes"):
        compare_detections(expected, moved)
    # masks travel with their detection through the reordering, and are compared
    masks = np.random.default_rng(0).random((2, 1, 28, 28))
    with_masks = {**expected, "pred_masks": masks}
    swapped = {k: v[::-1].copy() for k, v in with_masks.items()}
    assert compare_detections(with_masks, swapped)["pred_masks"] == 0
    swapped["pred_masks"][0, 0, 3, 4] += 0.01
    with pytest.raises(ExportVerificationError, match="'pred_masks': max difference 0.01"):
        compare_detections(with_masks, swapped)
