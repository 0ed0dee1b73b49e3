"""Checks of a COCO file against its images, done when the dataset is loaded (before training).

Detectron2 finds a ``width``/``height`` that differs from the image only when it reads that image
(``SizeMismatchError``, possibly hours into training) and keeps boxes of zero or negative width
as instances. :func:`check_image_sizes` reads the image *headers* (PIL opens lazily: no pixel is
decoded) and reports the first offenders in one error; :func:`degenerate_boxes` finds the boxes
:func:`drop_degenerate_boxes` removes from the loaded dataset dicts.
"""

import os
from typing import Dict, List, Sequence, Tuple

from PIL import Image

__all__ = [
    "check_image_sizes",
    "crowd_annotations",
    "degenerate_boxes",
    "drop_degenerate_boxes",
    "image_size",
]

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def image_size(path: str) -> Tuple[int, int]:
    """``(width, height)`` of an image as Detectron2's ``read_image`` returns it (after the EXIF
    orientation), from the file's header only.

    Raises:
        OSError: if the file is not an image PIL can identify.
    """
    with Image.open(path) as image:
        width, height = image.size
        # JPEG/PNG-eXIf headers carry the EXIF block; asking others for it would decode them
        exif = image.getexif() if "exif" in image.info else {}
        if exif.get(_EXIF_ORIENTATION, 1) in _TRANSPOSED:
            width, height = height, width
    return width, height


def check_image_sizes(images: Sequence[Dict], image_root: str, max_shown: int = 3) -> List[str]:
    """Compare each image's ``width``/``height`` with its file's header.

    Args:
        images: the COCO ``images`` entries (``file_name``, ``width``, ``height``).
        image_root: the folder ``file_name`` is relative to.
        max_shown: offenders described in full.

    Returns:
        list[str]: empty if every size matches; else the description of the first
        ``max_shown`` offenders (``"a.jpg is 64x48 (json: 640x480)"``) followed by a count of
        all of them, or of an image whose header cannot be read.
    """
    shown, count = [], 0
    for img in images:
        path = os.path.join(image_root, img["file_name"])
        try:
            width, height = image_size(path)
        except (OSError, SyntaxError, ValueError) as e:
            return [f"image '{path}' cannot be read ({type(e).__name__}: {e})"]
        if (width, height) != (img["width"], img["height"]):
            count += 1
            if len(shown) < max_shown:
                shown.append(
                    f"'{img['file_name']}' is {width}x{height} "
                    f"(json: {img['width']}x{img['height']})"
                )
    if count:
        shown.append(f"{count} of {len(images)} images differ")
    return shown


def crowd_annotations(annotations: Sequence[Dict]) -> List:
    """Ids of the crowd annotations (``iscrowd`` 1): regions to ignore, no training target."""
    return [ann["id"] for ann in annotations if ann.get("iscrowd", 0)]


def degenerate_boxes(annotations: Sequence[Dict]) -> List:
    """Ids of the annotations whose ``bbox`` ``[x, y, w, h]`` has ``w <= 0`` or ``h <= 0``."""
    return [
        ann["id"]
        for ann in annotations
        if not ann.get("iscrowd", 0) and (ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0)
    ]


def drop_degenerate_boxes(dataset_dicts: List[Dict]) -> int:
    """Remove the non-crowd instances with zero or negative width or height (XYWH boxes, as
    Detectron2's ``load_coco_json`` returns them), in place; returns how many were removed."""
    removed = 0
    for record in dataset_dicts:
        annotations = record.get("annotations", [])
        kept = [
            a for a in annotations if a.get("iscrowd", 0) or (a["bbox"][2] > 0 and a["bbox"][3] > 0)
        ]
        removed += len(annotations) - len(kept)
        record["annotations"] = kept
    return removed
