"""Register every dataset a config names: ``DATASETS.REGISTER_COCO`` / ``REGISTER_VOC`` entries
(:mod:`~se_detectron.data.coco`, :mod:`~se_detectron.data.voc`) and the bundled synthetic datasets
(:mod:`.synthetic`).
"""

import os

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog

from .coco import register_coco_dataset
from .register import _COCO_FORMAT, _VOC_FORMAT, DatasetConfigError
from .synthetic import register_synthetic_datasets
from .voc import register_voc_dataset

__all__ = ["register_datasets_from_cfg"]


def _parse_entry(entry, key, index, fmt, min_fields, max_fields):
    fields = [f.strip() for f in entry.split(":")] if isinstance(entry, str) else []
    if not (min_fields <= len(fields) <= max_fields) or not all(fields):
        raise DatasetConfigError(
            f"Malformed entry {entry!r} in cfg.{key}[{index}]: expected '{fmt}' "
            "(fields separated by ':', none empty)."
        )
    return fields


def register_datasets_from_cfg(cfg, synthetic=True):
    """Register the datasets listed in ``cfg.DATASETS.REGISTER_COCO`` / ``REGISTER_VOC``.

    Idempotent. Missing keys count as empty lists.

    Args:
        cfg (CfgNode): the config.
        synthetic (bool): also register ``se_synthetic_train`` / ``se_synthetic_val``
            (:func:`~se_detectron.data.register_synthetic_datasets`, default root).

    Returns:
        list[str]: the names of the datasets from the config (and the synthetic ones).
    """
    datasets = cfg.DATASETS if isinstance(cfg, CfgNode) else cfg["DATASETS"]
    for key in ("REGISTER_COCO", "REGISTER_VOC"):
        if not isinstance(datasets.get(key, []), (list, tuple)):
            raise DatasetConfigError(
                f"cfg.DATASETS.{key} must be a list of strings, got {datasets[key]!r}."
            )
    names = []
    for i, entry in enumerate(datasets.get("REGISTER_COCO", [])):
        name, json_file, image_root = _parse_entry(
            entry, "DATASETS.REGISTER_COCO", i, _COCO_FORMAT, 3, 3
        )
        names.append(register_coco_dataset(name, json_file, image_root))
    voc_roots = {}  # root -> (entry index, class names): one id map per root
    scanned = {}  # root -> the classes found in all its splits (scan each root once)
    for i, entry in enumerate(datasets.get("REGISTER_VOC", [])):
        fields = _parse_entry(entry, "DATASETS.REGISTER_VOC", i, _VOC_FORMAT, 3, 4)
        root = os.path.abspath(os.path.expanduser(fields[1]))
        given = None
        if len(fields) == 4:
            given = [c.strip() for c in fields[3].split(",")]
            if not all(given):
                raise DatasetConfigError(
                    f"Malformed class list in cfg.DATASETS.REGISTER_VOC[{i}] {entry!r}: "
                    f"expected '{_VOC_FORMAT}'."
                )
        names.append(register_voc_dataset(fields[0], root, fields[2], given or scanned.get(root)))
        classes = MetadataCatalog.get(fields[0]).thing_classes
        if given is None:
            scanned.setdefault(root, classes)
        first, first_classes = voc_roots.setdefault(root, (i, classes))
        if classes != first_classes:
            raise DatasetConfigError(
                f"cfg.DATASETS.REGISTER_VOC[{i}] {entry!r} gives the VOC root '{root}' the "
                f"classes {classes}, but cfg.DATASETS.REGISTER_VOC[{first}] "
                f"{datasets.REGISTER_VOC[first]!r} gives it {first_classes}: all splits of one "
                "root must share one class list (same ids), so give both entries the same "
                "':CLASS1,CLASS2,...' field or leave it out of both."
            )
    if synthetic:
        names.extend(register_synthetic_datasets())
    return names
