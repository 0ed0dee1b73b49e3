"""A ``DatasetMapper`` whose image-read and mask-format failures say what to fix, and which
scales 16-bit images to the model's 8-bit input range (:mod:`se_detectron.data.image_io`)."""

import io

from detectron2.data import DatasetMapper, detection_utils
from detectron2.utils.file_io import PathHandler, PathManager
from PIL import Image

from ..errors import SEDetectronError
from .image_io import bit_depth, open_8bit

__all__ = ["ImageReadError", "MaskFormatError", "SafeDatasetMapper"]


class ImageReadError(SEDetectronError, OSError):
    """An image of the dataset cannot be read; the message names the file and the cause."""


class MaskFormatError(SEDetectronError, ValueError):
    """Instance masks stored as RLE are read with ``INPUT.MASK_FORMAT "polygon"``."""


def _check_mask_format(dataset_dict):
    """Raise :class:`MaskFormatError` if an instance mask of ``dataset_dict`` is RLE.

    Polygon masks (``PolygonMasks``) cannot hold RLE (a dict); Detectron2 only says "Failed to
    use mask_format=='polygon'". Crowd annotations are dropped by the mapper and not checked.
    """
    for anno in dataset_dict.get("annotations", ()):
        if anno.get("iscrowd", 0) == 0 and isinstance(anno.get("segmentation"), dict):
            raise MaskFormatError(
                f"Image '{dataset_dict.get('file_name')}' has RLE instance masks (a "
                "'segmentation' dict), which INPUT.MASK_FORMAT \"polygon\" cannot read: set "
                "INPUT.MASK_FORMAT bitmask (LazyConfig: "
                "dataloader.train.mapper.instance_mask_format=bitmask)."
            )


class _EightBitImageHandler(PathHandler):
    """``se-8bit://<path>``: the image at ``<path>`` as an 8-bit PNG in memory (EXIF orientation
    applied), for Detectron2's ``read_image``, which opens images through its ``PathManager``."""

    PREFIX = "se-8bit://"

    def _get_supported_prefixes(self):
        return [self.PREFIX]

    def _open(self, path, mode="rb", buffering=-1, **kwargs):
        buffer = io.BytesIO()
        open_8bit(path[len(self.PREFIX) :]).save(buffer, format="PNG", compress_level=0)
        buffer.seek(0)
        return buffer


PathManager.register_handler(_EightBitImageHandler())


def _needs_8bit(file_name):
    """Whether PIL would clip the image (16 bits per sample; from its header only)."""
    try:
        with PathManager.open(file_name, "rb") as f, Image.open(f) as image:
            return bit_depth(image) is not None
    except ValueError:
        return True  # no range to scale by: reading it through open_8bit reports that
    except Exception:
        return False  # unreadable: Detectron2's read_image reports it (ImageReadError)


def _raised_in(traceback, code):
    while traceback is not None:
        if traceback.tb_frame.f_code is code:
            return True
        traceback = traceback.tb_next
    return False


class SafeDatasetMapper(DatasetMapper):
    """Detectron2's :class:`~detectron2.data.DatasetMapper` with readable input errors.

    A missing, corrupt or truncated image makes ``__call__`` raise :class:`ImageReadError`
    ("Cannot read image '<file_name>' (...): <cause>") instead of the bare PIL/OS error raised
    deep inside ``detection_utils.read_image``. Only errors raised while reading the image are
    converted; anything else (augmentations, annotations) propagates unchanged. Instance masks
    in RLE read with the polygon mask format raise :class:`MaskFormatError` naming
    ``INPUT.MASK_FORMAT`` (Detectron2 says only "Failed to use mask_format=='polygon'").
    An image with 16 bits per sample, which Detectron2 would clip to white, is scaled to the
    8-bit range by its bit depth (:func:`~se_detectron.data.image_io.to_8bit`; its header is read
    first to tell, and only such an image takes the extra conversion).
    Configuration is Detectron2's (``from_config`` is inherited), so it is a drop-in replacement::

        mapper = SafeDatasetMapper(cfg, is_train=True)
        loader = build_detection_train_loader(cfg, mapper=mapper)
    """

    def __call__(self, dataset_dict):
        """Map one dataset dict, as ``DatasetMapper.__call__`` does.

        Args:
            dataset_dict (dict): metadata of one image, in Detectron2 Dataset format.

        Returns:
            dict: the format that Detectron2's builtin models accept.
        """
        if self.is_train and self.use_instance_mask and self.instance_mask_format == "polygon":
            _check_mask_format(dataset_dict)
        file_name = dataset_dict.get("file_name")
        scaled = isinstance(file_name, str) and _needs_8bit(file_name)
        try:
            if not scaled:
                return super().__call__(dataset_dict)
            # Detectron2's read_image opens the in-memory 8-bit image instead of the file
            prefix = _EightBitImageHandler.PREFIX
            mapped = super().__call__(dict(dataset_dict, file_name=prefix + file_name))
            mapped["file_name"] = file_name
            return mapped
        except Exception as e:
            if not _raised_in(e.__traceback__, detection_utils.read_image.__code__):
                raise
            file_name = dataset_dict.get("file_name", "<no file_name>")
            image_id = dataset_dict.get("image_id")
            what = f", image_id={image_id!r}" if image_id is not None else ""
            # ``from None``: the message already carries the cause (it stays in __context__)
            raise ImageReadError(
                f"Cannot read image '{file_name}'{what}: {type(e).__name__}: {e}"
            ) from None
