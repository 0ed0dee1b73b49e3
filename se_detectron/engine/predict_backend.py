"""What runs the model in ``se-predict``, what it reads, and the COCO-results file it writes.

* ``--model exported.onnx --backend onnxruntime|openvino|torch`` (:func:`make_predictor`):
  the exported file through :func:`se_detectron.deploy.load`; without ``--model``, Detectron2's
  ``DefaultPredictor`` on ``--config-file`` and ``MODEL.WEIGHTS``.
* inputs (:func:`split_inputs`): image files, folders, glob patterns (``"data/*.jpg"``) and
  video files (``VIDEO_EXTENSIONS``, read frame by frame through OpenCV,
  :func:`predict_video`).
* ``coco_results.json`` (:func:`coco_results`): the detections in COCO's results format.
"""

import glob
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
from detectron2.structures import Instances

from ..deploy import DeployError, load

__all__ = [
    "VIDEO_EXTENSIONS",
    "add_backend_arguments",
    "coco_results",
    "make_predictor",
    "predict_video",
    "split_inputs",
]

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def add_backend_arguments(parser) -> None:
    """``--model``, ``--backend``, ``--precision`` and ``--threads`` of ``se-predict``."""
    parser.add_argument(
        "--model",
        default=None,
        help="an exported .onnx file (se-export-model --format onnx, or its int8 file); its "
        "config comes from the file (--config-file, if given, must describe the same model)",
    )
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino", "torch"),
        default=None,
        help="runtime of --model (default onnxruntime; torch: the PyTorch weights the file "
        "was exported from)",
    )
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=0, help="runtime threads (0: default)")


def make_predictor(cfg, args) -> Tuple[Optional[Callable[[np.ndarray], Instances]], object]:
    """The ``BGR image -> Instances`` function ``args`` asks for, and the config it runs.

    Args:
        cfg: the ``--config-file`` config (None when only ``--model`` is given).
        args: ``se-predict``'s arguments (:func:`add_backend_arguments`).

    Returns:
        ``(predictor, cfg)``: without ``--model``, ``(None, cfg)`` (the caller's
        ``DefaultPredictor``); with it, the file's predictor and config (checked against ``cfg``).
    """
    if args.model is None:
        if args.backend not in (None, "torch"):
            raise DeployError(f"--backend {args.backend} needs --model exported.onnx")
        return None, cfg
    predictor = load(
        args.model, args.backend or "onnxruntime", args.precision, cfg=cfg, threads=args.threads
    )
    if cfg is not None:
        return predictor, cfg
    return predictor, predictor.cfg


def split_inputs(inputs: Iterable[str]) -> Tuple[List[str], List[str]]:
    """Expand glob patterns; separate video files from image files and folders.

    Raises:
        FileNotFoundError: a glob pattern that matches nothing.
    """
    images, videos = [], []
    for item in inputs:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise FileNotFoundError(f"input pattern {item!r} matches no file")
        for path in matches:
            (videos if Path(path).suffix.lower() in VIDEO_EXTENSIONS else images).append(path)
    return images, videos


def coco_results(
    instances: Instances, image_id: int, dataset_ids: Optional[Dict[int, int]] = None
) -> List[Dict]:
    """One image's detections as COCO results (``bbox`` XYWH, ``segmentation`` RLE).

    Args:
        instances: on the CPU, in the image's pixels.
        image_id: the image's id (its position in the run's inputs).
        dataset_ids: contiguous class id -> the dataset's category id (default: the same).
    """
    from detectron2.evaluation.coco_evaluation import instances_to_coco_json

    records = instances_to_coco_json(instances, image_id)
    if dataset_ids:
        for r in records:
            r["category_id"] = dataset_ids.get(r["category_id"], r["category_id"])
    for r in records:
        if "segmentation" in r and isinstance(r["segmentation"].get("counts"), bytes):
            r["segmentation"]["counts"] = r["segmentation"]["counts"].decode("ascii")
    return records


def predict_video(
    predictor: Callable[[np.ndarray], Instances],
    path: str,
    output_dir: str,
    draw: Callable[[np.ndarray, Instances], np.ndarray],
    score_threshold: float,
    first_image_id: int,
    dataset_ids: Optional[Dict[int, int]] = None,
) -> Tuple[List[Dict], int, str]:
    """Detect objects in every frame of a video; write ``<video name>.mp4`` with the drawings.

    Args:
        predictor: ``BGR image -> Instances``.
        path: the video (anything OpenCV's ``VideoCapture`` opens).
        output_dir: where the annotated video goes (written to a temporary name, moved into
            place when complete).
        draw: ``(BGR frame, instances) -> RGB picture`` (the predictor's visualiser).
        score_threshold: detections below are dropped.
        first_image_id: COCO ``image_id`` of the first frame (frames are numbered on).
        dataset_ids: contiguous class id -> dataset category id.

    Returns:
        ``(COCO results of all frames, number of frames, the annotated video's path)``.

    Raises:
        FileNotFoundError: OpenCV cannot open the video.
    """
    import cv2
    from tqdm import tqdm

    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise FileNotFoundError(f"video {path!r}: OpenCV cannot open it")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = os.path.join(output_dir, Path(path).name + ".mp4")
    fd, tmp = tempfile.mkstemp(suffix=".mp4", dir=output_dir)
    os.close(fd)
    writer, results, frames = None, [], 0
    try:
        with tqdm(total=total, desc=Path(path).name, unit="frame", disable=None) as bar:
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                instances = predictor(frame).to("cpu")
                instances = instances[instances.scores >= score_threshold]
                results += coco_results(instances, first_image_id + frames, dataset_ids)
                picture = draw(frame, instances)[:, :, ::-1]
                if writer is None:
                    h, w = picture.shape[:2]
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                writer.write(np.ascontiguousarray(picture))
                frames += 1
                bar.update(1)
        if writer is not None:
            writer.release()
            os.replace(tmp, out_path)
    finally:
        capture.release()
        if os.path.exists(tmp):
            os.remove(tmp)
    return results, frames, out_path
