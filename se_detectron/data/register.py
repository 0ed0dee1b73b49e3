"""The dataset catalogue: registering a name once, and the errors for names a config gets wrong.

COCO json files are registered by :mod:`~se_detectron.data.coco`, Pascal VOC folders by
:mod:`~se_detectron.data.voc`; the config entries that name them are parsed by
:mod:`.from_config`.

User datasets are registered from the config, without code. Add the keys with
:func:`se_detectron.add_se_config`, list the datasets in the config::

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
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..errors import SEDetectronError

__all__ = [
    "DatasetConfigError",
    "UnregisteredDatasetError",
    "check_datasets_registered",
    "check_same_classes",
    "register_once",
    "unregistered_dataset_error",
]

_COCO_FORMAT = "NAME:ANNOTATION_JSON:IMAGE_ROOT"
_VOC_FORMAT = "NAME:VOC_ROOT:SPLIT[:CLASS1,CLASS2,...]"


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
