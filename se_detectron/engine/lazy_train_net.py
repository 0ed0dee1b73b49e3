"""``tools/lazy_train_net.py``: train / evaluate a LazyConfig (python config), as ``train_net``.

Detectron2's ``tools/lazyconfig_train_net.py`` usage (``--config-file``, ``--resume``,
``--eval-only``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``, trailing
``key=value`` overrides) plus ``--register-coco`` / ``--register-voc``, with what
``tools/train_net.py`` has: shipped config names (``COCO-Detection/faster_rcnn_SE_R_50_FPN_1x.py``),
exact resume, atomic checkpoints, ``--num-gpus N`` as N gloo processes on a CPU machine (cores
split between them), ``final_results.json``, user errors as one ``error:`` line (exit 2), and
the run-folder rules (``--resume`` / ``--resume-if-possible`` / ``--overwrite``).
"""

import logging

from detectron2.config import instantiate
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from yacs.config import CfgNode

from ..checkpoint import SEDetectionCheckpointer
from ..data import check_datasets_registered, check_same_classes, register_datasets_from_cfg
from .lazy_config import (
    adapt_to_device,
    check_required_keys,
    dataset_names,
    load_lazy_config,
    resolve_lazy_config_file,
)
from .lazy_trainer import (
    SELazyTrainer,
    check_init_checkpoint,
    converted_weights_check,
    create_lazy_ddp_model,
    do_test,
)
from .train_net import (
    UserError,
    argument_parser,
    launch_reporting_errors,
    prepare_output_dir,
    write_final_results,
)

__all__ = ["cli", "lazy_argument_parser", "main", "register_datasets", "setup"]

logger = logging.getLogger("se_detectron")

_EPILOG = (
    "Example: python tools/lazy_train_net.py --config-file "
    "Synthetic/mask_rcnn_SE_R_18_FPN_synthetic.py train.max_iter=100 "
    "train.output_dir=output/lazy_demo   "
    "(overrides are key=value; see docs/tutorials/lazyconfig.md)"
)


def lazy_argument_parser():
    """:func:`~se_detectron.engine.train_net.argument_parser` with a python-config example."""
    return argument_parser(epilog=_EPILOG)


def register_datasets(cfg, args) -> None:
    """Register ``--register-coco`` / ``--register-voc`` and the synthetic datasets, then check
    that every dataset the config names is registered (and train/test share classes).

    Args:
        cfg: the LazyConfig.
        args: parsed arguments (``register_coco``, ``register_voc``, ``eval_only``).

    Raises:
        UnregisteredDatasetError: naming the key (``dataloader.train.dataset.names``).
    """
    flags = {"REGISTER_COCO": list(args.register_coco), "REGISTER_VOC": list(args.register_voc)}
    register_datasets_from_cfg(CfgNode({"DATASETS": flags}))
    train, test = dataset_names(cfg, "train"), dataset_names(cfg, "test")
    if not args.eval_only:
        check_datasets_registered(train, key="dataloader.train.dataset.names")
    check_datasets_registered(test, key="dataloader.test.dataset.names")
    if not args.eval_only:
        check_same_classes(train, test)


def setup(args):
    """Load the config with its overrides, check it, register datasets, set up logging.

    Args:
        args: parsed :func:`lazy_argument_parser` arguments.

    Returns:
        omegaconf.DictConfig: the config.
    """
    # the path, for default_setup's log of the file (a shipped name is resolved)
    args.config_file = resolve_lazy_config_file(args.config_file)
    cfg = load_lazy_config(args.config_file, args.opts)
    check_required_keys(cfg, eval_only=args.eval_only)
    adapt_to_device(cfg)
    if args.eval_only and not cfg.train.init_checkpoint and not args.resume:
        raise UserError(
            "--eval-only needs weights: add train.init_checkpoint=/path/to/model_final.pth"
        )
    register_datasets(cfg, args)
    prepare_output_dir(cfg.train.output_dir, args, key="train.output_dir")
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="se_detectron")
    return cfg


def main(args):
    """Train (or with ``--eval-only`` evaluate) as configured; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        model = create_lazy_ddp_model(model, cfg)
        checkpointer = SEDetectionCheckpointer(
            model, save_dir=cfg.train.output_dir, **converted_weights_check(cfg)
        )
        if not (args.resume and checkpointer.has_checkpoint()):
            check_init_checkpoint(cfg.train.init_checkpoint)
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
        results = do_test(cfg, model)
    else:
        trainer = SELazyTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    write_final_results(cfg.train.output_dir, dataset_names(cfg, "test"), results)
    return results


def cli(argv=None):
    """Parse ``argv`` and train/evaluate, in ``--num-gpus`` processes per machine."""
    args = lazy_argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    launch_reporting_errors(main, args)
