"""Run a trained detector on image files and draw its detections (``tools/predict.py``).

    se-predict --config-file output/demo/finetune/config.yaml --input datasets/se_synthetic/val \\
        --output output/demo/predictions --opts MODEL.WEIGHTS output/demo/finetune/model_final.pth

    se-predict --model export/model.onnx --backend openvino --input "images/*.jpg" video.mp4 \
        --output predictions

Writes one PNG per image (boxes, class names, scores and, for Mask R-CNN, masks; Detectron2's
Visualizer), one annotated MP4 per video, ``detections.json`` and ``coco_results.json`` (COCO
results format, ``image_id`` = position in the inputs, video frames numbered on) to ``--output``.
The model runs in PyTorch (``DefaultPredictor``) or, with ``--model``, as an exported file in
ONNX Runtime, OpenVINO or PyTorch (:mod:`se_detectron.engine.predict_backend`).
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from pycocotools import mask as mask_util
from tqdm import tqdm

from ..config import get_se_cfg
from ..data import register_datasets_from_cfg
from ..errors import SEDetectronError
from ..utils import atomic_write, atomic_write_json
from .predict_backend import (
    add_backend_arguments,
    coco_results,
    make_predictor,
    predict_video,
    split_inputs,
)

__all__ = ["IMAGE_EXTENSIONS", "cli", "get_parser", "list_images", "predict_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def list_images(inputs: Iterable[str]) -> List[str]:
    """Expand files and folders (their images, sorted) into a list of image paths.

    Raises:
        FileNotFoundError: naming an input that does not exist or a folder without images.
    """
    paths: List[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(str(f) for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise FileNotFoundError(f"input folder {item!r} has no {IMAGE_EXTENSIONS} images")
            paths.extend(found)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise FileNotFoundError(f"input {item!r}: no such file or folder")
    return paths


def _rle(mask) -> Dict:
    rle = mask_util.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _detections(instances, class_names: Optional[List[str]]) -> List[Dict]:
    """The JSON records of one image's detections (``instances`` on the CPU)."""
    records = []
    for k in range(len(instances)):
        cls = int(instances.pred_classes[k])
        record = {
            "bbox": [round(float(v), 2) for v in instances.pred_boxes.tensor[k]],
            "score": round(float(instances.scores[k]), 4),
            "category_id": cls,
            "category": class_names[cls] if class_names else str(cls),
        }
        if instances.has("pred_masks"):
            record["segmentation"] = _rle(instances.pred_masks[k])
        records.append(record)
    return records


def predict_images(
    cfg,
    images: List[str],
    output_dir: str,
    score_threshold: float = 0.5,
    metadata_name: Optional[str] = None,
    predictor=None,
    videos: Sequence[str] = (),
) -> List[Dict]:
    """Detect objects in ``images``; write a picture per image and ``detections.json``.

    Args:
        cfg: a frozen config whose ``MODEL.WEIGHTS`` is the trained model.
        images: image file paths.
        output_dir: where ``<image name>.png`` pictures and ``detections.json`` go.
        score_threshold: detections below this score are neither drawn nor listed.
        metadata_name: dataset whose class names label the boxes (default ``DATASETS.TEST[0]``).
        predictor: ``BGR image -> Instances`` (default: Detectron2's ``DefaultPredictor(cfg)``;
            see :func:`se_detectron.engine.predict_backend.make_predictor`).
        videos: video files, predicted frame by frame after the images.

    Returns:
        One dict per image: ``{"file_name", "visualization", "detections": [{"bbox" (XYXY),
        "score", "category_id" (contiguous), "category"}]}``; a model with masks adds
        ``"segmentation"`` (COCO RLE of the mask in image pixels) to each detection.
    """
    if predictor is None:
        default = DefaultPredictor(cfg)

        def predictor(image):
            return default(image)["instances"]

    name = metadata_name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # COCO-format datasets learn their class names when loaded
    names = metadata.get("thing_classes", None)
    os.makedirs(output_dir, exist_ok=True)
    ids = {v: k for k, v in metadata.get("thing_dataset_id_to_contiguous_id", {}).items()}

    def draw(image, instances):
        visualizer = Visualizer(image[:, :, ::-1], metadata, scale=max(1.0, 512 / image.shape[1]))
        return visualizer.draw_instance_predictions(instances).get_image()

    results, coco = [], []
    for path in tqdm(images, desc="predict", unit="image"):
        image = read_image(path, format="BGR")  # DefaultPredictor takes BGR, converts per config
        instances = predictor(image).to("cpu")
        instances = instances[instances.scores >= score_threshold]
        drawn = draw(image, instances)
        out = os.path.join(output_dir, Path(path).stem + ".png")
        atomic_write(out, lambda f, img=drawn: Image.fromarray(img).save(f, format="PNG"))
        coco += coco_results(instances, len(results), ids)
        results.append(
            {"file_name": path, "visualization": out, "detections": _detections(instances, names)}
        )
    image_id = len(results)
    for path in videos:
        records, frames = predict_video(
            predictor, path, output_dir, draw, score_threshold, image_id, ids
        )
        coco += records
        results.append({"file_name": path, "first_image_id": image_id, "frames": frames})
        image_id += frames
    atomic_write_json(os.path.join(output_dir, "detections.json"), results, indent=1)
    atomic_write_json(os.path.join(output_dir, "coco_results.json"), coco)
    return results


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/predict.py`` (``se-predict``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config-file", default=None, help="the model's config file (optional with --model)"
    )
    parser.add_argument(
        "--input", nargs="+", required=True, help="image files, folders, globs, video files"
    )
    parser.add_argument("--output", required=True, help="folder for pictures + detections.json")
    parser.add_argument("--max-images", type=int, default=0, help="only the first N images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs")
    add_backend_arguments(parser)
    return parser


def cli(argv=None) -> int:
    """``tools/predict.py`` / ``se-predict``: draw detections; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        if args.config_file is None and args.model is None:
            print("error: pass --config-file (PyTorch weights) or --model", file=sys.stderr)
            return 2
        cfg = get_se_cfg(args.config_file, args.opts) if args.config_file else None
        if cfg is not None and args.model is None and not cfg.MODEL.WEIGHTS:
            print(
                "error: no weights to run: pass --opts MODEL.WEIGHTS path/to/model.pth",
                file=sys.stderr,
            )
            return 2
        image_inputs, videos = split_inputs(args.input)
        images = list_images(image_inputs) if image_inputs else []
        if args.max_images > 0:
            images = images[: args.max_images]
        predictor, cfg = make_predictor(cfg, args)
        cfg.freeze()
        register_datasets_from_cfg(cfg)
        results = predict_images(
            cfg, images, args.output, args.confidence_threshold, predictor=predictor, videos=videos
        )
    except (FileNotFoundError, SEDetectronError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(len(r.get("detections", ())) for r in results)
    print(
        f"{len(results)} inputs, {n} image detections -> {args.output}/ (detections.json, "
        "coco_results.json, *.png, *.mp4)"
    )
    return 0
