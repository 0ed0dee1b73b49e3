"""Evaluation: evaluators by the dataset's ``evaluator_type``; COCO boxes, masks and keypoints
with a selectable COCOeval engine (pycocotools or faster-coco-eval)."""

from .build import EVALUATOR_TYPES, EvaluatorConfigError, build_evaluator
from .coco import (
    BOX_METRICS,
    COCO_EVAL_BACKENDS,
    DEFAULT_COCO_EVAL_BACKEND,
    SECOCOEvaluator,
    build_coco_evaluator,
    coco_tasks,
    evaluate_coco_json,
)

__all__ = [
    "BOX_METRICS",
    "COCO_EVAL_BACKENDS",
    "DEFAULT_COCO_EVAL_BACKEND",
    "EVALUATOR_TYPES",
    "EvaluatorConfigError",
    "SECOCOEvaluator",
    "build_coco_evaluator",
    "build_evaluator",
    "coco_tasks",
    "evaluate_coco_json",
]
