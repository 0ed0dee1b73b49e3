import contextlib
import copy
import io
import json
import math
import os
import uuid

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.evaluation import coco_evaluation
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from se_detectron import add_se_config
from se_detectron.evaluation import (
    BOX_METRICS,
    COCO_EVAL_BACKENDS,
    DEFAULT_COCO_EVAL_BACKEND,
    EvaluatorConfigError,
    SECOCOEvaluator,
    build_coco_evaluator,
    build_evaluator,
    evaluate_coco_json,
)

# faster-coco-eval computes precision as tp / (tp + fp), pycocotools as tp / (tp + fp + eps):
# results agree to ~1 ulp, not bit for bit. 1e-12 (on AP's 0-100 scale) still catches any real
# difference (a single changed match moves AP by far more).
BACKEND_ATOL = 1e-12


def random_coco_case(seed=0, num_images=80):
    """Random COCO gt + box detections exercising every COCOeval code path.

    Non-contiguous category and image ids, a category without gt (AP NaN), crowd gt, small /
    medium / large objects, images without gt, detections on them, score ties (2 decimals) and
    images with more than 100 detections (maxDets).
    """
    rng = np.random.default_rng(seed)
    cat_ids = [2, 5, 11, 40]  # 40 never has gt
    images, anns, dets = [], [], []
    for i in range(num_images):
        img_id = 100 + 7 * i
        w, h = int(rng.integers(150, 700)), int(rng.integers(150, 700))
        images.append({"id": img_id, "width": w, "height": h, "file_name": f"{img_id}.jpg"})
        gts = []
        for _ in range(0 if i % 6 == 0 else int(rng.integers(1, 12))):
            bw = float(np.exp(rng.uniform(np.log(4), np.log(0.9 * min(w, h)))))
            bh = float(np.clip(bw * np.exp(rng.normal(0, 0.3)), 3, h - 1))
            box = [float(rng.uniform(0, w - bw)), float(rng.uniform(0, h - bh)), bw, bh]
            ann = {
                "id": len(anns) + 1,
                "image_id": img_id,
                "category_id": int(rng.choice(cat_ids[:-1])),
                "bbox": box,
                "area": bw * bh * float(rng.uniform(0.5, 1.0)),
                "iscrowd": int(rng.random() < 0.08),
            }
            anns.append(ann)
            gts.append(ann)
        for _ in range(int(rng.integers(101, 140)) if i % 10 == 3 else int(rng.integers(0, 30))):
            if gts and rng.random() < 0.6:
                gt = gts[int(rng.integers(len(gts)))]
                x, y, bw, bh = gt["bbox"]
                s = rng.normal(0, 0.1, 4)
                box = [x + s[0] * bw, y + s[1] * bh, bw * np.exp(s[2]), bh * np.exp(s[3])]
                cat = gt["category_id"] if rng.random() < 0.9 else int(rng.choice(cat_ids))
            else:
                bw = float(np.exp(rng.uniform(np.log(4), np.log(0.9 * min(w, h)))))
                box = [rng.uniform(0, w), rng.uniform(0, h), bw, bw * np.exp(rng.normal(0, 0.3))]
                cat = int(rng.choice(cat_ids))
            dets.append(
                {
                    "image_id": img_id,
                    "category_id": cat,
                    "bbox": [round(float(v), 2) for v in box],
                    "score": round(float(rng.random()), 2),
                }
            )
    categories = [{"id": c, "name": f"class{c}"} for c in cat_ids]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def assert_metrics_close(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        if math.isnan(a[key]):
            assert math.isnan(b[key]), key
        else:
            assert abs(a[key] - b[key]) <= atol, (key, a[key], b[key])


def test_backends_agree_on_random_case():
    gt, dets = random_coco_case()
    per_image = np.bincount([d["image_id"] for d in dets])
    assert per_image.max() > 100 and any(a["iscrowd"] for a in gt["annotations"])

    results = {b: evaluate_coco_json(gt, dets, backend=b) for b in COCO_EVAL_BACKENDS}
    ref = results["pycocotools"]
    assert set(ref) == {*BOX_METRICS, "AP-class2", "AP-class5", "AP-class11", "AP-class40"}
    assert math.isnan(ref["AP-class40"])
    assert all(0 < ref[k] < 100 for k in BOX_METRICS)
    assert_metrics_close(results["faster_coco_eval"], ref, BACKEND_ATOL)

    # The 12 summary stats (AR@1/10/100 too) and the full precision arrays.
    from faster_coco_eval import COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    evals = []
    for cls in (COCOeval, COCOeval_faster):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            coco_eval = cls(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        evals.append(coco_eval)
    py, fast = evals
    assert len(py.stats) == len(fast.stats) == 12
    np.testing.assert_allclose(fast.stats, py.stats, rtol=0, atol=BACKEND_ATOL / 100)
    np.testing.assert_allclose(
        fast.eval["precision"], py.eval["precision"], rtol=0, atol=BACKEND_ATOL / 100
    )
    np.testing.assert_array_equal(fast.eval["recall"], py.eval["recall"])


def test_evaluate_coco_json_files_and_errors(tmp_path):
    gt, dets = random_coco_case(seed=1, num_images=10)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    from_files = evaluate_coco_json(tmp_path / "gt.json", str(tmp_path / "dets.json"))
    assert_metrics_close(from_files, evaluate_coco_json(gt, dets), atol=0)

    no_dets = evaluate_coco_json(gt, [], backend="faster_coco_eval")
    assert set(no_dets) == set(BOX_METRICS) and all(math.isnan(v) for v in no_dets.values())
    with pytest.raises(ValueError, match="'faster_coco_eval', 'pycocotools'"):
        evaluate_coco_json(gt, dets, backend="detectron2")


@pytest.fixture
def tiny_dataset(tmp_path):
    """A registered 4-image COCO json dataset; yields (name, json_path, dataset dicts)."""
    sizes = [(64, 48), (90, 70), (220, 180), (40, 40)]  # (width, height); the last has no gt
    images = []
    for i, (w, h) in enumerate(sizes):
        Image.new("RGB", (w, h), (i * 40, 80, 160)).save(tmp_path / f"img{i}.png")
        images.append({"id": 10 + i, "file_name": f"img{i}.png", "width": w, "height": h})
    boxes = [  # (image index, category id, xywh, iscrowd)
        (0, 3, [5, 5, 20, 16], 0),  # small
        (0, 7, [30, 10, 28, 30], 0),  # small
        (1, 3, [10, 10, 50, 40], 0),  # medium
        (1, 7, [55, 30, 30, 35], 1),  # crowd
        (2, 3, [20, 20, 120, 100], 0),  # large
        (2, 7, [150, 100, 45, 50], 0),  # medium
        (2, 7, [60, 130, 40, 35], 0),  # medium
    ]
    annotations = [
        {"id": k + 1, "image_id": 10 + i, "category_id": c, "bbox": b, "area": b[2] * b[3],
         "iscrowd": crowd}
        for k, (i, c, b, crowd) in enumerate(boxes)
    ]  # fmt: skip
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 12, "name": "bird"}]
    gt = {"images": images, "annotations": annotations, "categories": categories}
    with registered_coco_json(gt, tmp_path / "tiny_coco.json") as registered:
        yield registered


@contextlib.contextmanager
def registered_coco_json(gt, json_path):
    """Write gt to json_path and register it; yields (name, json_path, dataset dicts)."""
    json_path.write_text(json.dumps(gt))
    name = f"se_eval_test_{uuid.uuid4().hex[:8]}"
    register_coco_instances(name, {}, str(json_path), str(json_path.parent))
    try:
        # Loading the dicts also sets thing_classes / thing_dataset_id_to_contiguous_id.
        yield name, json_path, DatasetCatalog.get(name)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def run_evaluator(evaluator, dataset_dicts, shift=0.0, detections=None, name=None):
    """Run the evaluator on fake model outputs.

    The outputs are the non-crowd gt boxes shifted by shift * width, or, if given, the COCO
    results ``detections`` (dataset category ids) of the registered dataset ``name``.
    """
    evaluator.reset()
    for d in dataset_dicts:
        if detections is None:
            anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            xywh = [a["bbox"] for a in anns]  # load_coco_json keeps COCO's XYWH_ABS
            classes = [a["category_id"] for a in anns]
            scores = torch.linspace(0.9, 0.5, len(anns))
        else:
            id_map = MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id
            dets = [x for x in detections if x["image_id"] == d["image_id"]]
            xywh = [x["bbox"] for x in dets]
            classes = [id_map[x["category_id"]] for x in dets]
            scores = torch.tensor([x["score"] for x in dets])
        boxes = BoxMode.convert(
            torch.tensor(xywh, dtype=torch.float32).reshape(-1, 4),
            BoxMode.XYWH_ABS,
            BoxMode.XYXY_ABS,
        )
        boxes[:, 0::2] += shift * (boxes[:, 2:3] - boxes[:, 0:1])
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = scores
        instances.pred_classes = torch.tensor(classes, dtype=torch.int64)
        evaluator.process(
            [{"image_id": d["image_id"], "height": d["height"], "width": d["width"]}],
            [{"instances": instances}],
        )
    return evaluator.evaluate()


def read_strict_json(path):
    def reject(constant):
        raise AssertionError(f"non-standard JSON constant {constant} in {path}")

    with open(path) as f:
        return json.load(f, parse_constant=reject)


@pytest.mark.parametrize("backend", COCO_EVAL_BACKENDS)
def test_evaluator_end_to_end(tiny_dataset, tmp_path, backend):
    name, json_path, dataset_dicts = tiny_dataset
    out = tmp_path / f"out_{backend}"
    evaluator = SECOCOEvaluator(name, output_dir=str(out), backend=backend)
    assert evaluator.backend == backend

    box = run_evaluator(evaluator, dataset_dicts)["bbox"]
    assert set(box) == {*BOX_METRICS, "AP-cat", "AP-dog", "AP-bird"}
    for key in (*BOX_METRICS, "AP-cat", "AP-dog"):
        # pycocotools' eps makes a lone true positive's precision 1 - 2.2e-16, hence approx.
        assert box[key] == pytest.approx(100, abs=1e-9), key
    assert math.isnan(box["AP-bird"])  # no gt

    written = read_strict_json(out / f"box_ap_{name}.json")
    assert written == {
        "dataset": name,
        "backend": backend,
        "bbox": {k: None if math.isnan(v) else v for k, v in box.items()},
    }
    assert sorted(os.listdir(out)) == sorted(
        [f"box_ap_{name}.json", "coco_instances_results.json", "instances_predictions.pth"]
    )

    # The standalone function reproduces Detectron2's numbers from the dumped results file.
    dumped = out / "coco_instances_results.json"
    assert_metrics_close(evaluate_coco_json(json_path, dumped, backend=backend), box, atol=0)

    shifted = run_evaluator(evaluator, dataset_dicts, shift=0.3)["bbox"]
    # IoU with gt = 0.7 / 1.3 = 0.54: matched at IoU 0.5 only, i.e. 1 of COCO's 10 thresholds.
    assert shifted["AP50"] == pytest.approx(100, abs=1e-9) and shifted["AP75"] == 0
    assert shifted["AP"] == pytest.approx(10, abs=1e-9)
    assert read_strict_json(out / f"box_ap_{name}.json")["bbox"]["AP"] == shifted["AP"]
    assert_metrics_close(evaluate_coco_json(json_path, dumped, backend=backend), shifted, atol=0)


def test_evaluator_on_random_case(tmp_path):
    """Both engines through Detectron2's evaluator on the random case (>100 dets per image)."""
    gt, dets = random_coco_case(seed=2, num_images=40)
    results = {}
    with registered_coco_json(gt, tmp_path / "random.json") as (name, json_path, dicts):
        for backend in COCO_EVAL_BACKENDS:
            out = tmp_path / backend
            evaluator = SECOCOEvaluator(name, output_dir=str(out), backend=backend)
            results[backend] = run_evaluator(evaluator, dicts, detections=dets, name=name)["bbox"]
            dumped = out / "coco_instances_results.json"
            assert max(np.bincount([d["image_id"] for d in json.loads(dumped.read_text())])) > 100
            # Same engine, same dumped detections: evaluate_coco_json == Detectron2, exactly.
            standalone = evaluate_coco_json(json_path, dumped, backend=backend)
            assert_metrics_close(standalone, results[backend], atol=0)
    assert 0 < results["pycocotools"]["AP"] < 100
    assert_metrics_close(results["faster_coco_eval"], results["pycocotools"], BACKEND_ATOL)


@pytest.mark.parametrize("max_dets_per_image", [None, 50])
def test_engine_actually_used(tiny_dataset, monkeypatch, max_dets_per_image):
    import faster_coco_eval

    created = []

    class Recording(faster_coco_eval.COCOeval_faster):
        def __init__(self, *args, **kwargs):
            created.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(faster_coco_eval, "COCOeval_faster", Recording)
    saved = (coco_evaluation.COCOeval_opt, coco_evaluation.COCOevalMaxDets)
    name, json_path, dataset_dicts = tiny_dataset
    kwargs = {"max_dets_per_image": max_dets_per_image}
    results = {}
    for backend in COCO_EVAL_BACKENDS:
        before = len(created)
        evaluator = SECOCOEvaluator(name, backend=backend, **kwargs)
        results[backend] = run_evaluator(evaluator, dataset_dicts, shift=0.2)["bbox"]
        assert (len(created) > before) == (backend == "faster_coco_eval")
        assert (coco_evaluation.COCOeval_opt, coco_evaluation.COCOevalMaxDets) == saved
    assert_metrics_close(results["faster_coco_eval"], results["pycocotools"], BACKEND_ATOL)

    one_det = [{"image_id": 10, "category_id": 3, "bbox": [5, 5, 20, 16], "score": 0.9}]
    for backend in COCO_EVAL_BACKENDS:
        before = len(created)
        assert evaluate_coco_json(json_path, one_det, backend=backend)["AP-cat"] > 0
        assert (len(created) > before) == (backend == "faster_coco_eval")


def test_no_detections_writes_nulls(tiny_dataset, tmp_path):
    name, _, dataset_dicts = tiny_dataset
    evaluator = SECOCOEvaluator(name, output_dir=str(tmp_path / "out"), backend="pycocotools")
    evaluator.reset()
    d = dataset_dicts[0]
    empty = Instances((d["height"], d["width"]))
    empty.pred_boxes = Boxes(torch.zeros(0, 4))
    empty.scores = torch.zeros(0)
    empty.pred_classes = torch.zeros(0, dtype=torch.int64)
    evaluator.process([{"image_id": d["image_id"]}], [{"instances": empty}])
    assert all(math.isnan(v) for v in evaluator.evaluate()["bbox"].values())
    written = read_strict_json(tmp_path / "out" / f"box_ap_{name}.json")
    assert written["bbox"] == dict.fromkeys(BOX_METRICS)


def test_config_and_invalid_backends(tiny_dataset):
    name, _, _ = tiny_dataset
    with pytest.raises(ValueError, match="'faster_coco_eval', 'pycocotools'"):
        SECOCOEvaluator(name, backend="fast")
    with pytest.raises(TypeError, match="backend="):
        SECOCOEvaluator(name, use_fast_impl=True)

    cfg = get_cfg()
    with pytest.raises(KeyError, match="TEST.COCO_EVAL_BACKEND"):
        build_coco_evaluator(cfg, name)
    add_se_config(cfg)
    assert cfg.TEST.COCO_EVAL_BACKEND == DEFAULT_COCO_EVAL_BACKEND in COCO_EVAL_BACKENDS
    assert build_coco_evaluator(cfg, name).backend == DEFAULT_COCO_EVAL_BACKEND

    cfg.merge_from_list(["TEST.COCO_EVAL_BACKEND", "faster_coco_eval"])
    add_se_config(cfg)  # idempotent: keeps the merged value
    evaluator = build_coco_evaluator(cfg, name, output_dir=None)
    assert isinstance(evaluator, SECOCOEvaluator) and evaluator.backend == "faster_coco_eval"

    cfg.TEST.COCO_EVAL_BACKEND = "cocoapi"
    with pytest.raises(ValueError, match=r"TEST\.COCO_EVAL_BACKEND='cocoapi'.*pycocotools"):
        build_coco_evaluator(cfg, name)


# ----------------------------------------------------------------------------------------------
# Masks and the evaluator chosen by evaluator_type
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_gt(tmp_path_factory):
    """The val split of a small synthetic dataset (exact RLE masks), as a loaded COCO dict."""
    from se_detectron.data import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic_masks")
    info = generate_synthetic_dataset(root, num_train=1, num_val=6, image_size=96, seed=3)
    with open(info["val_json"]) as f:
        return json.load(f)


def run_mask_evaluator(evaluator, dataset_dicts, erode=0):
    """Feed the gt boxes and masks (optionally eroded by ``erode`` pixels) as predictions."""
    from pycocotools import mask as mask_util

    evaluator.reset()
    for d in dataset_dicts:
        anns = d["annotations"]
        masks = torch.stack(
            [torch.from_numpy(mask_util.decode(a["segmentation"]).astype(bool)) for a in anns]
        )
        if erode:
            kept = -torch.nn.functional.max_pool2d(
                -masks[:, None].float(), 2 * erode + 1, stride=1, padding=erode
            )
            masks = kept[:, 0] > 0.5
        boxes = BoxMode.convert(
            torch.tensor([a["bbox"] for a in anns], dtype=torch.float32),
            BoxMode.XYWH_ABS,
            BoxMode.XYXY_ABS,
        )
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = torch.linspace(0.9, 0.5, len(anns))
        instances.pred_classes = torch.tensor([a["category_id"] for a in anns])
        instances.pred_masks = masks
        evaluator.process(
            [{"image_id": d["image_id"], "height": d["height"], "width": d["width"]}],
            [{"instances": instances}],
        )
    return evaluator.evaluate()


@pytest.mark.parametrize("backend", COCO_EVAL_BACKENDS)
def test_mask_ap_end_to_end(synthetic_gt, tmp_path, backend):
    """Mask R-CNN evaluation: exact masks give mask AP 100, eroded ones less (boxes unchanged)."""
    cfg = get_cfg()
    add_se_config(cfg)
    cfg.MODEL.MASK_ON = True
    cfg.TEST.COCO_EVAL_BACKEND = backend
    cfg.OUTPUT_DIR = str(tmp_path)
    with registered_coco_json(synthetic_gt, tmp_path / "gt.json") as (name, json_path, dicts):
        evaluator = build_evaluator(cfg, name)
        assert isinstance(evaluator, SECOCOEvaluator) and evaluator._tasks == ("bbox", "segm")
        exact = run_mask_evaluator(evaluator, dicts)
        assert exact["bbox"]["AP"] == pytest.approx(100, abs=1e-9)
        assert exact["segm"]["AP"] == pytest.approx(100, abs=1e-9)
        out = tmp_path / "inference"
        assert read_strict_json(out / f"mask_ap_{name}.json")["segm"]["AP"] == exact["segm"]["AP"]
        eroded = run_mask_evaluator(evaluator, dicts, erode=1)
        assert eroded["bbox"]["AP"] == pytest.approx(100, abs=1e-9)
        assert 5 < eroded["segm"]["AP"] < 90
        dumped = out / "coco_instances_results.json"
        standalone = evaluate_coco_json(json_path, dumped, backend=backend, iou_type="segm")
        assert_metrics_close(standalone, eroded["segm"], atol=0)
    with pytest.raises(ValueError, match="iou_type='keypoints'"):
        evaluate_coco_json(json_path, dumped, iou_type="keypoints")


def test_build_evaluator_follows_evaluator_type(tiny_dataset, monkeypatch):
    from se_detectron.evaluation import build as build_module

    name, _, _ = tiny_dataset
    cfg = get_cfg()
    add_se_config(cfg)
    assert build_evaluator(cfg, name)._tasks == ("bbox",)
    cfg.MODEL.KEYPOINT_ON = True
    assert build_evaluator(cfg, name)._tasks == ("bbox", "keypoints")

    def recorder(kind):
        return lambda *args, **kwargs: (kind, args[0] if args else kwargs["dataset_name"])

    for kind in ("SemSegEvaluator", "COCOPanopticEvaluator", "PascalVOCDetectionEvaluator"):
        monkeypatch.setattr(build_module, kind, recorder(kind))
    monkeypatch.setattr(build_module, "build_coco_evaluator", lambda c, n, o: ("coco", n))
    names = []
    try:
        for evaluator_type in ("pascal_voc", "coco_panoptic_seg", "depth", None):
            names.append(f"se_eval_type_{uuid.uuid4().hex[:8]}")
            if evaluator_type:
                MetadataCatalog.get(names[-1]).set(evaluator_type=evaluator_type)
        voc, panoptic, unknown, missing = names
        assert build_evaluator(cfg, voc) == ("PascalVOCDetectionEvaluator", voc)
        combined = build_evaluator(cfg, panoptic)
        assert combined._evaluators == [
            ("coco", panoptic),
            ("SemSegEvaluator", panoptic),
            ("COCOPanopticEvaluator", panoptic),
        ]
        with pytest.raises(EvaluatorConfigError, match=f"{unknown!r} has evaluator_type='depth'"):
            build_evaluator(cfg, unknown)
        with pytest.raises(EvaluatorConfigError, match=f"{missing!r} has evaluator_type=None"):
            build_evaluator(cfg, missing)
    finally:
        for n in names:
            MetadataCatalog.pop(n, None)


def test_mask_ap_with_polygon_ground_truth(tiny_dataset, tmp_path):
    """COCO polygons (as registered with --register-coco): box-shaped masks score mask AP."""
    from pycocotools import mask as mask_util

    name, json_path, _ = tiny_dataset
    gt = json.loads(json_path.read_text())
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    cfg = get_cfg()
    add_se_config(cfg)
    cfg.MODEL.MASK_ON = True
    with registered_coco_json(gt, tmp_path / "poly.json") as (poly_name, _, dicts):
        evaluator = build_evaluator(cfg, poly_name, str(tmp_path / "out"))
        evaluator.reset()
        for d in dicts:
            anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
            h, w = d["height"], d["width"]
            instances = Instances((h, w))
            instances.pred_boxes = Boxes(
                BoxMode.convert(
                    torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4),
                    BoxMode.XYWH_ABS,
                    BoxMode.XYXY_ABS,
                )
            )
            instances.scores = torch.linspace(0.9, 0.5, len(anns))
            instances.pred_classes = torch.tensor([a["category_id"] for a in anns])
            masks = [
                mask_util.decode(mask_util.merge(mask_util.frPyObjects(a["segmentation"], h, w)))
                for a in anns
            ]
            instances.pred_masks = torch.tensor(np.array(masks, dtype=bool).reshape(-1, h, w))
            evaluator.process([{"image_id": d["image_id"], "height": h, "width": w}],
                              [{"instances": instances}])  # fmt: skip
        results = evaluator.evaluate()
    assert results["segm"]["AP"] == pytest.approx(100, abs=1e-9)
    assert results["bbox"]["AP"] == pytest.approx(100, abs=1e-9)
    assert name != poly_name
