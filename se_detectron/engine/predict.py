"""Run a trained detector on image files and draw its detections (``tools/predict.py``).

    se-predict --config-file output/demo/finetune/config.yaml --input datasets/se_synthetic/val \\
        --output output/demo/predictions --opts MODEL.WEIGHTS output/demo/finetune/model_final.pth

Writes one PNG per image (boxes, class names, scores and, for Mask R-CNN, masks; Detectron2's
Visualizer) and ``detections.json`` to ``--output``.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from pycocotools import mask as mask_util

from ..config import get_se_cfg
from ..data import register_datasets_from_cfg
from ..errors import SEDetectronError
from ..utils import atomic_write, atomic_write_json

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
) -> List[Dict]:
    """Detect objects in ``images``; write a picture per image and ``detections.json``.

    Args:
        cfg: a frozen config whose ``MODEL.WEIGHTS`` is the trained model.
        images: image file paths.
        output_dir: where ``<image name>.png`` pictures and ``detections.json`` go.
        score_threshold: detections below this score are neither drawn nor listed.
        metadata_name: dataset whose class names label the boxes (default ``DATASETS.TEST[0]``).

    Returns:
        One dict per image: ``{"file_name", "visualization", "detections": [{"bbox" (XYXY),
        "score", "category_id" (contiguous), "category"}]}``; a model with masks adds
        ``"segmentation"`` (COCO RLE of the mask in image pixels) to each detection.
    """
    predictor = DefaultPredictor(cfg)
    name = metadata_name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # COCO-format datasets learn their class names when loaded
    names = metadata.get("thing_classes", None)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for path in images:
        image = read_image(path, format="BGR")  # DefaultPredictor takes BGR, converts per config
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        visualizer = Visualizer(image[:, :, ::-1], metadata, scale=max(1.0, 512 / image.shape[1]))
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        out = os.path.join(output_dir, Path(path).stem + ".png")
        atomic_write(out, lambda f, img=drawn: Image.fromarray(img).save(f, format="PNG"))
        results.append(
            {"file_name": path, "visualization": out, "detections": _detections(instances, names)}
        )
    atomic_write_json(os.path.join(output_dir, "detections.json"), results, indent=1)
    return results


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/predict.py`` (``se-predict``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", required=True, help="the model's config file")
    parser.add_argument("--input", nargs="+", required=True, help="image files and/or folders")
    parser.add_argument("--output", required=True, help="folder for pictures + detections.json")
    parser.add_argument("--max-images", type=int, default=0, help="only the first N images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs")
    return parser


def cli(argv=None) -> int:
    """``tools/predict.py`` / ``se-predict``: draw detections; returns the exit status."""
    args = get_parser().parse_args(argv)
    try:
        cfg = get_se_cfg(args.config_file, args.opts)
        if not cfg.MODEL.WEIGHTS:
            print(
                "error: no weights to run: pass --opts MODEL.WEIGHTS path/to/model.pth",
                file=sys.stderr,
            )
            return 2
        cfg.freeze()
        register_datasets_from_cfg(cfg)
        images = list_images(args.input)
        if args.max_images > 0:
            images = images[: args.max_images]
        results = predict_images(cfg, images, args.output, args.confidence_threshold)
    except (FileNotFoundError, SEDetectronError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(len(r["detections"]) for r in results)
    print(f"{len(results)} images, {n} detections -> {args.output}/ (detections.json, *.png)")
    return 0
