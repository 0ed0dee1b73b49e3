"""COCO evaluation (boxes, masks, keypoints) with a choice of COCOeval engine.

Detectron2's :class:`~detectron2.evaluation.COCOEvaluator` runs pycocotools' official
``COCOeval``, or Detectron2's own C++ ``COCOeval_opt`` when its compiled ``detectron2._C`` loads
(it does not on CPython 3.11: the evaluator then logs "Fast COCO eval is not built" and falls back
to the official ``COCOeval``). :class:`SECOCOEvaluator` keeps everything else Detectron2 does
(result dumps, per-category AP table, results dict) and only swaps the engine:

* ``"pycocotools"``: the official ``pycocotools.cocoeval.COCOeval``.
* ``"faster_coco_eval"``: ``faster_coco_eval.COCOeval_faster`` (C++, about 9x faster on CPU). It
  matches pycocotools to within one float64 ulp, not bit for bit: it computes precision as
  ``tp / (tp + fp)`` where pycocotools uses ``tp / (tp + fp + eps)``, so a precision that
  pycocotools reports as ``1 - 2.2e-16`` is ``1.0`` here. AP values can differ by ~1e-15 (on
  the 0-100 scale). The default stays the official engine for that reason.
"""

import contextlib
import copy
import io
import json
import math
import os
import threading

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation import coco_evaluation as _d2_coco

from ..config import DEFAULT_COCO_EVAL_BACKEND
from ..utils import atomic_write_json

__all__ = [
    "BOX_METRICS",
    "COCO_EVAL_BACKENDS",
    "DEFAULT_COCO_EVAL_BACKEND",
    "SECOCOEvaluator",
    "build_coco_evaluator",
    "coco_tasks",
    "evaluate_coco_json",
]

#: The COCOeval engines ``TEST.COCO_EVAL_BACKEND`` selects from.
COCO_EVAL_BACKENDS = ("faster_coco_eval", "pycocotools")
BOX_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
# results key -> prefix of the metrics file SECOCOEvaluator writes for it
_AP_FILES = {"bbox": "box_ap", "segm": "mask_ap", "keypoints": "keypoint_ap"}

# Guards the temporary engine swap in Detectron2's coco_evaluation module.
_SWAP_LOCK = threading.Lock()


def _check_backend(backend, key="backend"):
    if backend not in COCO_EVAL_BACKENDS:
        raise ValueError(
            f"Unknown COCO evaluation backend {key}={backend!r}; expected one of "
            f"{', '.join(repr(b) for b in COCO_EVAL_BACKENDS)}."
        )
    return backend


def _cocoeval_class(backend):
    if _check_backend(backend) == "faster_coco_eval":
        from faster_coco_eval import COCOeval_faster

        return COCOeval_faster
    from pycocotools.cocoeval import COCOeval

    return COCOeval


@contextlib.contextmanager
def _detectron2_uses(cocoeval_cls):
    """Make Detectron2's ``COCOeval_opt`` and ``COCOevalMaxDets`` build ``cocoeval_cls``.

    Keypoint evaluation keeps Detectron2's classes: ``COCOeval_faster`` needs the keypoint index
    of faster_coco_eval's own ``COCO``, not the pycocotools ``COCO`` Detectron2 loads.
    """
    names = ("COCOeval_opt", "COCOevalMaxDets")
    with _SWAP_LOCK:
        saved = {name: getattr(_d2_coco, name) for name in names}

        def engine(fallback):
            def build(coco_gt, coco_dt, iou_type):
                cls = fallback if iou_type == "keypoints" else cocoeval_cls
                return cls(coco_gt, coco_dt, iou_type)

            return build

        try:
            for name in names:
                setattr(_d2_coco, name, engine(saved[name]))
            yield
        finally:
            for name, value in saved.items():
                setattr(_d2_coco, name, value)


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


class SECOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` with a selectable COCOeval engine and AP JSON dumps.

    Everything but the engine is Detectron2's: ``coco_instances_results.json`` and
    ``instances_predictions.pth`` in ``output_dir``, the per-category AP table in the log and the
    results dict (``{"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"...},
    "segm": {...}, "keypoints": {...}}`` for the evaluated tasks, 0-100, NaN when undefined).
    After evaluation each task's metrics are also written atomically to
    ``<output_dir>/box_ap_<dataset_name>.json`` (``bbox``), ``mask_ap_<dataset_name>.json``
    (``segm``) and ``keypoint_ap_<dataset_name>.json`` as ``{"dataset", "backend", "<task>":
    {...}}`` with NaN stored as ``null``.

    The ``"faster_coco_eval"`` engine is plugged in by swapping the classes Detectron2's
    ``coco_evaluation`` module instantiates for the duration of ``_eval_predictions``, under
    a lock; keypoints always use Detectron2's engine.
    """

    def __init__(
        self,
        dataset_name,
        tasks=("bbox",),
        distributed=True,
        output_dir=None,
        *,
        backend=DEFAULT_COCO_EVAL_BACKEND,
        **kwargs,
    ):
        """Create the evaluator.

        Args:
            dataset_name (str): a registered dataset with COCO-format metadata (``json_file``) or
                in Detectron2's standard format.
            tasks (tuple[str] or None): tasks to evaluate, ``("bbox",)`` by default; None infers
                them from the predictions, as in Detectron2.
            distributed (bool): gather predictions from all ranks and evaluate on the main one.
            output_dir (str or None): where to dump predictions and ``box_ap_<dataset>.json``.
            backend (str): COCOeval engine, one of :data:`COCO_EVAL_BACKENDS`.
            **kwargs: other keyword arguments of Detectron2's ``COCOEvaluator``
                (``max_dets_per_image``, ``kpt_oks_sigmas``, ``allow_cached_coco``); use
                ``backend`` instead of ``use_fast_impl``.

        Raises:
            ValueError: if ``backend`` is not one of :data:`COCO_EVAL_BACKENDS`.
        """
        self._backend = _check_backend(backend)
        if "use_fast_impl" in kwargs:
            raise TypeError("SECOCOEvaluator selects its engine with backend=, not use_fast_impl=")
        super().__init__(
            dataset_name, tasks, distributed, output_dir, use_fast_impl=False, **kwargs
        )
        self._dataset_name = dataset_name
        # Detectron2 picks its COCOeval_opt (swapped in _eval_predictions) when this is set.
        self._use_fast_impl = self._backend != "pycocotools"

    @property
    def backend(self):
        """str: the COCOeval engine, one of :data:`COCO_EVAL_BACKENDS`."""
        return self._backend

    def _eval_predictions(self, predictions, img_ids=None):
        self._logger.info(f"COCO evaluation backend: {self._backend}")
        if self._backend == "pycocotools":
            return super()._eval_predictions(predictions, img_ids=img_ids)
        with _detectron2_uses(_cocoeval_class(self._backend)):
            return super()._eval_predictions(predictions, img_ids=img_ids)

    def evaluate(self, img_ids=None):
        """Run Detectron2's evaluation, then write each task's ``*_ap_<dataset_name>.json``.

        Args:
            img_ids (list[int] or None): image ids to evaluate on; None for the whole dataset.

        Returns:
            dict: Detectron2's results, e.g. ``{"bbox": {"AP": ..., "AP-person": ...}}``; empty
            on non-main ranks.
        """
        results = super().evaluate(img_ids=img_ids)
        if not self._output_dir:
            return results
        safe_name = self._dataset_name.replace(os.sep, "_")
        for task, prefix in _AP_FILES.items():
            if task not in results:
                continue
            path = os.path.join(self._output_dir, f"{prefix}_{safe_name}.json")
            metrics = {k: _json_number(v) for k, v in results[task].items()}
            data = {"dataset": self._dataset_name, "backend": self._backend, task: metrics}
            atomic_write_json(path, data, indent=2, allow_nan=False)
            self._logger.info(f"{task} AP written to {path}")
        return results


def _load_json(obj):
    if isinstance(obj, (str, os.PathLike)):
        with open(obj) as f:
            return json.load(f)
    return copy.deepcopy(obj)  # COCO.loadRes / COCOeval annotate the dicts in place


def evaluate_coco_json(gt_json, results_json, backend=DEFAULT_COCO_EVAL_BACKEND, iou_type="bbox"):
    """Evaluate COCO-format box or mask detections against COCO ground truth.

    Runs the same pipeline as :class:`SECOCOEvaluator` (pycocotools ``COCO`` + ``loadRes``,
    Detectron2's ``_evaluate_predictions_on_coco`` with the chosen engine) and returns the same
    keys as its ``results["bbox"]`` (or ``results["segm"]``).

    Args:
        gt_json (str or os.PathLike or dict): COCO ground truth file, or its loaded dict.
        results_json (str or os.PathLike or list[dict]): COCO results file (e.g.
            ``coco_instances_results.json``), or its loaded list; ``category_id`` are dataset ids.
        backend (str): COCOeval engine, one of :data:`COCO_EVAL_BACKENDS`.
        iou_type (str): ``"bbox"`` (boxes) or ``"segm"`` (masks: results need ``segmentation``).

    Returns:
        dict[str, float]: ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` and, with more
        than one category, ``AP-<category name>``; 0-100, NaN when undefined. Only the first six
        (all NaN) when there are no detections.

    Raises:
        ValueError: if ``backend`` is not one of :data:`COCO_EVAL_BACKENDS` or ``iou_type``
            is neither ``"bbox"`` nor ``"segm"``.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type={iou_type!r}: expected 'bbox' or 'segm'")
    cocoeval_cls = _cocoeval_class(backend)
    gt, detections = _load_json(gt_json), _load_json(results_json)
    if not detections:
        return {name: float("nan") for name in BOX_METRICS}

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_eval = _d2_coco._evaluate_predictions_on_coco(
            coco_gt, detections, iou_type, cocoeval_fn=cocoeval_cls
        )

    stats = coco_eval.stats
    results = {
        name: float(stats[i] * 100) if stats[i] >= 0 else float("nan")
        for i, name in enumerate(BOX_METRICS)
    }
    categories = sorted(gt["categories"], key=lambda c: c["id"])
    if len(categories) > 1:
        # precision: [IoU thr, recall thr, category, area range ("all" first), maxDets (100 last)]
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        for k, category in enumerate(categories):
            valid = precision[:, :, k][precision[:, :, k] > -1]
            ap = float(valid.mean() * 100) if valid.size else float("nan")
            results[f"AP-{category['name']}"] = ap
    return results


def coco_tasks(cfg):
    """The COCO tasks a model configured by ``cfg`` predicts.

    Args:
        cfg (CfgNode): a Detectron2 config.

    Returns:
        tuple[str]: ``("bbox",)`` plus ``"segm"`` (``MODEL.MASK_ON``) and ``"keypoints"``
        (``MODEL.KEYPOINT_ON``).
    """
    tasks = ["bbox"]
    if cfg.MODEL.MASK_ON:
        tasks.append("segm")
    if cfg.MODEL.KEYPOINT_ON:
        tasks.append("keypoints")
    return tuple(tasks)


def build_coco_evaluator(cfg, dataset_name, output_dir=None):
    """The :class:`SECOCOEvaluator` for the tasks of ``cfg``'s model (:func:`coco_tasks`).

    The engine is ``cfg.TEST.COCO_EVAL_BACKEND``; ``TEST.KEYPOINT_OKS_SIGMAS`` is passed on
    (empty: COCO's person sigmas). AP uses COCO's 100 detections per image, as Detectron2's
    ``tools/train_net.py`` does.

    Args:
        cfg (CfgNode): a config with :func:`se_detectron.add_se_config` applied.
        dataset_name (str): the registered dataset to evaluate.
        output_dir (str or None): where the evaluator writes its files.

    Returns:
        SECOCOEvaluator: the evaluator.

    Raises:
        KeyError: if the config has no ``TEST.COCO_EVAL_BACKEND``.
        ValueError: if ``TEST.COCO_EVAL_BACKEND`` is not one of :data:`COCO_EVAL_BACKENDS`.
    """
    if "COCO_EVAL_BACKEND" not in cfg.TEST:
        raise KeyError(
            "cfg.TEST.COCO_EVAL_BACKEND is missing: call "
            "se_detectron.add_se_config(cfg) before merging config files."
        )
    backend = _check_backend(cfg.TEST.COCO_EVAL_BACKEND, key="cfg.TEST.COCO_EVAL_BACKEND")
    return SECOCOEvaluator(
        dataset_name,
        tasks=coco_tasks(cfg),
        output_dir=output_dir,
        backend=backend,
        kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
    )
