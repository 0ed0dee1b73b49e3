"""The common base of the errors a user can cause (config, files, data, weights).

Every se_detectron exception derives from :class:`SEDetectronError` *and* from the built-in type
it has always been (``ValueError``, ``RuntimeError``, ...), so ``except SEDetectronError`` catches
them all (the command-line tools report them as one message, without a traceback) and existing
``except ValueError`` code keeps working. This module imports nothing from the package.
"""

__all__ = ["PretrainError", "SEDetectronError"]


class SEDetectronError(Exception):
    """Base class of se_detectron's user-facing errors; the message names what to fix."""


class PretrainError(SEDetectronError, ValueError):
    """An invalid pretraining option or data folder (``tools/pretrain_imagenet.py``)."""
