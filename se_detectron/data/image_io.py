"""Reading images for the model: 16-bit images scaled to 8 bits by their bit depth.

Detectron2's ``read_image`` converts every image with PIL to RGB (or the model's
``INPUT.FORMAT``). PIL opens a 16-bit grayscale PNG or TIFF (depth images, thermal and medical
scans, scientific cameras) as mode ``"I;16"`` and converts it to RGB by *clipping* every value
above 255 to 255: an ordinary 16-bit photograph becomes an all-white image, and the model trains
or predicts on it without a word. Here such an image is scaled to the 8-bit range the model
expects by its bit depth (``0 -> 0``, ``2**bits - 1 -> 255``, rounded; never by the content, so
all images of a dataset keep their relative brightness), then converted as Detectron2 converts
an 8-bit image. Images with 8 bits per sample (``L``, ``RGB``, ``P``, ... and PIL's reading of
16-bit *colour* PNGs, which it already reduces to 8 bits) are left to PIL as before.

:func:`to_8bit` is the one place that does this; :func:`read_image` (the predictor) and
:class:`~se_detectron.data.SafeDatasetMapper` (training and evaluation) both use it.
"""

from typing import Optional

import numpy as np
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image, ImageOps

__all__ = ["bit_depth", "open_8bit", "read_image", "to_8bit"]

_TIFF_BITS_PER_SAMPLE = 258


def bit_depth(image: Image.Image) -> Optional[int]:
    """Bits per sample of an image PIL would clip when converting it to 8 bits, else None.

    Args:
        image: an opened (not necessarily decoded) PIL image.

    Returns:
        int or None: 16 for PIL's 16-bit modes (``I;16``, ``I;16B``, ...) and for a PNG read as
        32-bit integers (mode ``I``: PNG samples have at most 16 bits); a TIFF's
        ``BitsPerSample`` for mode ``I``; None for images PIL converts itself (8 bits per
        sample).

    Raises:
        ValueError: for a floating-point image (mode ``F``) or an integer image of unknown
            depth: there is no range to scale by.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        return 16
    if mode == "I":
        if image.format == "PNG":
            return 16
        tags = getattr(image, "tag_v2", None)
        bits = tags.get(_TIFF_BITS_PER_SAMPLE) if tags is not None else None
        if isinstance(bits, tuple):
            bits = bits[0]
        if isinstance(bits, int) and 8 < bits <= 32:
            return bits
        raise ValueError(
            f"a 32-bit integer {image.format or ''} image (PIL mode I) of unknown bit depth: "
            "convert it to 8 or 16 bits per sample"
        )
    if mode == "F":
        raise ValueError(
            "a floating-point image (PIL mode F) has no bit depth to scale to the model's 8-bit "
            "input range: convert it to 8 or 16 bits per sample"
        )
    return None


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` with 8 bits per sample: a high-bit-depth one scaled by its :func:`bit_depth`.

    Args:
        image: a PIL image.

    Returns:
        PIL.Image.Image: ``image`` itself when PIL converts it without clipping; else a new
        grayscale (``L``) image with ``round(value * 255 / (2**bits - 1))`` (negative values
        of mode ``I`` as 0).

    Raises:
        ValueError: see :func:`bit_depth`.
    """
    bits = bit_depth(image)
    if bits is None:
        return image
    top = (1 << bits) - 1
    values = np.clip(np.asarray(image, dtype=np.int64), 0, top)
    return Image.fromarray(((values * 255 + top // 2) // top).astype(np.uint8), mode="L")


def open_8bit(file_name: str) -> Image.Image:
    """Open an image as Detectron2's ``read_image`` does (EXIF orientation applied), in 8 bits.

    Args:
        file_name: an image path (any path Detectron2's ``PathManager`` opens).

    Raises:
        OSError: the file cannot be read as an image (PIL's error).
        ValueError: see :func:`bit_depth`.
    """
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)
        ImageOps.exif_transpose(image, in_place=True)  # loads the pixels
    return to_8bit(image)


def read_image(file_name: str, format: Optional[str] = None) -> np.ndarray:
    """Detectron2's ``read_image`` for every bit depth: 16-bit images scaled, never clipped.

    Args:
        file_name: an image path.
        format: ``"BGR"``, ``"RGB"``, ``"L"`` or another PIL mode (Detectron2's
            ``INPUT.FORMAT``); None keeps the image's own mode.

    Returns:
        np.ndarray: an HWC uint8 image (HW1 for ``"L"``), as Detectron2's ``read_image``.

    Raises:
        OSError: the file cannot be read as an image (PIL's error).
        ValueError: see :func:`bit_depth`.
    """
    return convert_PIL_to_numpy(open_8bit(file_name), format)
