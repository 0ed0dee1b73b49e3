"""A ``DatasetMapper`` whose image-read failures name the file."""

from detectron2.data import DatasetMapper, detection_utils

from ..errors import SEDetectronError

__all__ = ["ImageReadError", "SafeDatasetMapper"]


class ImageReadError(SEDetectronError, OSError):
    """An image of the dataset cannot be read; the message names the file and the cause."""


def _raised_in(traceback, code):
    while traceback is not None:
        if traceback.tb_frame.f_code is code:
            return True
        traceback = traceback.tb_next
    return False


class SafeDatasetMapper(DatasetMapper):
    """Detectron2's :class:`~detectron2.data.DatasetMapper` with readable image-read errors.

    A missing, corrupt or truncated image makes ``__call__`` raise :class:`ImageReadError`
    ("Cannot read image '<file_name>' (...): <cause>") instead of the bare PIL/OS error raised
    deep inside ``detection_utils.read_image``. Only errors raised while reading the image are
    converted; anything else (augmentations, annotations) propagates unchanged. Configuration
    is Detectron2's (``from_config`` is inherited), so it is a drop-in replacement::

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
