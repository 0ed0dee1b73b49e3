"""Datasets: the synthetic shapes dataset, config-driven COCO/VOC registration, a safe mapper.

``import se_detectron`` registers the bundled synthetic datasets (lazily: nothing is generated
before their first ``DatasetCatalog.get``); COCO/VOC datasets from the config are registered by
:func:`register_datasets_from_cfg`.
"""

from .coco import register_coco_dataset
from .from_config import register_datasets_from_cfg
from .mapper import ImageReadError, MaskFormatError, SafeDatasetMapper
from .register import (
    DatasetConfigError,
    UnregisteredDatasetError,
    check_datasets_registered,
    check_same_classes,
    unregistered_dataset_error,
)
from .synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_TRAIN,
    SYNTHETIC_VAL,
    default_synthetic_root,
    generate_synthetic_dataset,
    prepare_dataset,
    register_synthetic_datasets,
)
from .voc import load_voc_detection, register_voc_dataset

__all__ = [
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_TRAIN",
    "SYNTHETIC_VAL",
    "DatasetConfigError",
    "ImageReadError",
    "MaskFormatError",
    "SafeDatasetMapper",
    "UnregisteredDatasetError",
    "check_datasets_registered",
    "check_same_classes",
    "default_synthetic_root",
    "generate_synthetic_dataset",
    "load_voc_detection",
    "prepare_dataset",
    "register_coco_dataset",
    "register_datasets_from_cfg",
    "register_synthetic_datasets",
    "register_voc_dataset",
    "unregistered_dataset_error",
]
