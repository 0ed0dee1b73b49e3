"""An embedded ImageNet-layout data set: scikit-learn's handwritten digits.

``sklearn.datasets.load_digits`` ships 1797 8x8 grey images of the digits 0-9 inside the
scikit-learn package, so nothing is downloaded. :func:`write_digits_dataset` turns them into the
folder layout the pretraining tool reads::

    ROOT/train/<0..9>/<index>.png
    ROOT/val/<0..9>/<index>.png
    ROOT/manifest.json

with a deterministic stratified train/val split, images upscaled to ``image_size`` pixels and made
RGB. Writing is idempotent (an existing folder whose manifest has the same parameters is reused)
and atomic (the folder is built beside ``ROOT`` and renamed into place), so concurrent or
interrupted runs never see a half-written data set.
"""

import os
import shutil
import tempfile
from typing import Dict, Optional

import numpy as np

from ..errors import PretrainError
from ..utils.atomic import publish_directory, read_manifest

__all__ = ["DIGITS_NAME", "default_digits_root", "digits_manifest", "write_digits_dataset"]

#: The value of ``--data-path`` that selects this data set.
DIGITS_NAME = "digits"
_FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def default_digits_root() -> str:
    """``$DETECTRON2_DATASETS/se_digits`` (``DETECTRON2_DATASETS`` defaults to ``datasets``)."""
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "se_digits")


def digits_manifest(image_size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> dict:
    """The parameters that define a digits folder, as stored in its ``manifest.json``.

    Args:
        image_size: side of the written square images, in pixels.
        val_fraction: fraction of each class held out for ``val``.
        seed: seed of the stratified split.
    """
    return {
        "format_version": _FORMAT_VERSION,
        "source": "sklearn.datasets.load_digits",
        "image_size": int(image_size),
        "val_fraction": float(val_fraction),
        "seed": int(seed),
        "resample": "bilinear",
        "mode": "RGB",
    }


def write_digits_dataset(
    root: Optional[str] = None,
    image_size: int = 32,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> str:
    """Write (or reuse) the digits data set as an ImageNet-layout folder.

    Args:
        root: destination folder; None means :func:`default_digits_root`.
        image_size: side of the square RGB PNGs; the 8x8 digits are upscaled with bilinear
            resampling (8 keeps the original resolution).
        val_fraction: fraction of each class held out for ``val`` (stratified split).
        seed: seed of the split; the same parameters always give the same files.
        overwrite: rewrite the folder even if its manifest matches.

    Returns:
        str: ``root``. ``root/manifest.json`` holds the parameters and per-split counts.

    Raises:
        ValueError: on an image size below 8 or a val fraction outside (0, 1).
        FileExistsError: if ``root`` exists but is not a digits folder (it is never deleted).
    """
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if int(image_size) < 8:
        raise PretrainError(f"digits image_size must be >= 8 pixels, got {image_size}")
    if not 0.0 < val_fraction < 1.0:
        raise PretrainError(f"digits val_fraction must be in (0, 1), got {val_fraction}")
    root = os.path.abspath(root or default_digits_root())
    params = digits_manifest(image_size, val_fraction, seed)

    existing = read_manifest(root, MANIFEST)
    if existing is not None and not overwrite and {k: existing.get(k) for k in params} == params:
        return root
    if os.path.exists(root) and existing is None:
        raise FileExistsError(
            f"{root} exists and is not a digits folder written by se_detectron (no readable "
            f"{MANIFEST}); remove it or choose another folder"
        )

    digits = load_digits()
    images, labels = digits.images, digits.target
    indices = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        indices, test_size=val_fraction, random_state=seed, stratify=labels
    )
    splits = {"train": np.sort(train_idx), "val": np.sort(val_idx)}

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.tmp-", dir=parent)
    try:
        counts: Dict[str, Dict[str, int]] = {}
        for split, split_idx in splits.items():
            counts[split] = {}
            for cls in range(10):
                os.makedirs(os.path.join(tmp, split, str(cls)))
                counts[split][str(cls)] = 0
            for i in split_idx:
                cls = str(int(labels[i]))
                # load_digits values are 0..16 (ink = high); scale to 0..255 grey.
                grey = np.clip(np.rint(images[i] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
                img = Image.fromarray(grey, mode="L")
                if image_size != 8:
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                img.convert("RGB").save(os.path.join(tmp, split, cls, f"{i:04d}.png"))
                counts[split][cls] += 1
        manifest = dict(params, counts=counts, num_classes=10, total=int(len(labels)))
        publish_directory(tmp, root, manifest, MANIFEST)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
