"""Evaluators chosen by the dataset's ``evaluator_type``, as Detectron2's ``tools/train_net.py``.

Detectron2 picks evaluators in its training script, not in the library; this module gives the
same choice one home so that ``SETrainer`` and the tools share it:

=====================  =======================================================================
``evaluator_type``     evaluators
=====================  =======================================================================
``coco``               :class:`~se_detectron.evaluation.SECOCOEvaluator`: ``bbox``, plus
                       ``segm`` with ``MODEL.MASK_ON`` and ``keypoints`` with
                       ``MODEL.KEYPOINT_ON``
``coco_panoptic_seg``  the COCO evaluator above, ``SemSegEvaluator`` and
                       ``COCOPanopticEvaluator`` (PQ)
``sem_seg``            ``SemSegEvaluator``
``pascal_voc``         ``PascalVOCDetectionEvaluator`` (VOC2007 11-point and COCO-style AP)
``lvis``               ``LVISEvaluator``
``cityscapes_*``       ``CityscapesInstanceEvaluator`` / ``CityscapesSemSegEvaluator``
=====================  =======================================================================
"""

import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
    SemSegEvaluator,
)

from ..errors import SEDetectronError
from .coco import build_coco_evaluator

__all__ = ["EVALUATOR_TYPES", "EvaluatorConfigError", "build_evaluator"]

#: The dataset ``evaluator_type`` values :func:`build_evaluator` knows.
EVALUATOR_TYPES = (
    "coco",
    "coco_panoptic_seg",
    "sem_seg",
    "pascal_voc",
    "lvis",
    "cityscapes_instance",
    "cityscapes_sem_seg",
)


class EvaluatorConfigError(SEDetectronError, ValueError):
    """A dataset has no (or an unknown) ``evaluator_type``, or the config lacks a needed key."""


def build_evaluator(cfg, dataset_name, output_dir=None):
    """The evaluator(s) for ``dataset_name``, chosen by its metadata's ``evaluator_type``.

    Args:
        cfg (CfgNode): a config with :func:`se_detectron.add_se_config` applied.
        dataset_name (str): a registered dataset.
        output_dir (str or None): where the evaluators write their files (default
            ``<OUTPUT_DIR>/inference``).

    Returns:
        DatasetEvaluator: one evaluator, or ``DatasetEvaluators`` when the type needs several.

    Raises:
        EvaluatorConfigError: naming the dataset and its ``evaluator_type`` when there is none
            or it is not one of :data:`EVALUATOR_TYPES`.
        KeyError: if a COCO dataset is evaluated and ``TEST.COCO_EVAL_BACKEND`` is missing.
    """
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    evaluators = []
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        evaluators.append(build_coco_evaluator(cfg, dataset_name, output_dir))
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_dir))
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_dir))
    if evaluator_type == "pascal_voc":
        evaluators.append(PascalVOCDetectionEvaluator(dataset_name))
    if evaluator_type == "lvis":
        evaluators.append(LVISEvaluator(dataset_name, output_dir=output_dir))
    if evaluator_type == "cityscapes_instance":
        evaluators.append(CityscapesInstanceEvaluator(dataset_name))
    if evaluator_type == "cityscapes_sem_seg":
        evaluators.append(CityscapesSemSegEvaluator(dataset_name))
    if not evaluators:
        raise EvaluatorConfigError(
            f"Dataset {dataset_name!r} has evaluator_type={evaluator_type!r} in its metadata; "
            f"se_detectron evaluates {', '.join(EVALUATOR_TYPES)}. Register it with one of "
            "them (MetadataCatalog.get(name).evaluator_type), or set TEST.EVAL_PERIOD 0 and "
            "DATASETS.TEST () to train without evaluation."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
