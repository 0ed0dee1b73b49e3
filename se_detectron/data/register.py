"""Register user datasets (COCO json or Pascal VOC folders) from the config, without code.

Add the keys with :func:`se_detectron.add_se_config`, list the datasets in the config::

    DATASETS:
      REGISTER_COCO: ["shapes_train:data/shapes/train.json:data/shapes/images"]
      REGISTER_VOC: ["myvoc_trainval:data/MyVOC:trainval"]
      TRAIN: ("shapes_train",)

and call :func:`se_detectron.data.register_datasets_from_cfg` before building the data loaders.
Every problem (missing file or folder, malformed entry, json that is not COCO, annotation
pointing at a missing image, name already registered with other files) raises
:class:`DatasetConfigError` naming the offending entry, key or path. Both formats are evaluated
with Detectron2's ``COCOEvaluator`` (metadata ``evaluator_type="coco"``).
"""

import difflib
import json
import logging
import os
import xml.etree.ElementTree as ET

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from ..errors import SEDetectronError
from .coco_checks import (
    check_image_sizes,
    crowd_annotations,
    degenerate_boxes,
    drop_degenerate_boxes,
)

__all__ = [
    "DatasetConfigError",
    "UnregisteredDatasetError",
    "check_datasets_registered",
    "check_same_classes",
    "load_voc_detection",
    "register_coco_dataset",
    "register_once",
    "register_voc_dataset",
    "unregistered_dataset_error",
]

logger = logging.getLogger(__name__)

_COCO_FORMAT = "NAME:ANNOTATION_JSON:IMAGE_ROOT"
_VOC_FORMAT = "NAME:VOC_ROOT:SPLIT[:CLASS1,CLASS2,...]"
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


class DatasetConfigError(SEDetectronError, ValueError):
    """A dataset cannot be registered or loaded; the message names the entry, key or path."""


class UnregisteredDatasetError(DatasetConfigError):
    """A config refers to a dataset name that is not registered."""


# ----------------------------------------------------------------------------------------------
# Catalog helpers
# ----------------------------------------------------------------------------------------------
def _same(old, new):
    if (
        isinstance(old, str)
        and isinstance(new, str)
        and os.path.abspath(old) == os.path.abspath(new)
    ):
        return True  # e.g. Detectron2's builtins record relative paths
    return old == new


def register_once(name, loader, **metadata):
    """Register ``loader`` under ``name`` with ``metadata``, unless already registered the same way.

    Args:
        name (str): dataset name.
        loader (callable): function returning the dataset dicts.
        **metadata: metadata to set; all of it identifies the dataset, so registering ``name``
            again with equal values is a no-op and with different values is an error.

    Returns:
        bool: True if newly registered, False if it already was (identically).
    """
    if name in DatasetCatalog.list():
        existing = MetadataCatalog.get(name)
        for key, value in metadata.items():
            old = existing.get(key, "<unset>")
            if not _same(old, value):
                raise DatasetConfigError(
                    f"Dataset name '{name}' is already registered with {key}={old!r}; cannot "
                    f"register it again with {key}={value!r}. Choose another name."
                )
        return False
    DatasetCatalog.register(name, loader)
    try:
        MetadataCatalog.get(name).set(**metadata)
    except AssertionError as e:  # stale metadata left by someone who only removed the dataset
        DatasetCatalog.remove(name)
        raise DatasetConfigError(f"Inconsistent metadata for dataset '{name}': {e}") from None
    return True


def unregistered_dataset_error(name, key=None):
    """Build (not raise) the error for a dataset name that is not registered.

    Args:
        name (str): the unknown name.
        key (str or None): the config key that refers to it, e.g. ``"DATASETS.TRAIN"``.

    Returns:
        UnregisteredDatasetError: the message lists close matches, all registered names and how
        to register a dataset from the config.
    """
    registered = sorted(DatasetCatalog.list())
    where = f" (referenced by cfg.{key})" if key else ""
    close = difflib.get_close_matches(name, registered, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnregisteredDatasetError(
        f"Dataset '{name}'{where} is not registered.{hint} Register it with "
        f"cfg.DATASETS.REGISTER_COCO = ['{_COCO_FORMAT}'] or "
        f"cfg.DATASETS.REGISTER_VOC = ['{_VOC_FORMAT}'] (then call register_datasets_from_cfg). "
        f"Registered datasets: {', '.join(registered)}."
    )


def check_datasets_registered(names, key=None):
    """Raise :class:`UnregisteredDatasetError` for the first name that is not registered.

    Args:
        names (str or iterable[str]): dataset names, e.g. ``cfg.DATASETS.TRAIN``.
        key (str or None): the config key the names come from, quoted in the message.
    """
    if isinstance(names, str):
        names = [names]
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            raise unregistered_dataset_error(name, key)


def check_same_classes(train_names, test_names):
    """Raise :class:`DatasetConfigError` if a test dataset's classes differ from training's.

    A model trained on one class list and scored against another is evaluated under the wrong
    contiguous id map: the AP is meaningless although nothing fails. Datasets whose metadata has
    no ``thing_classes`` (yet) are not compared.

    Args:
        train_names (iterable[str]): registered dataset names, e.g. ``cfg.DATASETS.TRAIN``.
        test_names (iterable[str]): registered dataset names, e.g. ``cfg.DATASETS.TEST``.
    """
    known = [
        (key, name, MetadataCatalog.get(name).get("thing_classes", None))
        for key, names in (("DATASETS.TRAIN", train_names), ("DATASETS.TEST", test_names))
        for name in names
    ]
    known = [k for k in known if k[2] is not None]
    if not known:
        return
    ref_key, ref_name, ref_classes = known[0]
    for key, name, classes in known[1:]:
        if list(classes) != list(ref_classes):
            raise DatasetConfigError(
                f"cfg.{key} dataset '{name}' has the classes {list(classes)}, but "
                f"cfg.{ref_key} dataset '{ref_name}' has {list(ref_classes)}: training and "
                "evaluation need one class list (same contiguous ids)."
            )


def _require(path, kind, what, is_dir=False):
    if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
        raise DatasetConfigError(f"{what}: {kind} '{path}' does not exist.")


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
    there are annotations other than crowd regions and degenerate boxes are checked when the
    dataset is first loaded in the process (this parses the json once more than Detectron2 does).

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


# ----------------------------------------------------------------------------------------------
# Pascal VOC
# ----------------------------------------------------------------------------------------------
def _voc_ids(root, split, what):
    split_file = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    _require(split_file, "split file", what)
    with open(split_file) as f:
        # a line may be "ID" or "ID FLAG" (per-class split files); single-id splits are fine
        return [line.split()[0] for line in f if line.strip()]


def _voc_image(root, file_id, what):
    for ext in _IMAGE_EXTENSIONS:
        path = os.path.join(root, "JPEGImages", file_id + ext)
        if os.path.isfile(path):
            return path
    raise DatasetConfigError(
        f"{what}: no image for id '{file_id}' in '{os.path.join(root, 'JPEGImages')}' "
        f"(looked for {file_id}{{{','.join(_IMAGE_EXTENSIONS)}}})."
    )


def _parse_voc_xml(xml_file, what):
    """Return ``((width, height), [(class name, [xmin, ymin, xmax, ymax], difficult), ...])``."""
    if not os.path.isfile(xml_file):
        raise DatasetConfigError(f"{what}: annotation file '{xml_file}' does not exist.")
    try:
        tree = ET.parse(xml_file)
    except (OSError, ET.ParseError) as e:
        raise DatasetConfigError(f"{what}: cannot read annotation '{xml_file}' ({e}).") from None
    try:
        size = (int(tree.findtext("size/width")), int(tree.findtext("size/height")))
        objects = []
        for obj in tree.findall("object"):
            box = obj.find("bndbox")
            xyxy = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            difficult = int(float(obj.findtext("difficult") or 0))
            objects.append((obj.findtext("name").strip(), xyxy, difficult))
    except (TypeError, ValueError, AttributeError):
        raise DatasetConfigError(
            f"{what}: '{xml_file}' is not a valid VOC annotation (it needs size/width, "
            "size/height and, per object, name and bndbox/xmin,ymin,xmax,ymax)."
        ) from None
    return size, objects


def _read_voc_split(root, split, what):
    """Parse a split: list of (image path, xml path, (width, height), objects)."""
    records = []
    for file_id in _voc_ids(root, split, what):
        xml_file = os.path.join(root, "Annotations", file_id + ".xml")
        size, objects = _parse_voc_xml(xml_file, what)
        records.append((_voc_image(root, file_id, what), xml_file, size, objects))
    return records


def _voc_root_classes(root, what):
    """Sorted ``<object><name>`` set over every split of ``root`` (``ImageSets/Main/*.txt``)."""
    split_dir = os.path.join(root, "ImageSets", "Main")
    _require(split_dir, "folder", what, is_dir=True)
    file_ids = set()
    for split_file in sorted(os.listdir(split_dir)):
        if split_file.endswith(".txt"):
            file_ids.update(_voc_ids(root, split_file[: -len(".txt")], what))
    names = set()
    for file_id in sorted(file_ids):
        xml_file = os.path.join(root, "Annotations", file_id + ".xml")
        names.update(obj[0] for obj in _parse_voc_xml(xml_file, what)[1])
    return sorted(names)


def _voc_dicts(records, class_names, what):
    index = {c: i for i, c in enumerate(class_names)}
    dicts = []
    for i, (image_file, xml_file, (width, height), objects) in enumerate(records):
        annotations = []
        for cls, (x0, y0, x1, y1), difficult in objects:
            if cls not in index:
                raise DatasetConfigError(
                    f"{what}: '{xml_file}' has an object of class '{cls}', which is not in "
                    f"the class names {list(class_names)}."
                )
            annotations.append(
                {
                    "category_id": index[cls],
                    "bbox": [x0 - 1.0, y0 - 1.0, x1, y1],
                    "bbox_mode": BoxMode.XYXY_ABS,
                    "difficult": difficult,
                }
            )
        dicts.append(
            {
                "file_name": image_file,
                "image_id": i + 1,
                "height": height,
                "width": width,
                "annotations": annotations,
            }
        )
    return dicts


def load_voc_detection(root, split, class_names, what="VOC dataset"):
    """Load a VOC-layout split as Detectron2 dataset dicts.

    Same conventions as Detectron2's ``load_voc_instances`` (1-based inclusive VOC pixel
    coordinates become ``[xmin - 1, ymin - 1, xmax, ymax]`` in XYXY_ABS; "difficult" objects
    are kept as ordinary instances), which is not used directly because it fails on a split
    with a single id (``np.loadtxt`` returns a 0-d array), assumes ``.jpg`` images and raises
    a bare ``ValueError`` for an unknown class name. Image ids are the 1-based positions in the
    split (integers, as COCO tools expect); each annotation also keeps its ``difficult`` flag.

    Args:
        root (str): VOC root with ``Annotations``, ``JPEGImages`` and ``ImageSets/Main``.
        split (str): split name (``ImageSets/Main/<split>.txt``).
        class_names (list[str]): class names; index = contiguous category id.
        what (str): how to refer to the dataset in error messages.

    Returns:
        list[dict]: dataset dicts with ``file_name``, ``image_id``, ``height``, ``width`` and
        ``annotations``.
    """
    return _voc_dicts(_read_voc_split(root, split, what), class_names, what)


def register_voc_dataset(name, root, split, class_names=None):
    """Register a Pascal-VOC-layout split as dataset ``name`` (evaluator_type "coco").

    The split is parsed now (to validate it) and again when the dataset is loaded. Without
    ``class_names``, ``thing_classes`` is the sorted set of ``<object><name>`` over *every* split
    of the root (all ``ImageSets/Main/*.txt``), so that the train and val splits of one root
    always get the same contiguous id map.
    Detectron2's ``COCOEvaluator`` evaluates it by converting it to COCO json on the fly
    (``output_dir`` is then required).

    Args:
        name (str): dataset name.
        root (str): VOC root with ``Annotations/*.xml``, ``JPEGImages/*`` and
            ``ImageSets/Main/<split>.txt``.
        split (str): split name.
        class_names (list[str] or None): class names, in contiguous id order; default: the
            sorted class names found in all splits of ``root``.

    Returns:
        str: ``name``.
    """
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    what = f"VOC dataset '{name}'"
    _require(root, "VOC root", what, is_dir=True)
    for sub in ("Annotations", "JPEGImages"):
        _require(os.path.join(root, sub), "folder", what, is_dir=True)
    records = _read_voc_split(root, split, what)
    if not records:
        raise DatasetConfigError(f"{what}: split '{split}' of '{root}' lists no image.")
    if class_names is None:
        class_names = _voc_root_classes(root, what)
        if not class_names:
            raise DatasetConfigError(f"{what}: no <object> in the annotations of '{root}'.")
    class_names = list(class_names)
    _voc_dicts(records, class_names, what)  # unknown class names fail now, not at training

    register_once(
        name,
        lambda: load_voc_detection(root, split, class_names, what),
        dirname=root,
        split=split,
        thing_classes=class_names,
        evaluator_type="coco",
    )
    return name


# ----------------------------------------------------------------------------------------------
# From the config
# ----------------------------------------------------------------------------------------------
