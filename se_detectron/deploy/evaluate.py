"""COCO AP of an exported detector, through Detectron2's own evaluation loop.

The exported file's predictor (:func:`se_detectron.deploy.load`) stands in for the model in
``detectron2.evaluation.inference_on_dataset``, fed by ``build_detection_test_loader`` (the
same test-time resize as training-time evaluation) and scored by the evaluator the dataset's
``evaluator_type`` selects (:func:`se_detectron.evaluation.build_evaluator`: COCO AP with the
project's COCO backend), exactly as ``se-train-net --eval-only`` scores the PyTorch model.
"""

import logging
import os
from typing import Dict, Optional

from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import inference_on_dataset

from ..data import register_datasets_from_cfg
from ..evaluation import build_evaluator
from .predictor import DeployedPredictor
from .runtimes import DeployError

__all__ = ["evaluate_predictor"]

logger = logging.getLogger(__name__)


def evaluate_predictor(
    predictor: DeployedPredictor,
    dataset_name: str,
    output_dir: str,
    cfg=None,
) -> Dict[str, Dict[str, float]]:
    """Evaluate ``predictor`` on a registered dataset (COCO AP for COCO-format datasets).

    Args:
        predictor: from :func:`se_detectron.deploy.load`.
        dataset_name: a dataset registered in ``DatasetCatalog`` (the config's
            ``DATASETS.REGISTER_COCO``/``REGISTER_VOC`` ones and the synthetic ones are
            registered here).
        output_dir: where the evaluator writes ``coco_instances_results.json``.
        cfg: the config holding the evaluator settings and dataset registrations (default: the
            predictor's, i.e. the exported file's).

    Returns:
        Detectron2's results, e.g. ``{"bbox": {"AP": ..., "AP50": ..., ...}}``.

    Raises:
        DeployError: the dataset is not registered.
    """
    cfg = (cfg if cfg is not None else predictor.cfg).clone()
    cfg.defrost()
    # the data loader must resize as the exported file expects (INPUT.* of the file)
    for key in ("FORMAT", "MIN_SIZE_TEST", "MAX_SIZE_TEST"):
        cfg.INPUT[key] = predictor.cfg.INPUT[key]
    cfg.DATALOADER.NUM_WORKERS = 0
    register_datasets_from_cfg(cfg)
    if dataset_name not in DatasetCatalog.list():
        raise DeployError(
            f"--dataset {dataset_name!r} is not registered (add it to DATASETS.REGISTER_COCO of "
            "--config-file; registered: " + ", ".join(sorted(DatasetCatalog.list())[:8]) + ", ...)"
        )
    loader = build_detection_test_loader(cfg, dataset_name)
    os.makedirs(output_dir, exist_ok=True)
    evaluator = build_evaluator(cfg, dataset_name, output_dir)
    logger.info(
        f"evaluating {predictor.backend} ({predictor.precision}) on {dataset_name} -> {output_dir}"
    )
    results = inference_on_dataset(predictor.forward, loader, evaluator)
    return dict(results) if results else {}


def first_metric(results: Dict, task: str = "bbox", metric: str = "AP") -> Optional[float]:
    """``results[task][metric]`` or None."""
    return results.get(task, {}).get(metric)
