"""COCO box evaluation with a selectable COCOeval engine (pycocotools or faster-coco-eval)."""

from .coco import (
    BOX_METRICS,
    COCO_EVAL_BACKENDS,
    DEFAULT_COCO_EVAL_BACKEND,
    SECOCOEvaluator,
    build_coco_evaluator,
    evaluate_coco_json,
)

__all__ = [
    "BOX_METRICS",
    "COCO_EVAL_BACKENDS",
    "DEFAULT_COCO_EVAL_BACKEND",
    "SECOCOEvaluator",
    "build_coco_evaluator",
    "evaluate_coco_json",
]
