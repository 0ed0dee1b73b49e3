import copy
import json
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from se_detectron import add_se_config
from se_detectron.data import (
    SYNTHETIC_TRAIN,
    SYNTHETIC_VAL,
    DatasetConfigError,
    ImageReadError,
    MaskFormatError,
    SafeDatasetMapper,
    UnregisteredDatasetError,
    check_datasets_registered,
    check_same_classes,
    register_coco_dataset,
    register_datasets_from_cfg,
    register_voc_dataset,
    unregistered_dataset_error,
)


@pytest.fixture(autouse=True)
def catalog():
    """Remove every dataset / metadata registered during the test."""
    datasets, metadata = set(DatasetCatalog.list()), set(MetadataCatalog.list())
    yield
    for name in set(DatasetCatalog.list()) - datasets:
        DatasetCatalog.remove(name)
    for name in set(MetadataCatalog.list()) - metadata:
        MetadataCatalog.remove(name)


def _image(path, size=(40, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def _coco(tmp_path, categories, annotations, images=None, name="ann.json"):
    images = images or [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "sub/b.png", "width": 40, "height": 30},
    ]
    for im in images:
        _image(str(tmp_path / "images" / im["file_name"]))
    path = tmp_path / name
    data = {"images": images, "annotations": annotations, "categories": categories}
    path.write_text(json.dumps(data))
    return str(path), str(tmp_path / "images")


def _ann(id, image_id, category_id, bbox=(2, 3, 10, 8)):
    return {
        "id": id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": list(bbox),
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
    }


def _evaluate_ground_truth(name, output_dir):
    """COCO box AP of predictions equal to the ground truth of dataset ``name``."""
    from detectron2.evaluation import COCOEvaluator

    dicts = DatasetCatalog.get(name)
    evaluator = COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=output_dir)
    evaluator.reset()
    for d in dicts:
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]
        ]
        instances = Instances(
            (d["height"], d["width"]),
            pred_boxes=Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)),
            scores=torch.ones(len(boxes)),
            pred_classes=torch.tensor(
                [a["category_id"] for a in d["annotations"]], dtype=torch.long
            ),
        )
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    return evaluator.evaluate()["bbox"]["AP"]


# ----------------------------------------------------------------------------------------------
# COCO
# ----------------------------------------------------------------------------------------------
def test_coco_non_contiguous_ids_and_image_without_annotations(tmp_path):
    categories = [{"id": 10, "name": "zebra"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    images = [
        {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "sub/b.png", "width": 40, "height": 30},
        {"id": 5, "file_name": "empty.png", "width": 40, "height": 30},
    ]
    anns = [_ann(1, 1, 3), _ann(2, 1, 10, (20, 5, 12, 10)), _ann(3, 2, 7)]
    json_file, image_root = _coco(tmp_path, categories, anns, images)
    assert register_coco_dataset("t_coco", json_file, image_root) == "t_coco"

    dicts = DatasetCatalog.get("t_coco")
    meta = MetadataCatalog.get("t_coco")
    assert meta.thing_classes == ["cat", "dog", "zebra"]  # from the file, ordered by id
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1, 10: 2}
    assert meta.evaluator_type == "coco" and meta.json_file == json_file
    by_id = {d["image_id"]: d for d in dicts}
    assert [a["category_id"] for a in by_id[1]["annotations"]] == [0, 2]
    assert [a["category_id"] for a in by_id[2]["annotations"]] == [1]
    assert by_id[5]["annotations"] == []  # image without annotations is kept
    assert by_id[2]["file_name"] == os.path.join(image_root, "sub/b.png")
    assert _evaluate_ground_truth("t_coco", str(tmp_path / "eval")) == pytest.approx(100.0)


def test_coco_category_id_zero(tmp_path):
    categories = [{"id": 0, "name": "zero"}, {"id": 1, "name": "one"}]
    json_file, image_root = _coco(tmp_path, categories, [_ann(1, 1, 0), _ann(2, 2, 1)])
    register_coco_dataset("t_zero", json_file, image_root)
    dicts = DatasetCatalog.get("t_zero")
    assert MetadataCatalog.get("t_zero").thing_dataset_id_to_contiguous_id == {0: 0, 1: 1}
    assert [d["annotations"][0]["category_id"] for d in dicts] == [0, 1]
    assert _evaluate_ground_truth("t_zero", str(tmp_path / "eval")) == pytest.approx(100.0)


def test_coco_same_registration_is_noop_different_is_error(tmp_path):
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)])
    register_coco_dataset("t_twice", json_file, image_root)
    register_coco_dataset("t_twice", json_file, image_root)
    other_json, _ = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)], name="other.json")
    with pytest.raises(DatasetConfigError, match="t_twice.*already registered.*other.json"):
        register_coco_dataset("t_twice", other_json, image_root)
    with pytest.raises(DatasetConfigError, match="coco_2017_val.*already registered"):
        register_coco_dataset("coco_2017_val", json_file, image_root)


def test_coco_missing_paths(tmp_path):
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)])
    missing = str(tmp_path / "nope.json")
    with pytest.raises(DatasetConfigError, match=f"annotation file '{missing}' does not exist"):
        register_coco_dataset("t_err", missing, image_root)
    with pytest.raises(DatasetConfigError, match="image folder '.*no_images' does not exist"):
        register_coco_dataset("t_err", json_file, str(tmp_path / "no_images"))
    assert "t_err" not in DatasetCatalog.list()


def test_coco_missing_image_file(tmp_path):
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)])
    os.remove(os.path.join(image_root, "sub", "b.png"))
    register_coco_dataset("t_missing_img", json_file, image_root)
    with pytest.raises(DatasetConfigError) as e:
        DatasetCatalog.get("t_missing_img")
    assert os.path.join(image_root, "sub/b.png") in str(e.value) and json_file in str(e.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"images": [], "annotations": []}, "not a COCO instances file.*categories"),
        ([1, 2], "not a COCO instances file"),
        ("{not json", "not valid json"),
        ({"images": [], "annotations": [], "categories": []}, "empty 'categories'"),
    ],
)
def test_coco_not_coco_json(tmp_path, content, message):
    (tmp_path / "images").mkdir()
    path = tmp_path / "bad.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    register_coco_dataset("t_bad", str(path), str(tmp_path / "images"))
    with pytest.raises(DatasetConfigError, match=message) as e:
        DatasetCatalog.get("t_bad")
    assert str(path) in str(e.value)


def test_coco_bad_references(tmp_path):
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 4)])
    register_coco_dataset("t_badcat", json_file, image_root)
    with pytest.raises(DatasetConfigError, match="category_id 4.*not in 'categories'"):
        DatasetCatalog.get("t_badcat")


# ----------------------------------------------------------------------------------------------
# VOC
# ----------------------------------------------------------------------------------------------
def _voc(root, images, split="train", ext=".jpg"):
    """images: {id: [(name, xmin, ymin, xmax, ymax, difficult), ...]}"""
    os.makedirs(root / "Annotations", exist_ok=True)
    os.makedirs(root / "ImageSets" / "Main", exist_ok=True)
    for file_id, objects in images.items():
        _image(str(root / "JPEGImages" / (file_id + ext)), (50, 40))
        xml = "".join(
            f"<object><name>{n}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin>"
            f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            for n, x0, y0, x1, y1, d in objects
        )
        (root / "Annotations" / f"{file_id}.xml").write_text(
            f"<annotation><size><width>50</width><height>40</height><depth>3</depth></size>"
            f"{xml}</annotation>"
        )
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")


def test_voc_classes_from_files_and_evaluation(tmp_path):
    root = tmp_path / "VOC"
    _voc(
        root,
        {
            "img1": [("dog", 1, 1, 20, 20, 0), ("cat", 10, 5, 30, 25, 1)],
            "img2": [("zebra", 5, 6, 45, 38, 0)],
            "img3": [],
        },
    )
    register_voc_dataset("t_voc", str(root), "train")
    meta = MetadataCatalog.get("t_voc")
    assert meta.thing_classes == ["cat", "dog", "zebra"] and meta.evaluator_type == "coco"
    dicts = DatasetCatalog.get("t_voc")
    assert [d["image_id"] for d in dicts] == [1, 2, 3]
    first = dicts[0]
    assert first["file_name"] == str(root / "JPEGImages" / "img1.jpg")
    assert (first["width"], first["height"]) == (50, 40)
    assert [a["category_id"] for a in first["annotations"]] == [1, 0]
    assert first["annotations"][0]["bbox"] == [0.0, 0.0, 20.0, 20.0]  # 1-based VOC -> 0-based
    assert first["annotations"][1]["difficult"] == 1  # kept, as Detectron2 does
    assert dicts[2]["annotations"] == []
    # COCOEvaluator converts the dataset to COCO json on the fly
    assert _evaluate_ground_truth("t_voc", str(tmp_path / "eval")) == pytest.approx(100.0)


def test_voc_single_image_split_png_and_given_classes(tmp_path):
    root = tmp_path / "VOC"
    _voc(root, {"only": [("b", 3, 3, 9, 9, 0)]}, split="val", ext=".png")
    register_voc_dataset("t_voc1", root, "val", class_names=["a", "b"])
    assert MetadataCatalog.get("t_voc1").thing_classes == ["a", "b"]
    (d,) = DatasetCatalog.get("t_voc1")
    assert d["file_name"].endswith("only.png") and d["annotations"][0]["category_id"] == 1


def test_voc_errors(tmp_path):
    root = tmp_path / "VOC"
    _voc(root, {"img1": [("dog", 1, 1, 20, 20, 0)]})
    with pytest.raises(DatasetConfigError, match="class 'dog'.*img1.xml|img1.xml.*'dog'"):
        register_voc_dataset("t_vocerr", root, "train", class_names=["cat"])
    with pytest.raises(DatasetConfigError, match="split file '.*test.txt' does not exist"):
        register_voc_dataset("t_vocerr", root, "test")
    with pytest.raises(DatasetConfigError, match="VOC root '.*nowhere' does not exist"):
        register_voc_dataset("t_vocerr", tmp_path / "nowhere", "train")
    os.remove(root / "JPEGImages" / "img1.jpg")
    with pytest.raises(DatasetConfigError, match="no image for id 'img1'.*JPEGImages"):
        register_voc_dataset("t_vocerr", root, "train")
    os.remove(root / "Annotations" / "img1.xml")
    with pytest.raises(DatasetConfigError, match="annotation file '.*img1.xml' does not exist"):
        register_voc_dataset("t_vocerr", root, "train")
    assert "t_vocerr" not in DatasetCatalog.list()


def _voc_train_val(root):
    """A root whose train split has 'Alive' and 'Dead' objects and whose val split only 'Dead'."""
    _voc(root, {"t1": [("Alive", 1, 1, 20, 20, 0)], "t2": [("Dead", 5, 5, 30, 30, 0)]})
    _voc(root, {"v1": [("Dead", 2, 2, 25, 25, 0)]}, split="val")


def test_voc_splits_of_one_root_share_classes(tmp_path):
    _voc_train_val(tmp_path / "VOC")
    register_voc_dataset("t_vocs_train", tmp_path / "VOC", "train")
    register_voc_dataset("t_vocs_val", tmp_path / "VOC", "val")
    assert MetadataCatalog.get("t_vocs_val").thing_classes == ["Alive", "Dead"]
    assert MetadataCatalog.get("t_vocs_train").thing_classes == ["Alive", "Dead"]
    (val,) = DatasetCatalog.get("t_vocs_val")
    assert val["annotations"][0]["category_id"] == 1  # 'Dead' has train's id, not 0
    check_same_classes(["t_vocs_train"], ["t_vocs_val"])


def test_voc_conflicting_classes_for_one_root(tmp_path):
    _voc_train_val(tmp_path / "VOC")
    cfg = add_se_config(get_cfg())
    cfg.DATASETS.REGISTER_VOC = [f"t_vocd_{s}:{tmp_path / 'VOC'}:{s}" for s in ("train", "val")]
    register_datasets_from_cfg(cfg, synthetic=False)  # the root is scanned once, for both
    assert MetadataCatalog.get("t_vocd_val").thing_classes == ["Alive", "Dead"]
    assert MetadataCatalog.get("t_vocd_train").thing_classes == ["Alive", "Dead"]
    entries = [f"t_vocc_train:{tmp_path / 'VOC'}:train", f"t_vocc_val:{tmp_path / 'VOC'}:val:Dead"]
    cfg.DATASETS.REGISTER_VOC = entries
    with pytest.raises(DatasetConfigError) as e:
        register_datasets_from_cfg(cfg, synthetic=False)
    message = str(e.value)
    assert "cfg.DATASETS.REGISTER_VOC[1]" in message and "REGISTER_VOC[0]" in message
    assert "['Dead']" in message and "['Alive', 'Dead']" in message


def test_train_and_test_classes_must_match(tmp_path):
    _voc(tmp_path / "A", {"a1": [("cat", 1, 1, 20, 20, 0)]})
    _voc(tmp_path / "B", {"b1": [("dog", 1, 1, 20, 20, 0)]}, split="val")
    register_voc_dataset("t_cls_a", tmp_path / "A", "train")
    register_voc_dataset("t_cls_b", tmp_path / "B", "val")
    with pytest.raises(DatasetConfigError, match=r"DATASETS.TEST dataset 't_cls_b'.*\['dog'\]"):
        check_same_classes(["t_cls_a"], ["t_cls_b"])
    check_same_classes(["t_cls_a"], ["t_cls_a"])


# ----------------------------------------------------------------------------------------------
# Config
# ----------------------------------------------------------------------------------------------
def test_register_from_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    for name in (SYNTHETIC_TRAIN, SYNTHETIC_VAL):  # an earlier test of this process registered it
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog.list():
                monkeypatch.delitem(catalog.data, name)  # put back after the test
    cfg = add_se_config(add_se_config(get_cfg()))
    assert cfg.DATASETS.REGISTER_COCO == [] and cfg.DATASETS.REGISTER_VOC == []
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)])
    _voc(tmp_path / "VOC", {"img1": [("dog", 1, 1, 20, 20, 0)]})
    _voc(tmp_path / "VOC2", {"img1": [("dog", 1, 1, 20, 20, 0)]})
    cfg.merge_from_list(
        [
            "DATASETS.REGISTER_COCO",
            [f"c_cfg:{json_file}:{image_root}"],
            "DATASETS.REGISTER_VOC",
            [f"v_cfg:{tmp_path / 'VOC'}:train", f"v_cfg2:{tmp_path / 'VOC2'}:train:cat,dog"],
        ]
    )
    names = register_datasets_from_cfg(cfg)
    assert names == ["c_cfg", "v_cfg", "v_cfg2", SYNTHETIC_TRAIN, SYNTHETIC_VAL]
    assert register_datasets_from_cfg(cfg) == names  # idempotent
    assert MetadataCatalog.get("v_cfg2").thing_classes == ["cat", "dog"]
    assert not (tmp_path / "d2").exists()  # the synthetic dataset is generated lazily
    check_datasets_registered(("c_cfg", SYNTHETIC_VAL))


@pytest.mark.parametrize(
    "key, entry",
    [
        ("REGISTER_COCO", "only_name:ann.json"),
        ("REGISTER_COCO", "a::images"),
        ("REGISTER_VOC", "name:root"),
        ("REGISTER_VOC", "a:b:c:d:e"),
    ],
)
def test_malformed_cfg_entries(key, entry):
    cfg = add_se_config(get_cfg())
    cfg.DATASETS[key] = [entry]
    with pytest.raises(DatasetConfigError) as e:
        register_datasets_from_cfg(cfg, synthetic=False)
    message = str(e.value)
    assert f"cfg.DATASETS.{key}[0]" in message and repr(entry) in message
    assert (
        "NAME:ANNOTATION_JSON:IMAGE_ROOT" if key == "REGISTER_COCO" else "NAME:VOC_ROOT:SPLIT"
    ) in message


def test_cfg_entry_must_be_list():
    cfg = add_se_config(get_cfg())
    cfg.DATASETS.REGISTER_COCO = "a:b:c"
    with pytest.raises(DatasetConfigError, match="REGISTER_COCO must be a list"):
        register_datasets_from_cfg(cfg, synthetic=False)


def test_unregistered_dataset_error(tmp_path):
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "a"}], [_ann(1, 1, 1)])
    register_coco_dataset("my_shapes_train", json_file, image_root)
    error = unregistered_dataset_error("my_shapes_trian", key="DATASETS.TRAIN")
    assert isinstance(error, UnregisteredDatasetError) and isinstance(error, ValueError)
    message = str(error)
    assert "'my_shapes_trian'" in message and "cfg.DATASETS.TRAIN" in message
    assert "Did you mean 'my_shapes_train'" in message
    assert "coco_2017_train" in message and "REGISTER_COCO" in message
    with pytest.raises(UnregisteredDatasetError, match="'nope'"):
        check_datasets_registered(["my_shapes_train", "nope"], key="DATASETS.TEST")
    check_datasets_registered("my_shapes_train")


# ----------------------------------------------------------------------------------------------
# Mapper
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def mapper():
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST = 0  # no resizing
    return SafeDatasetMapper(cfg, is_train=False)


def test_mapper_reads_good_image(tmp_path, mapper):
    path = str(tmp_path / "ok.png")
    _image(path, (40, 30))
    out = mapper({"file_name": path, "image_id": 1, "height": 30, "width": 40})
    assert out["image"].shape == (3, 30, 40)


def test_mapper_read_errors_name_the_file(tmp_path, mapper):
    good = tmp_path / "good.jpg"
    _image(str(good), (64, 48))
    data = good.read_bytes()
    (tmp_path / "corrupt.jpg").write_bytes(b"this is not an image")
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    cases = {"missing.jpg": "FileNotFoundError", "corrupt.jpg": "Error", "truncated.jpg": "trunc"}
    for name, cause in cases.items():
        path = str(tmp_path / name)
        with pytest.raises(ImageReadError) as e:
            mapper({"file_name": path, "image_id": 7, "height": 48, "width": 64})
        assert f"'{path}'" in str(e.value) and cause in str(e.value)
        assert isinstance(e.value, OSError)


def test_mapper_rle_masks_need_bitmask_format(tmp_path):
    from pycocotools import mask as mask_util

    path = str(tmp_path / "ok.png")
    _image(path, (40, 30))
    mask = np.zeros((30, 40), dtype=np.uint8)
    mask[5:15, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    anno = {"bbox": [10, 5, 20, 10], "bbox_mode": 1, "category_id": 0, "iscrowd": 0}
    record = {"file_name": path, "height": 30, "width": 40, "annotations": [anno]}
    anno["segmentation"] = rle
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.RANDOM_FLIP = (30,), "none"
    cfg.MODEL.MASK_ON = True
    with pytest.raises(MaskFormatError, match="INPUT.MASK_FORMAT bitmask") as e:
        SafeDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))
    assert f"'{path}'" in str(e.value)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    out = SafeDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))
    assert (out["instances"].gt_masks.tensor[0].numpy() == mask.astype(bool)).all()
    # polygons still work with the polygon format
    cfg.INPUT.MASK_FORMAT = "polygon"
    anno["segmentation"] = [[10, 5, 30, 5, 30, 15, 10, 15]]
    out = SafeDatasetMapper(cfg, is_train=True)(copy.deepcopy(record))
    assert len(out["instances"].gt_masks) == 1


def test_mapper_other_errors_unchanged(tmp_path, mapper):
    path = str(tmp_path / "ok.png")
    _image(path, (40, 30))
    with pytest.raises(ValueError, match="Mismatched image shape") as e:  # Detectron2's own
        mapper({"file_name": path, "height": 31, "width": 40})
    assert not isinstance(e.value, ImageReadError)


def _gray16(path, values):
    """A 16-bit grayscale PNG (PIL mode I;16) with the given uint16 pixel values."""
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"


def test_mapper_scales_16_bit_images_by_their_bit_depth(tmp_path, mapper):
    values = np.zeros((30, 40), dtype=np.uint16)
    values[:, 10:20], values[:, 20:30], values[:, 30:] = 257, 32768, 65535
    path = str(tmp_path / "depth.png")
    _gray16(path, values)
    out = mapper({"file_name": path, "image_id": 1, "height": 30, "width": 40})
    image = out["image"].numpy()
    assert out["file_name"] == path and image.shape == (3, 30, 40)
    # every channel: 0, 1, 128, 255 (65535 -> 255, 32768 -> round(127.5) = 128); not all white
    expected = np.repeat([0, 1, 128, 255], 10)[None, :].repeat(30, 0)
    assert all((image[c] == expected).all() for c in range(3))
    # an 8-bit image is read exactly as Detectron2 reads it
    eight = str(tmp_path / "ok.png")
    _image(eight, (40, 30))
    from detectron2.data.detection_utils import read_image as detectron2_read_image

    read = mapper({"file_name": eight, "image_id": 2, "height": 30, "width": 40})["image"]
    assert (read.numpy() == detectron2_read_image(eight, "BGR").transpose(2, 0, 1)).all()


def test_mapper_float_image_is_an_image_read_error(tmp_path, mapper):
    path = str(tmp_path / "float.tif")
    Image.fromarray(np.full((30, 40), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(ImageReadError, match=r"float.tif'.*floating-point image \(PIL mode F\)"):
        mapper({"file_name": path, "image_id": 1, "height": 30, "width": 40})


def test_coco_only_crowd_annotations_is_an_error(tmp_path):
    crowd = [dict(_ann(1, 1, 1), iscrowd=1), dict(_ann(2, 2, 1), iscrowd=1)]
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "person"}], crowd)
    register_coco_dataset("crowd_only", json_file, image_root)
    with pytest.raises(DatasetConfigError) as e:
        DatasetCatalog.get("crowd_only")
    assert str(e.value) == (
        f"COCO dataset 'crowd_only': '{json_file}' has no usable annotations (2 are crowd regions "
        "(iscrowd 1), which mark areas to ignore) for its 2 images: nothing to train or evaluate "
        "on."
    )
    # one ordinary annotation beside the crowd regions: loads (crowd regions kept for Detectron2)
    json_file, image_root = _coco(tmp_path, [{"id": 1, "name": "person"}], crowd + [_ann(3, 1, 1)],
                                  name="mixed.json")  # fmt: skip
    register_coco_dataset("crowd_and_one", json_file, image_root)
    assert sum(len(d["annotations"]) for d in DatasetCatalog.get("crowd_and_one")) == 3


def test_read_image_equals_detectron2s_for_8_bit_images(tmp_path):
    from detectron2.data.detection_utils import read_image as detectron2_read_image

    from se_detectron.data.image_io import read_image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rotated = Image.fromarray(pixels)
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees when shown
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "gray.png")
    for name in ("rotated.jpg", "p.png", "gray.png"):
        for fmt in ("BGR", "RGB", "L"):
            ours, theirs = (
                read_image(str(tmp_path / name), fmt),
                detectron2_read_image(str(tmp_path / name), fmt),
            )
            assert ours.shape == theirs.shape and (ours == theirs).all(), (name, fmt)
    assert read_image(str(tmp_path / "rotated.jpg")).shape == (40, 30, 3)
