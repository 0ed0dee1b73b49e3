"""A ``DatasetMapper`` whose image-read and mask-format failures say what to fix."""

from detectron2.data import DatasetMapper, detection_utils

from ..errors import SEDetectronError

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
        try:
            return super().__call__(dataset_dict)
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
