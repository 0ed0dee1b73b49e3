"""Run a trained detector on image files and draw its detections (``tools/predict.py``).

    se-predict --config-file output/demo/finetune/config.yaml --input datasets/se_synthetic/val \\
        --output output/demo/predictions --opts MODEL.WEIGHTS output/demo/finetune/model_final.pth

Writes one PNG per image (boxes, class names, scores and, for Mask R-CNN, masks; Detectron2's
Visualizer) and ``detections.json`` to ``--output``. A picture's name is the image's path
relative to the inputs' common folder plus ``.png`` (``img0.jpg``, ``img0.png`` and
``sub/img0.jpg`` become ``img0.jpg.png``, ``img0.png.png`` and ``sub/img0.jpg.png``); folders
are searched recursively. An output folder with an earlier run's outputs is refused unless
``--overwrite``. An image that cannot be read is reported and skipped; the exit status is then
1 (0: every image, 2: nothing done, one ``error:`` line).
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.visualizer import Visualizer
from PIL import Image
from pycocotools import mask as mask_util

from ..checkpoint.weights_file import check_weights_file
from ..config import get_se_cfg
from ..data import register_datasets_from_cfg
from ..data.image_io import read_image
from ..errors import SEDetectronError, user_error_status
from ..utils import atomic_write, atomic_write_json
from ..utils.run_dir import check_writable

__all__ = [
    "DETECTIONS_FILE",
    "IMAGE_EXTENSIONS",
    "PredictError",
    "check_output_dir",
    "cli",
    "get_parser",
    "list_images",
    "picture_names",
    "predict_images",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
DETECTIONS_FILE = "detections.json"
PICTURE_SUFFIX = ".png"
# what reading a damaged, foreign or unsupported image raises (PIL: OSError, SyntaxError;
# se_detectron.data.image_io: ValueError; PIL's DecompressionBombError)
_UNREADABLE = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class PredictError(SEDetectronError, ValueError):
    """No weights to run, or an ``--output`` folder that holds an earlier run's outputs or is
    one of the input folders; the message names the option."""


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def list_images(inputs: Iterable[str], skip_dir: Optional[str] = None) -> List[str]:
    """Expand files and folders (their images, recursively, sorted) into image paths.

    Args:
        inputs: image files and folders.
        skip_dir: a folder whose images are not inputs (the output folder, when it lies inside
            an input folder).

    Returns:
        list[str]: each image once, in the order of ``inputs``.

    Raises:
        FileNotFoundError: naming an input that does not exist or a folder without images.
    """
    paths: List[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f)
                for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and f.is_file()
                and not (skip_dir and _inside(str(f), skip_dir))
            )
            if not found:
                raise FileNotFoundError(f"input folder {item!r} has no {IMAGE_EXTENSIONS} images")
            paths.extend(found)
        elif p.is_file():
            paths.append(str(p))
        else:
            raise FileNotFoundError(f"input {item!r}: no such file or folder")
    unique = {os.path.abspath(p): p for p in reversed(paths)}  # the first of duplicates
    return [p for p in paths if unique.get(os.path.abspath(p)) is p]


def picture_names(images: Sequence[str], inputs: Optional[Sequence[str]] = None) -> List[str]:
    """The picture file of each image: its path relative to the inputs' common folder + ``.png``.

    Distinct images get distinct names (``a.jpg`` / ``a.png`` / ``sub/a.jpg`` become
    ``a.jpg.png`` / ``a.png.png`` / ``sub/a.jpg.png``).

    Args:
        images: image paths (:func:`list_images`).
        inputs: the files and folders the images came from; their common folder (a folder
            input itself, a file input's parent) is the root. Default: ``images``.

    Returns:
        list[str]: relative paths, one per image.
    """
    inputs = images if inputs is None else inputs
    roots = [
        os.path.abspath(p) if os.path.isdir(p) else os.path.dirname(os.path.abspath(p))
        for p in inputs
    ]
    if not roots:
        return []
    root = os.path.commonpath(roots)
    return [os.path.relpath(os.path.abspath(p), root) + PICTURE_SUFFIX for p in images]


def _earlier_outputs(output_dir: str, planned: Sequence[str]) -> List[str]:
    """``detections.json`` and the planned pictures that already exist in ``output_dir``."""
    found = [DETECTIONS_FILE] if os.path.isfile(os.path.join(output_dir, DETECTIONS_FILE)) else []
    return found + [n for n in planned if os.path.exists(os.path.join(output_dir, n))]


def _remove_earlier_pictures(output_dir: str) -> int:
    """Delete the pictures the earlier run's ``detections.json`` lists inside ``output_dir``."""
    try:
        with open(os.path.join(output_dir, DETECTIONS_FILE)) as f:
            records = json.load(f)
        pictures = [r["visualization"] for r in records]
    except (OSError, ValueError, TypeError, KeyError):
        return 0  # no (readable) list of an earlier run: nothing known to be ours
    removed = 0
    for picture in pictures:
        if (
            isinstance(picture, str)
            and picture.endswith(PICTURE_SUFFIX)
            and _inside(picture, output_dir)
            and os.path.isfile(picture)
        ):
            os.remove(picture)
            removed += 1
    return removed


def _check_not_an_input(output_dir: str, inputs: Sequence[str]) -> None:
    for item in inputs:
        if os.path.isdir(item) and os.path.abspath(item) == os.path.abspath(output_dir):
            raise PredictError(
                f"--output {output_dir!r} is also an --input folder: the pictures would be "
                "written among the images; choose another --output"
            )


def check_output_dir(
    output_dir: str, planned: Sequence[str], inputs: Sequence[str] = (), overwrite: bool = False
) -> None:
    """Refuse an output folder that would mix or replace outputs without being told to.

    Args:
        output_dir: the ``--output`` folder.
        planned: the picture names this run writes (:func:`picture_names`).
        inputs: the ``--input`` files and folders.
        overwrite: replace an earlier run's outputs (``--overwrite``): the pictures its
            ``detections.json`` lists are removed first, so that the folder holds this run only.

    Raises:
        PredictError: ``output_dir`` is an input folder, or holds earlier outputs and
            ``overwrite`` is False.
        se_detectron.errors.SEDetectronError: ``output_dir`` cannot be written (the training
            tools' ``RunDirError``).
    """
    _check_not_an_input(output_dir, inputs)
    earlier = _earlier_outputs(output_dir, planned)
    if earlier and not overwrite:
        shown = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise PredictError(
            f"--output {output_dir!r} holds the outputs of an earlier run ({shown}): start over "
            "with --overwrite (replaces them), or choose another --output"
        )
    check_writable(output_dir, "--output")
    if earlier:
        removed = _remove_earlier_pictures(output_dir)
        logger.info(f"--overwrite: removed {removed} picture(s) of the earlier run in {output_dir}")


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


def _log_unreadable(path: str, reason: str) -> None:
    logger.warning(f"cannot read image {path!r} ({reason}): skipped")


def predict_images(
    cfg,
    images: List[str],
    output_dir: str,
    score_threshold: float = 0.5,
    metadata_name: Optional[str] = None,
    names: Optional[Sequence[str]] = None,
    on_unreadable: Optional[Callable[[str, str], None]] = None,
) -> List[Dict]:
    """Detect objects in ``images``; write a picture per image and ``detections.json``.

    Images are read with :func:`se_detectron.data.image_io.read_image` (Detectron2's reader;
    16-bit images scaled to 8 bits by their bit depth). An image that cannot be read is
    skipped: ``on_unreadable(path, reason)`` is called and the others go on.

    Args:
        cfg: a frozen config whose ``MODEL.WEIGHTS`` is the trained model.
        images: image file paths.
        output_dir: where the pictures and ``detections.json`` go.
        score_threshold: detections below this score are neither drawn nor listed.
        metadata_name: dataset whose class names label the boxes (default ``DATASETS.TEST[0]``).
        names: each image's picture path relative to ``output_dir`` (default
            :func:`picture_names` of ``images``).
        on_unreadable: called with the path and the reason for an image that cannot be read
            (default: a logged warning).

    Returns:
        One dict per image read: ``{"file_name", "visualization", "detections": [{"bbox"
        (XYXY), "score", "category_id" (contiguous), "category"}]}``; a model with masks adds
        ``"segmentation"`` (COCO RLE of the mask in image pixels) to each detection. The same
        list is written to ``detections.json``.
    """
    names = picture_names(images) if names is None else names
    on_unreadable = on_unreadable or _log_unreadable
    predictor = DefaultPredictor(cfg)
    name = metadata_name or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    metadata = MetadataCatalog.get(name)
    if metadata.get("thing_classes", None) is None and name in DatasetCatalog.list():
        DatasetCatalog.get(name)  # COCO-format datasets learn their class names when loaded
    class_names = metadata.get("thing_classes", None)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for path, picture in zip(images, names):
        try:
            image = read_image(path, format="BGR")  # DefaultPredictor takes BGR
        except _UNREADABLE as e:
            on_unreadable(path, f"{type(e).__name__}: {e}")
            continue
        instances = predictor(image)["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        visualizer = Visualizer(image[:, :, ::-1], metadata, scale=max(1.0, 512 / image.shape[1]))
        drawn = visualizer.draw_instance_predictions(instances).get_image()
        out = os.path.join(output_dir, picture)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        atomic_write(out, lambda f, img=drawn: Image.fromarray(img).save(f, format="PNG"))
        detections = _detections(instances, class_names)
        results.append({"file_name": path, "visualization": out, "detections": detections})
    atomic_write_json(os.path.join(output_dir, DETECTIONS_FILE), results, indent=1)
    return results


def get_parser() -> argparse.ArgumentParser:
    """The command line of ``tools/predict.py`` (``se-predict``)."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Exit status: 0 every image was drawn; 1 some images could not be read (skipped, "
        "listed on stderr; the others were drawn); 2 nothing was done (one 'error:' line).",
    )
    parser.add_argument("--config-file", required=True, help="the model's config file")
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        help="image files and/or folders (searched recursively)",
    )
    parser.add_argument("--output", required=True, help="folder for pictures + detections.json")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier run in --output (else such a folder is refused)",
    )
    parser.add_argument("--max-images", type=int, default=0, help="only the first N images")
    parser.add_argument("--confidence-threshold", type=float, default=0.5)
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs")
    return parser


def _run(args) -> int:
    cfg = get_se_cfg(args.config_file, args.opts)
    if not cfg.MODEL.WEIGHTS:
        raise PredictError("no weights to run: pass --opts MODEL.WEIGHTS path/to/model.pth")
    if "://" not in cfg.MODEL.WEIGHTS:  # a local file: missing, empty or damaged is one line
        check_weights_file(cfg.MODEL.WEIGHTS, "MODEL.WEIGHTS")
    cfg.freeze()
    register_datasets_from_cfg(cfg)
    _check_not_an_input(args.output, args.input)
    images = list_images(args.input, skip_dir=args.output)
    if args.max_images > 0:
        images = images[: args.max_images]
    names = picture_names(images, args.input)
    check_output_dir(args.output, names, args.input, overwrite=args.overwrite)

    unreadable = []

    def report(path, reason):
        unreadable.append(path)
        print(f"warning: cannot read image {path!r} ({reason}): skipped", file=sys.stderr)

    results = predict_images(
        cfg, images, args.output, args.confidence_threshold, names=names, on_unreadable=report
    )
    n = sum(len(r["detections"]) for r in results)
    print(f"{len(results)} images, {n} detections -> {args.output}/ ({DETECTIONS_FILE}, *.png)")
    if unreadable:
        print(
            f"error: {len(unreadable)} of {len(images)} images could not be read and were "
            f"skipped (first: {unreadable[0]!r}); {DETECTIONS_FILE} lists the {len(results)} "
            "others",
            file=sys.stderr,
        )
        return 1
    return 0


def cli(argv=None) -> int:
    """``tools/predict.py`` / ``se-predict``: draw detections; returns the exit status."""
    return user_error_status(_run, get_parser().parse_args(argv))
