"""Exported detectors for any image size, run by ONNX Runtime, OpenVINO and PyTorch.

A narrow SE-R50-FPN Mask R-CNN (random weights) is exported once; the tests run the file at
several sizes and on every backend against PyTorch, evaluate it through Detectron2's
``inference_on_dataset``, quantize it to int8, predict on images and a video, and check the
user errors (one ``error:`` line, exit 2, nothing written).
"""

import json
import os
import sys

import numpy as np
import pytest
import torch

from se_detectron import get_se_cfg
from se_detectron.export import ExportVerificationError, reference_outputs
from se_detectron.export.core import build_eval_model, onnx_file_runner
from se_detectron.export.graph import export_dynamic_onnx
from se_detectron.export.verify import verify_on_images

pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")

pytestmark = pytest.mark.slow

NARROW = [
    "MODEL.DEVICE", "cpu", "MODEL.RESNETS.STEM_OUT_CHANNELS", "16",
    "MODEL.RESNETS.RES2_OUT_CHANNELS", "64", "MODEL.RESNETS.WIDTH_PER_GROUP", "16",
    "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "32", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
    "TEST.DETECTIONS_PER_IMAGE", "10", "MODEL.ROI_HEADS.NUM_CLASSES", "5",
    "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "112",
    "DATASETS.TRAIN", "('se_synthetic_train',)", "DATASETS.TEST", "('se_synthetic_val',)",
]  # fmt: skip
MASK_RCNN = "quick_schedules/mask_rcnn_SE_R_50_FPN_instant_test.yaml"
# Sizes below POST_NMS_TOPK_TEST's worth of anchors, so the number of proposals (and of
# detections) differs between them: a file that froze the sample's counts fails here.
SIZES = [(64, 96), (112, 64), (40, 56)]


def _cfg(config=MASK_RCNN, extra=()):
    return get_se_cfg(config, NARROW + list(extra))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``(cfg, model, path)``: the narrow Mask R-CNN, its weights file and its ONNX file."""
    folder = tmp_path_factory.mktemp("export")
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_eval_model(cfg)
    weights = str(folder / "model.pth")
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = weights
    path = str(folder / "model.onnx")
    export_dynamic_onnx(model, torch.rand(3, 64, 96) * 255, path, 16, cfg=cfg)
    return cfg, model, path


def _images():
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(3, h, w, generator=gen) * 255 for h, w in SIZES]


def test_one_file_serves_every_size(exported):
    _, model, path = exported
    reports = verify_on_images(
        lambda img: reference_outputs(model, img), onnx_file_runner(path), _images()
    )
    assert [r["input_shape"][1:] for r in reports] == [list(s) for s in SIZES]
    assert all(r["num_detections"] > 0 for r in reports)
    assert all(r["max_abs_diff"]["pred_masks"] < 1e-3 for r in reports)


def test_verification_fails_on_a_wrong_export(exported, tmp_path):
    import onnx
    from onnx import numpy_helper

    _, model, path = exported
    proto = onnx.load(path)
    for init in proto.graph.initializer:  # perturb the box predictor: wrong boxes/scores
        if "bbox_pred.weight" in init.name:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    wrong = str(tmp_path / "wrong.onnx")
    onnx.save(proto, wrong)
    with pytest.raises(ExportVerificationError, match=r"input \(3, 64, 96\)"):
        verify_on_images(
            lambda img: reference_outputs(model, img), onnx_file_runner(wrong), _images()
        )


def test_c4_head_exports_for_any_size(tmp_path):
    # 200 proposals keep the res5 box head cheap; 40x56 has fewer anchors (3x4x15 = 180)
    extra = ["MODEL.WEIGHTS", "", "MODEL.RPN.POST_NMS_TOPK_TEST", "200"]
    cfg = _cfg("COCO-Detection/faster_rcnn_SE_R_50_C4_1x.yaml", extra)
    torch.manual_seed(0)
    model = build_eval_model(cfg)
    path = str(tmp_path / "c4.onnx")
    export_dynamic_onnx(model, torch.rand(3, 64, 96) * 255, path, 16, cfg=cfg)
    images = [_images()[0], _images()[2]]  # 64x96 (200 proposals) and 40x56 (fewer)
    reports = verify_on_images(
        lambda img: reference_outputs(model, img), onnx_file_runner(path), images
    )
    assert all(r["num_detections"] > 0 for r in reports)


@pytest.fixture(scope="module")
def torch_outputs(exported):
    """DefaultPredictor-equivalent outputs (the torch backend) on two images of other sizes."""
    from se_detectron.deploy import load

    reference = load(exported[2], backend="torch")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(150, 100), (90, 200)]]
    return [(image, reference(image)) for image in images]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])  # vs the torch backend
def test_every_backend_returns_instances_in_original_pixels(exported, torch_outputs, backend):
    from se_detectron.deploy import load

    cfg, _, path = exported
    predictor = load(path, backend=backend, cfg=cfg)
    assert predictor.precision == "fp32"
    for image, want in torch_outputs:
        h, w = image.shape[:2]
        got = predictor(image)
        assert got.image_size == (h, w)
        assert len(got) == len(want) > 0
        assert float((got.pred_boxes.tensor - want.pred_boxes.tensor).abs().max()) < 1e-2
        assert got.pred_masks.shape == (len(want), h, w)  # pasted into the image
        assert float((got.pred_masks != want.pred_masks).float().mean()) < 1e-3
        assert torch.equal(got.pred_classes, want.pred_classes)


def test_evaluation_through_inference_on_dataset(exported, tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from se_detectron.data import register_synthetic_datasets
    from se_detectron.deploy import load
    from se_detectron.deploy.evaluate import evaluate_predictor

    cfg, _, path = exported
    register_synthetic_datasets()
    name = "se_synthetic_val_first3"
    if name not in DatasetCatalog.list():
        DatasetCatalog.register(name, lambda: DatasetCatalog.get("se_synthetic_val")[:3])
        meta = MetadataCatalog.get("se_synthetic_val")
        MetadataCatalog.get(name).set(thing_classes=meta.thing_classes, evaluator_type="coco")
    aps = {}
    for backend in ("onnxruntime", "torch"):
        results = evaluate_predictor(load(path, backend), name, str(tmp_path / backend), cfg=cfg)
        assert set(results) == {"bbox", "segm"}
        aps[backend] = results["bbox"]["AP"]
        assert (tmp_path / backend / "coco_instances_results.json").is_file()
    assert abs(aps["onnxruntime"] - aps["torch"]) <= 0.1


def test_int8_file_runs_on_both_runtimes(exported, tmp_path):
    import onnx

    from se_detectron.deploy import load
    from se_detectron.deploy.quantize import quantize_int8

    _, _, path = exported
    int8 = quantize_int8(path, str(tmp_path / "int8.onnx"), "se_synthetic_train", count=2)
    ops = {n.op_type for n in onnx.load(int8).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    image = np.random.default_rng(1).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    fp32 = load(path, "onnxruntime")(image)
    for backend in ("onnxruntime", "openvino"):
        predictor = load(int8, backend)
        assert predictor.precision == "int8+fp32"
        out = predictor(image)
        assert out.image_size == (100, 140) and len(out) == len(fp32)
        # random weights: scores all near 1/6; int8 stays close to fp32
        assert float((out.scores - fp32.scores).abs().max()) < 0.05


def test_predict_with_exported_model_on_glob_and_video(exported, tmp_path):
    import cv2

    from se_detectron.engine.predict import cli

    _, _, path = exported
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i, (h, w) in enumerate([(80, 120), (120, 70)]):
        cv2.imwrite(str(folder / f"im{i}.png"), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    video = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 64))
    for _ in range(2):
        writer.write(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    argv = ["--model", path, "--backend", "onnxruntime", "--input", str(folder / "*.png"), video]
    assert cli(argv + ["--output", str(out), "--confidence-threshold", "0.0"]) == 0
    assert (out / "im0.png.png").is_file() and (out / "im1.png.png").is_file()
    assert (out / "clip.mp4.mp4").is_file()
    coco = json.loads((out / "coco_results.json").read_text())
    assert {r["image_id"] for r in coco} == {0, 1, 2, 3}  # 2 images, then 2 frames
    assert all(len(r["bbox"]) == 4 and "segmentation" in r for r in coco)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp") or p.startswith("tmp")]


# ---- user errors: one `error:` line, exit 2, nothing written ----


def _error_line(capsys):
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1, err
    return err[0]


def test_missing_runtime_is_one_error_line(exported, tmp_path, capsys, monkeypatch):
    from se_detectron.deploy.cli import cli

    _, _, path = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    argv = ["evaluate", "--model", path, "--backend", "openvino", "--output", str(tmp_path / "e")]
    assert cli(argv) == 2
    assert "needs the 'openvino' package" in _error_line(capsys)
    assert not (tmp_path / "e").exists()


def test_file_for_another_config_is_refused(exported, tmp_path, capsys):
    from se_detectron.engine.predict import cli

    cfg, _, path = exported
    other = tmp_path / "other.yaml"
    changed = cfg.clone()
    changed.MODEL.ROI_HEADS.NUM_CLASSES = 7
    other.write_text(changed.dump())
    image = tmp_path / "a.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out"
    argv = ["--model", path, "--config-file", str(other), "--input", str(image)]
    assert cli(argv + ["--output", str(out)]) == 2
    line = _error_line(capsys)
    assert "exported for another config" in line and "MODEL.ROI_HEADS.NUM_CLASSES" in line
    assert not out.exists()


def test_unsupported_models_and_opsets_are_refused_before_writing(tmp_path, capsys):
    from se_detectron.export.cli import cli

    cascade = "Misc/cascade_mask_rcnn_SE_R_50_FPN_1x.yaml"
    for config, extra, expected in [
        (cascade, [], "Cascade R-CNN cannot be exported for any image size"),
        (MASK_RCNN, ["--opset", "11"], "--opset 11"),
    ]:
        out = tmp_path / "out"
        argv = ["--config-file", config, "--format", "onnx", "--output", str(out), *extra]
        assert cli(argv + NARROW + ["MODEL.WEIGHTS", ""]) == 2
        assert expected in _error_line(capsys)
        assert not out.exists() or not os.listdir(out)


def test_images_and_files_the_runtime_cannot_take(exported, tmp_path):
    import onnx

    from se_detectron.deploy import DeployError, load

    _, _, path = exported
    predictor = load(path, "onnxruntime")
    for bad in (np.zeros((20, 20), np.uint8), np.zeros((20, 20, 4), np.uint8),
                np.zeros((20, 20, 3), np.float32), np.zeros((0, 20, 3), np.uint8)):  # fmt: skip
        with pytest.raises(DeployError, match=r"\(H, W, 3\) uint8"):
            predictor(bad)
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(path)
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    with pytest.raises(DeployError, match="carries no se_detectron config"):
        load(str(bare), "onnxruntime")
    with pytest.raises(DeployError, match="no such file"):
        load(str(tmp_path / "missing.onnx"), "openvino")
    with pytest.raises(DeployError, match="choose one of"):
        load(path, "tensorrt")


@pytest.mark.slow
def test_speed_benchmark_table_and_profiles(tmp_path):
    """tools/benchmark_deploy.py at a tiny size: every fp32 route timed against eager, with its
    boxes compared, its share of the fp32 peak, and each route's profile by operator type."""
    from benchmarks.deploy import cli, format_table

    out = tmp_path / "deploy.json"
    argv = ["--size", "96", "--rounds", "1", "--warmup", "0", "--no-compile", "--no-int8"]
    assert cli([*argv, "--profile", "--top", "100", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    routes = {r["route"]: r for r in report["routes"]}
    assert {"eager", "onnxruntime", "openvino"} <= set(routes)
    assert routes["eager"]["speedup_vs_eager"] == 1.0 and report["model_gflops"] > 0
    for row in routes.values():
        assert row["median_s"] > 0 and row["same_detection_count"], row
    assert set(report["profiles"]) == {"eager", "onnxruntime", "openvino"}
    for name, prof in report["profiles"].items():
        ops = [op for op, _ in prof["top"]]
        assert prof["seconds"] > 0 and ops[-1] == "(rest)", name
        assert sum(share for _, share in prof["top"]) == pytest.approx(100.0)
        assert any("conv" in op.lower() for op in ops), (name, ops)
    assert {"Conv", "RoiAlign"} <= {op for op, _ in report["profiles"]["onnxruntime"]["top"]}
    assert "where openvino's network time goes" in format_table(report)
