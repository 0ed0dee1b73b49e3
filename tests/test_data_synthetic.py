import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from se_detectron.data import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_TRAIN,
    SYNTHETIC_VAL,
    DatasetConfigError,
    generate_synthetic_dataset,
    prepare_dataset,
    register_synthetic_datasets,
)
from se_detectron.data import synthetic as synthetic_module

SMALL = {"num_train": 12, "num_val": 4, "image_size": 256, "seed": 0}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _load_json(path):
    with open(path) as f:
        return json.load(f)


def _tree(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = _read(path)
    return out


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "se_synthetic"
    return generate_synthetic_dataset(root, **SMALL)


@pytest.fixture
def clean_catalog():
    def remove():
        for name in (SYNTHETIC_TRAIN, SYNTHETIC_VAL):
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
            MetadataCatalog.pop(name, None)

    remove()
    yield
    remove()


def test_layout_and_coco_format(small_dataset):
    info = small_dataset
    assert info["generated"]
    for split in ("train", "val"):
        coco = _load_json(info[f"{split}_json"])
        assert len(coco["images"]) == SMALL[f"num_{split}"]
        assert sorted(os.listdir(info[f"{split}_images"])) == sorted(
            im["file_name"] for im in coco["images"]
        )
        assert [c["id"] for c in coco["categories"]] == list(range(1, len(SYNTHETIC_CLASSES) + 1))
        assert [c["name"] for c in coco["categories"]] == list(SYNTHETIC_CLASSES)
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        for ann in coco["annotations"]:
            assert ann["iscrowd"] == 0 and 0 < ann["area"] <= ann["bbox"][2] * ann["bbox"][3]
        for im in coco["images"]:
            assert (im["width"], im["height"]) == (256, 256)
            assert Image.open(os.path.join(info[f"{split}_images"], im["file_name"])).size == (
                256,
                256,
            )
            per_image = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            assert 1 <= len(per_image) <= 6


def test_boxes_inside_image_varied_sizes_and_classes(small_dataset):
    coco = _load_json(small_dataset["train_json"])
    sides = []
    for ann in coco["annotations"]:
        x, y, w, h = ann["bbox"]
        assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 256 and y + h <= 256
        sides.append(max(w, h))
    assert min(sides) < 35 and max(sides) > 60
    counts = np.bincount([a["category_id"] for a in coco["annotations"]], minlength=6)[1:]
    assert (counts > 0).all(), counts


def test_boxes_are_tight_visible_masks():
    """Each box is exactly the extent of the visible pixels of its drawn shape."""
    rng = np.random.default_rng(123)
    n_occluded = 0
    for _ in range(20):
        pixels, objects = synthetic_module._draw_image(rng, 256)
        assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8
        for i, (cls, visible) in enumerate(objects):
            assert 0 <= cls < len(SYNTHETIC_CLASSES)
            x, y, w, h = synthetic_module._tight_box(visible)
            box = np.zeros_like(visible)
            box[y : y + h, x : x + w] = True
            assert visible[box].any() and not visible[~box].any()
            # every border row/column of the box touches the shape
            assert visible[y].any() and visible[y + h - 1].any()
            assert visible[:, x].any() and visible[:, x + w - 1].any()
            # later objects occlude earlier ones: visible masks never overlap
            for _, other in objects[i + 1 :]:
                assert not (visible & other).any()
            n_occluded += int(visible.sum() < visible[box].size and i < len(objects) - 1)
    assert n_occluded > 0


def test_drawn_pixels_match_boxes(small_dataset):
    """The written image and json boxes are those of the drawing (redrawn from its RNG stream)."""
    coco = _load_json(small_dataset["val_json"])
    image = coco["images"][0]
    pixels = np.asarray(Image.open(os.path.join(small_dataset["val_images"], image["file_name"])))
    rng = np.random.default_rng([SMALL["seed"], 1, 0])  # stream of val image 0
    expected, objects = synthetic_module._draw_image(rng, 256)
    assert np.abs(pixels.astype(int) - expected.astype(int)).mean() < 4  # JPEG round trip
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    assert [a["bbox"] for a in anns] == [synthetic_module._tight_box(m) for _, m in objects]


def test_masks_are_the_visible_pixels(small_dataset):
    """Each RLE mask is the drawn shape's visible pixels: same area and tight box, no overlap."""
    from pycocotools import mask as mask_util

    coco = _load_json(small_dataset["val_json"])
    image = coco["images"][0]
    rng = np.random.default_rng([SMALL["seed"], 1, 0])  # stream of val image 0
    _, objects = synthetic_module._draw_image(rng, 256)
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in anns]
    assert len(masks) == len(objects)
    for mask, (_, visible) in zip(masks, objects):
        assert mask.shape == (256, 256) and (mask == visible).all()
    train = _load_json(small_dataset["train_json"])
    for ann in train["annotations"]:
        segm = ann["segmentation"]
        assert segm["size"] == [256, 256] and isinstance(segm["counts"], str)
        assert int(mask_util.area(segm)) == ann["area"]
        assert mask_util.toBbox(segm).tolist() == ann["bbox"]


def test_deterministic(tmp_path, small_dataset):
    again = generate_synthetic_dataset(tmp_path / "again", **SMALL)
    assert _tree(again["root"]) == _tree(small_dataset["root"])
    other = generate_synthetic_dataset(tmp_path / "other", **dict(SMALL, seed=1))
    assert _read(other["train_json"]) != _read(small_dataset["train_json"])


def test_idempotent_and_regenerates_on_new_parameters(tmp_path):
    root = tmp_path / "ds"
    params = dict(SMALL, num_train=3, num_val=2)
    assert generate_synthetic_dataset(root, **params)["generated"]
    stamp = os.stat(root / "manifest.json").st_mtime_ns
    assert not generate_synthetic_dataset(root, **params)["generated"]
    assert os.stat(root / "manifest.json").st_mtime_ns == stamp
    info = generate_synthetic_dataset(root, **dict(params, num_val=3))
    assert info["generated"] and len(os.listdir(info["val_images"])) == 3
    assert generate_synthetic_dataset(root, **dict(params, num_val=3), force=True)["generated"]
    # a missing image makes the dataset incomplete: regenerated
    os.remove(os.path.join(info["train_images"], "train_00000.jpg"))
    assert generate_synthetic_dataset(root, **dict(params, num_val=3))["generated"]
    # no leftovers of the temporary directories
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["ds"]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic_module, "_write_split", boom)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(tmp_path / "ds", num_train=2, num_val=1)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_refuses_to_overwrite_foreign_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    (tmp_path / "file").write_text("y")
    for target in ("mine", "file"):
        with pytest.raises(FileExistsError, match=f"'{tmp_path / target}'.*no manifest.json"):
            generate_synthetic_dataset(tmp_path / target, num_train=2, num_val=1)
    assert (tmp_path / "mine" / "precious.txt").exists() and (tmp_path / "file").exists()
    (tmp_path / "empty").mkdir()  # an empty directory is fine
    assert generate_synthetic_dataset(tmp_path / "empty", num_train=2, num_val=1)["generated"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "empty").st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0o700


def test_register_is_lazy_idempotent_and_loads(tmp_path, clean_catalog, monkeypatch):
    root = tmp_path / "lazy"
    params = {"num_train": 3, "num_val": 2}
    assert register_synthetic_datasets(root, **params) == [SYNTHETIC_TRAIN, SYNTHETIC_VAL]
    assert not root.exists()  # nothing generated at registration
    register_synthetic_datasets(root, **params)  # idempotent
    meta = MetadataCatalog.get(SYNTHETIC_VAL)
    assert meta.evaluator_type == "coco"
    assert meta.thing_classes == list(SYNTHETIC_CLASSES)
    assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(5)}
    assert meta.json_file == str(root / "annotations" / "instances_val.json")

    dicts = DatasetCatalog.get(SYNTHETIC_TRAIN)  # generates both splits
    assert len(dicts) == 3 and os.path.isfile(meta.json_file)
    assert all(0 <= a["category_id"] < 5 for d in dicts for a in d["annotations"])
    assert all(os.path.isfile(d["file_name"]) for d in dicts)

    with pytest.raises(DatasetConfigError, match="already registered"):
        register_synthetic_datasets(tmp_path / "elsewhere", **params)


def test_default_root_and_prepare(tmp_path, clean_catalog, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    register_synthetic_datasets(num_train=2, num_val=1)
    json_file = MetadataCatalog.get(SYNTHETIC_VAL).json_file
    assert json_file == str(tmp_path / "se_synthetic" / "annotations" / "instances_val.json")
    assert not os.path.exists(json_file)
    prepare_dataset(SYNTHETIC_VAL)  # what an evaluator-first caller does
    assert os.path.isfile(json_file)
