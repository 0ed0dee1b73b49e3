"""COCO instances json files as Detectron2 datasets, checked before they are trained on.

The json's structure, the existence and sizes of its images and its usable annotations are
checked once per process (:mod:`.coco_checks` reads image sizes and finds degenerate boxes and
crowd regions: a file of crowd regions only has nothing to train on);
every problem is a :class:`~se_detectron.data.register.DatasetConfigError` naming the entry, key
or path.
"""

import json
import logging
import os

from detectron2.data.datasets import load_coco_json

from .coco_checks import (
    check_image_sizes,
    crowd_annotations,
    degenerate_boxes,
    drop_degenerate_boxes,
)
from .register import DatasetConfigError, _require, register_once

__all__ = ["register_coco_dataset"]

logger = logging.getLogger(__name__)


def _validate_coco_json(json_file, image_root, what):
    """Check that ``json_file`` is COCO instances json whose images exist under ``image_root``
    with the sizes it gives, and that it has annotations to train on (not all crowd regions or
    degenerate boxes); returns the ids of its degenerate boxes (width or height <= 0)."""
    try:
        with open(json_file) as f:
            data = json.load(f)
    except ValueError as e:
        raise DatasetConfigError(f"{what}: '{json_file}' is not valid json ({e}).") from None
    if not isinstance(data, dict):
        data = {}
    missing = [
        k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)
    ]
    if missing:
        raise DatasetConfigError(
            f"{what}: '{json_file}' is not a COCO instances file: it needs lists "
            f"'images', 'annotations' and 'categories' (missing or not a list: {missing})."
        )
    if not data["categories"]:
        raise DatasetConfigError(f"{what}: '{json_file}' has an empty 'categories' list.")

    def check_unique(items, section, fields):
        ids = set()
        for i, item in enumerate(items):
            absent = [k for k in fields if not isinstance(item, dict) or k not in item]
            if absent:
                raise DatasetConfigError(
                    f"{what}: entry {i} of '{section}' in '{json_file}' lacks {absent}: {item!r}"
                )
            if item["id"] in ids:
                raise DatasetConfigError(
                    f"{what}: duplicate id {item['id']!r} in '{section}' of '{json_file}'."
                )
            ids.add(item["id"])
        return ids

    cat_ids = check_unique(data["categories"], "categories", ("id", "name"))
    img_ids = check_unique(data["images"], "images", ("id", "file_name", "width", "height"))
    check_unique(data["annotations"], "annotations", ("id", "image_id", "category_id", "bbox"))
    for ann in data["annotations"]:
        if ann["category_id"] not in cat_ids:
            raise DatasetConfigError(
                f"{what}: annotation {ann['id']} in '{json_file}' has category_id "
                f"{ann['category_id']!r}, which is not in 'categories' (ids {sorted(cat_ids)})."
            )
        if ann["image_id"] not in img_ids:
            raise DatasetConfigError(
                f"{what}: annotation {ann['id']} in '{json_file}' refers to image_id "
                f"{ann['image_id']!r}, which is not in 'images'."
            )
        bbox = ann["bbox"]
        if not (
            isinstance(bbox, list)
            and len(bbox) == 4
            and all(isinstance(v, (int, float)) for v in bbox)
        ):
            raise DatasetConfigError(
                f"{what}: annotation {ann['id']} in '{json_file}' has bbox {bbox!r}; "
                "expected [x, y, width, height]."
            )
    missing_images = [
        img["file_name"]
        for img in data["images"]
        if not os.path.isfile(os.path.join(image_root, img["file_name"]))
    ]
    if missing_images:
        raise DatasetConfigError(
            f"{what}: image '{os.path.join(image_root, missing_images[0])}' listed in "
            f"'{json_file}' does not exist ({len(missing_images)} of {len(data['images'])} "
            f"images are missing under image root '{image_root}')."
        )
    degenerate = degenerate_boxes(data["annotations"])
    crowd = crowd_annotations(data["annotations"])
    if len(degenerate) + len(crowd) == len(data["annotations"]):
        # Detectron2 trains on no crowd region and COCOeval ignores them: its loader would stop
        # with "AssertionError: No valid data found"
        reasons = []
        if crowd:
            reasons.append(
                f"{len(crowd)} are crowd regions (iscrowd 1), which mark areas to ignore"
            )
        if degenerate:
            reasons.append(f"{len(degenerate)} have a bbox of width or height <= 0")
        dropped = f" ({'; '.join(reasons)})" if reasons else ""
        raise DatasetConfigError(
            f"{what}: '{json_file}' has no usable annotations{dropped} for its "
            f"{len(data['images'])} images: nothing to train or evaluate on."
        )
    wrong_sizes = check_image_sizes(data["images"], image_root)
    if wrong_sizes:
        raise DatasetConfigError(
            f"{what}: the width/height in '{json_file}' must be those of the image files under "
            f"'{image_root}': {'; '.join(wrong_sizes)}."
        )
    return degenerate


# (json, image root, json mtime and size) -> ids of its degenerate boxes: the json and the image
# headers are checked once per process, not every time the dataset is loaded
_CHECKED_COCO = {}


def _checked_coco_json(json_file, image_root, what):
    stat = os.stat(json_file)
    key = (json_file, image_root, stat.st_mtime_ns, stat.st_size)
    if key not in _CHECKED_COCO:
        degenerate = _validate_coco_json(json_file, image_root, what)
        if degenerate:
            logger.warning(
                f"{what}: dropping {len(degenerate)} annotation(s) of '{json_file}' whose bbox "
                f"has a width or height <= 0 (first: annotation id {degenerate[0]!r})"
            )
        _CHECKED_COCO[key] = degenerate
    return _CHECKED_COCO[key]


def register_coco_dataset(name, json_file, image_root, validate=True):
    """Register a COCO-format instances json as dataset ``name`` (evaluator_type "coco").

    Category ids may be arbitrary (non-contiguous, starting at 0): Detectron2's
    ``load_coco_json`` maps them to ``0..K-1`` and records ``thing_dataset_id_to_contiguous_id``
    (and ``thing_classes``, taken from the file) when the dataset is loaded; images without
    annotations are kept, boxes of zero or negative width or height are dropped (with a warning
    giving their count and the first annotation id). Paths are checked now; with ``validate``
    the json structure, the existence of every image, its size (from the file's header) and that
    there are annotations are checked when the dataset is first loaded in the process (this
    parses the json once more than Detectron2 does).

    Args:
        name (str): dataset name.
        json_file (str): COCO instances json.
        image_root (str): folder the json's ``file_name`` entries are relative to.
        validate (bool): check the json and the image files when loading.

    Returns:
        str: ``name``.
    """
    json_file = os.path.abspath(os.path.expanduser(os.fspath(json_file)))
    image_root = os.path.abspath(os.path.expanduser(os.fspath(image_root)))
    what = f"COCO dataset '{name}'"
    _require(json_file, "annotation file", what)
    _require(image_root, "image folder", what, is_dir=True)

    def load():
        _require(json_file, "annotation file", what)
        degenerate = _checked_coco_json(json_file, image_root, what) if validate else True
        dicts = load_coco_json(json_file, image_root, name)
        if degenerate:
            drop_degenerate_boxes(dicts)
        return dicts

    register_once(name, load, json_file=json_file, image_root=image_root, evaluator_type="coco")
    return name
