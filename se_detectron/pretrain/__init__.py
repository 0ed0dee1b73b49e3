"""ImageNet classification pretraining of the SE trunks (``tools/pretrain_imagenet.py``).

The classifier is :func:`se_detectron.modeling.build_se_resnet_classifier`, whose parameter names
(``stem.*``, ``res2.*`` ... ``res5.*``, ``linear.*``) are those of the detection trunk, so the
``model`` weights of a checkpoint written here load into the SE backbones by name.

Modules:

* the named architectures (``se_resnet50`` ... ``senet154``, :mod:`se_detectron.modeling.archs`);
* :mod:`.data`: ImageNet-layout folders, transforms and (distributed) loaders;
* :mod:`.digits`: scikit-learn's digits written as an ImageNet-layout folder (no download);
* :mod:`.loop`: ``train_one_epoch`` and ``evaluate``;
* :mod:`.train_state`: atomic checkpoints, exact resume, mismatch errors;
* :mod:`.distributed`: ``torchrun`` (env://) process-group helpers;
* :mod:`.epoch_metrics`: ``metrics.jsonl`` and ``curves.png``;
* :mod:`.args`: ``get_args_parser`` and the digits recipe (``DEMO_COMMAND``);
* :mod:`.train`: ``main`` (the training loop) and its model/scheduler builders.
"""

from ..modeling.archs import ARCH_NAMES, ARCHS, apply_arch, arch_opts, arch_overrides, find_arch
from .args import DEMO_ARGS, DEMO_COMMAND, get_args_parser
from .data import build_eval_transform, build_train_transform, load_data
from .digits import DIGITS_NAME, default_digits_root, write_digits_dataset
from .loop import evaluate, train_one_epoch
from .train import build_trunk_cfg, main
from .train_state import CheckpointMismatchError, load_checkpoint

__all__ = [
    "ARCHS",
    "ARCH_NAMES",
    "DEMO_ARGS",
    "DEMO_COMMAND",
    "DIGITS_NAME",
    "CheckpointMismatchError",
    "apply_arch",
    "arch_opts",
    "arch_overrides",
    "build_eval_transform",
    "build_train_transform",
    "build_trunk_cfg",
    "default_digits_root",
    "evaluate",
    "find_arch",
    "get_args_parser",
    "load_checkpoint",
    "load_data",
    "main",
    "train_one_epoch",
    "write_digits_dataset",
]
