"""Pascal VOC folders (``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/``) as Detectron2
datasets evaluated with the COCO evaluator; every problem is a
:class:`~se_detectron.data.register.DatasetConfigError` naming the file or folder."""

import os
import xml.etree.ElementTree as ET

from detectron2.structures import BoxMode

from .register import DatasetConfigError, _require, register_once

__all__ = ["load_voc_detection", "register_voc_dataset"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")


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
