"""An ImageNet-layout classification set cut from the synthetic detection set's *train* split.

The demo pretrains its SE trunk the way COCO users get theirs (an ImageNet classifier, converted
and fine-tuned), but nothing can be downloaded here, so the classification images are object
crops from ``se_synthetic_train``: one square crop per annotated shape, centred on its box with
some context, plus crops of background (squares that overlap no shape much) as a sixth class, so
that the trunk also learns what is *not* an object::

    ROOT/train/<class>/<image id>_<n>.png     ROOT/val/<class>/<image id>_<n>.png
    ROOT/manifest.json                         (parameters and per-class counts, written last)

``val`` holds the crops of a held-out tail of the *train* images (``val_fraction``): the
classifier's held-out accuracy is measured on images it never trained on, and the detection val
split (``se_synthetic_val``) is never read. Writing is deterministic, idempotent (a folder whose
manifest has the same parameters is reused) and atomic (built beside ``ROOT``, renamed into place).
"""

import json
import os
import shutil
import tempfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from ..utils.atomic import publish_directory, read_manifest
from .synthetic import SYNTHETIC_CLASSES, default_synthetic_root, generate_synthetic_dataset

__all__ = [
    "BACKGROUND_CLASS",
    "SYNTHETIC_CROPS_NAME",
    "default_synthetic_crops_root",
    "synthetic_crops_manifest",
    "write_synthetic_crops",
]

#: The value of ``tools/pretrain_imagenet.py --data-path`` that selects this data set.
SYNTHETIC_CROPS_NAME = "synthetic-crops"
#: Folder name of the background class.
BACKGROUND_CLASS = "background"
_FORMAT_VERSION = 1
_MANIFEST = "manifest.json"


def default_synthetic_crops_root() -> str:
    """``$DETECTRON2_DATASETS/se_synthetic_crops`` (``DETECTRON2_DATASETS`` defaults to
    ``datasets``), as an absolute path."""
    base = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    return os.path.abspath(os.path.join(base, "se_synthetic_crops"))


def synthetic_crops_manifest(
    crop_size: int = 64,
    context: float = 1.5,
    val_fraction: float = 0.1,
    background_per_image: int = 1,
    seed: int = 0,
) -> Dict[str, Any]:
    """The parameters that define a crops folder, as stored in its ``manifest.json``.

    Args:
        crop_size: side of the written square RGB images.
        context: side of a crop relative to the longer side of its box.
        val_fraction: fraction of the train images (the last ones) whose crops form ``val``.
        background_per_image: background crops taken from each image.
        seed: seed of the background crops' positions.
    """
    return {
        "format_version": _FORMAT_VERSION,
        "source": "se_synthetic train split",
        "crop_size": int(crop_size),
        "context": float(context),
        "val_fraction": float(val_fraction),
        "background_per_image": int(background_per_image),
        "seed": int(seed),
    }


def _square_window(cx: float, cy: float, side: float, width: int, height: int) -> List[int]:
    """An integer square (x0, y0, x1, y1) of ``side`` centred on (cx, cy), shifted to lie inside
    the image where it fits."""
    side = int(round(min(max(side, 8.0), width, height)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), width - side)
    y0 = min(max(y0, 0), height - side)
    return [x0, y0, x0 + side, y0 + side]


def _max_overlap(window: Sequence[int], boxes: np.ndarray) -> float:
    """The largest fraction of any box's area that ``window`` covers."""
    if len(boxes) == 0:
        return 0.0
    x0, y0, x1, y1 = window
    iw = np.clip(np.minimum(x1, boxes[:, 0] + boxes[:, 2]) - np.maximum(x0, boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(y1, boxes[:, 1] + boxes[:, 3]) - np.maximum(y0, boxes[:, 1]), 0, None)
    return float((iw * ih / np.maximum(boxes[:, 2] * boxes[:, 3], 1)).max())


def _background_windows(rng, boxes, sides, width, height, count) -> List[List[int]]:
    windows = []
    for _attempt in range(50 * count):
        if len(windows) == count:
            break
        side = float(rng.choice(sides)) if len(sides) else width / 4
        window = _square_window(rng.uniform(0, width), rng.uniform(0, height), side, width, height)
        if _max_overlap(window, boxes) < 0.2:
            windows.append(window)
    return windows


def write_synthetic_crops(
    root: Optional[str] = None,
    synthetic_root: Optional[str] = None,
    crop_size: int = 64,
    context: float = 1.5,
    val_fraction: float = 0.1,
    background_per_image: int = 1,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Write (or reuse) the object-crop classification set of the synthetic train split.

    Args:
        root: destination folder; None means :func:`default_synthetic_crops_root`.
        synthetic_root: the synthetic detection set (generated there if missing); None means
            :func:`se_detectron.data.default_synthetic_root`.
        crop_size: side of the square RGB PNGs.
        context: crop side relative to the longer box side (1.5 keeps some surroundings).
        val_fraction: fraction of the train images, taken from the end, whose crops form ``val``.
        background_per_image: background crops per image (squares covering < 20% of any shape).
        seed: seed of the background positions; the same parameters give the same files.
        overwrite: rewrite the folder even if its manifest matches.

    Returns:
        str: ``root``; ``root/manifest.json`` holds the parameters and per-split counts.

    Raises:
        ValueError: on a crop size below 8, a context below 1 or a val fraction outside (0, 1).
        FileExistsError: if ``root`` exists but is not a crops folder (it is never deleted).
    """
    if int(crop_size) < 8:
        raise ValueError(f"synthetic crops: crop_size must be >= 8 pixels, got {crop_size}")
    if context < 1.0:
        raise ValueError(f"synthetic crops: context must be >= 1 (whole box), got {context}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"synthetic crops: val_fraction must be in (0, 1), got {val_fraction}")
    root = os.path.abspath(root or default_synthetic_crops_root())
    params = synthetic_crops_manifest(crop_size, context, val_fraction, background_per_image, seed)
    existing = read_manifest(root, _MANIFEST)
    if existing is not None and not overwrite and {k: existing.get(k) for k in params} == params:
        return root
    if os.path.exists(root) and existing is None:
        raise FileExistsError(
            f"{root} exists and is not a crops folder written by se_detectron (no readable "
            f"{_MANIFEST}); remove it or choose another folder"
        )

    info = generate_synthetic_dataset(synthetic_root or default_synthetic_root())
    with open(info["train_json"]) as f:
        coco = json.load(f)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per_image: Dict[int, list] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        per_image[ann["image_id"]].append(ann)
    images = sorted(coco["images"], key=lambda im: im["id"])
    num_val = max(1, int(round(len(images) * val_fraction)))
    classes = list(SYNTHETIC_CLASSES) + [BACKGROUND_CLASS]

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        counts = {s: dict.fromkeys(classes, 0) for s in ("train", "val")}
        for split in counts:
            for cls in classes:
                os.makedirs(os.path.join(tmp, split, cls))
        for index, im in enumerate(images):
            split = "val" if index >= len(images) - num_val else "train"
            rng = np.random.default_rng([seed, im["id"]])
            with Image.open(os.path.join(info["train_images"], im["file_name"])) as f:
                picture = f.convert("RGB")
            anns = per_image[im["id"]]
            boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
            sides = context * boxes[:, 2:].max(1) if len(boxes) else np.array([])
            crops = [
                (names[a["category_id"]], _square_window(x + w / 2, y + h / 2, s, *picture.size))
                for a, (x, y, w, h), s in zip(anns, boxes, sides)
            ]
            crops += [
                (BACKGROUND_CLASS, w)
                for w in _background_windows(rng, boxes, sides, *picture.size, background_per_image)
            ]
            for n, (cls, window) in enumerate(crops):
                crop = picture.crop(window).resize((crop_size, crop_size), Image.BILINEAR)
                crop.save(os.path.join(tmp, split, cls, f"{im['id']:05d}_{n}.png"))
                counts[split][cls] += 1
        manifest = dict(params, classes=classes, counts=counts, held_out_images=num_val)
        publish_directory(tmp, root, manifest, _MANIFEST)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
