"""The training loop of ``tools/lazy_train_net.py``: a LazyConfig trained as ``SETrainer`` trains.

Detectron2's ``tools/lazyconfig_train_net.py`` loop (``SimpleTrainer`` / ``AMPTrainer`` and its
hooks, every object instantiated from the config) with what :class:`~se_detectron.engine.SETrainer`
adds on the yacs path:

* exact ``--resume`` for any number of processes and loader workers: ``dataloader.train`` is
  built as a :class:`~se_detectron.engine.resume.ResumableTrainLoader` and every process's data
  position, aspect-ratio groups and random states are saved with every checkpoint
  (:class:`~se_detectron.engine.resume.ProcessStates`), so a resumed run sees the same images,
  augmentations and dropout as one that never stopped;
* preemption (``SIGTERM`` / ``SIGUSR1``: a checkpoint after the current iteration) and a
  stopped process named when a collective times out, as on the yacs path;
* atomic checkpoints and strict trunk loading
  (:class:`~se_detectron.checkpoint.SEDetectionCheckpointer`), a missing
  ``train.init_checkpoint`` or frozen layers left random are errors naming the key;
* CPU multi-process training (gloo DDP without ``device_ids``);
* evaluation with the config's evaluator, ``curves.png`` of the losses and AP.
"""

import logging
import os
from urllib.parse import urlparse

from detectron2.config import instantiate
from detectron2.data import build_detection_train_loader
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    create_ddp_model,
    default_writers,
    hooks,
)
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from ..checkpoint import FrozenRandomInitError, SEDetectionCheckpointer, frozen_state_keys
from ..data import prepare_dataset
from ..utils.optim import unscale_before_step
from .heartbeat import naming_stopped_ranks, start_heartbeat
from .lazy_config import LazyConfigError, converted_config_view, dataset_names
from .preemption import PreemptionHook
from .resume import (
    ProcessStateCheckpointer,
    ProcessStates,
    build_resumable_train_loader,
    preserved_rng,
)
from .trainer import PlotCurvesHook, resume_data_or_warn

__all__ = [
    "converted_weights_check",
    "SELazyTrainer",
    "build_lazy_train_loader",
    "check_init_checkpoint",
    "create_lazy_ddp_model",
    "do_test",
]

logger = logging.getLogger("se_detectron")


def check_init_checkpoint(path: str) -> None:
    """Raise FileNotFoundError naming ``train.init_checkpoint`` if that local file is missing.

    Args:
        path: the checkpoint; ``""`` (nothing to load) and URLs are not checked.
    """
    if not path or urlparse(path).scheme:
        return
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"train.init_checkpoint={path!r}: no such file (working directory {os.getcwd()!r}). "
            "Convert pretrained weights with tools/convert_pretrained.py "
            "(docs/tutorials/weights.md), fix "
            'the path, or set train.init_checkpoint="" (with '
            "model.backbone.bottom_up.freeze_at=0) to train from scratch."
        )


def converted_weights_check(cfg) -> dict:
    """``SEDetectionCheckpointer`` arguments that compare converted weights loaded from
    ``train.init_checkpoint`` with the python config, as the yacs path compares them with its
    config (a mismatch names ``model.backbone.bottom_up.<argument>``; see
    :func:`~se_detectron.engine.lazy_config.converted_config_view`)."""
    check = {"weights_name": "train.init_checkpoint"}
    view = converted_config_view(cfg)
    if view is not None:
        check.update(cfg=view[0], config_names=view[1])
    return check


def build_lazy_train_loader(loader_cfg, seed=None):
    """Instantiate ``dataloader.train`` as a resumable loader.

    The config's call must be Detectron2's ``build_detection_train_loader``; its arguments
    (``dataset``, ``mapper``, ``total_batch_size``, ``aspect_ratio_grouping``, ``num_workers``,
    ``collate_fn``, more ``DataLoader`` arguments) build a
    :class:`~se_detectron.engine.resume.ResumableTrainLoader`.

    Args:
        loader_cfg: ``cfg.dataloader.train``: a call with ``dataset`` and no ``sampler``.
        seed: the shuffle and augmentation seed; None draws one (shared by all processes,
            saved with checkpoints).

    Returns:
        ResumableTrainLoader: the loader.

    Raises:
        LazyConfigError: if the config sets ``dataloader.train.sampler`` or calls another
            function than ``build_detection_train_loader``.
    """
    if loader_cfg.get("sampler") is not None:
        raise LazyConfigError(
            "dataloader.train.sampler is set, but se-lazy-train-net provides the sampler (a "
            "resumable stream, for exact --resume): remove it from the config"
        )
    target = loader_cfg._target_
    target = locate(target) if isinstance(target, str) else target
    if target is not build_detection_train_loader:
        raise LazyConfigError(
            f"dataloader.train._target_ is {getattr(target, '__qualname__', target)!r}: "
            "se-lazy-train-net builds the training loader itself from the arguments of "
            "detectron2.data.build_detection_train_loader (for exact --resume); use that call"
        )
    kwargs = {k: instantiate(loader_cfg[k]) for k in loader_cfg if k not in ("_target_", "sampler")}
    return build_resumable_train_loader(seed=seed, **kwargs)


def create_lazy_ddp_model(model, cfg):
    """Detectron2's ``create_ddp_model`` with ``train.ddp``; CPU (gloo) gets no ``device_ids``."""
    ddp = dict(OmegaConf.to_container(cfg.train.ddp, resolve=True))
    if not str(cfg.train.device).startswith("cuda"):
        ddp.setdefault("device_ids", None)
    return create_ddp_model(model, **ddp)


def do_test(cfg, model):
    """Evaluate ``model`` with ``dataloader.test`` and ``dataloader.evaluator``.

    Returns:
        dict or None: ``{dataset: {task: {metric: value}}}``; None without a test loader or
        evaluator (``dataloader.evaluator=None`` turns evaluation off).
    """
    if OmegaConf.select(cfg, "dataloader.evaluator", default=None) is None:
        return None
    if OmegaConf.select(cfg, "dataloader.test", default=None) is None:
        return None
    names = dataset_names(cfg, "test")
    for name in names:  # the evaluator reads the json of a lazily generated dataset
        prepare_dataset(name)
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process() and results:
        print_csv_format(results)
    if len(names) == 1 and results:
        results = {names[0]: results}
    return results


def _naming_stopped_ranks(run_step):
    """``run_step`` with a timed-out collective reported as the process that stopped."""

    def wrapped():
        with naming_stopped_ranks():
            run_step()

    return wrapped


class SELazyTrainer:
    """Train the ``model`` of a LazyConfig; exact resume, atomic checkpoints, CPU DDP.

    Args:
        cfg: a LazyConfig with Detectron2's ``train`` keys (``common/train.py``),
            ``dataloader.train``, ``optimizer`` and ``lr_multiplier`` (see
            :func:`~se_detectron.engine.lazy_config.check_required_keys`). ``train.seed >= 0``
            fixes the data order; otherwise it is drawn and saved with the checkpoints.

    Attributes:
        trainer: Detectron2's ``SimpleTrainer``, or with ``train.amp.enabled`` its
            ``AMPTrainer``; an optimizer whose ``step`` clips gets unscaled gradients
            (:func:`~se_detectron.utils.optim.unscale_before_step`).
        checkpointer: the :class:`SEDetectionCheckpointer` (model, optimizer, iteration, hooks,
            every process's data and random states).
        train_loader: the :class:`~se_detectron.engine.resume.ResumableTrainLoader`.
        process_states: its :class:`~se_detectron.engine.resume.ProcessStates`.
        start_iter: the first iteration :meth:`train` runs (set by :meth:`resume_or_load`).
        last_eval_results: the last evaluation's results, or None.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        logger.info(f"Model:\n{model}")
        cfg.optimizer.params.model = model
        optimizer = unscale_before_step(instantiate(cfg.optimizer))
        seed = OmegaConf.select(cfg, "train.seed", default=-1)
        loader = build_lazy_train_loader(
            cfg.dataloader.train, seed=seed if seed is not None and seed >= 0 else None
        )
        self.train_loader = loader
        self.process_states = ProcessStates(loader)
        self.batch_size = int(cfg.dataloader.train.total_batch_size)
        model = create_lazy_ddp_model(model, cfg)
        trainer_class = AMPTrainer if cfg.train.amp.enabled else SimpleTrainer
        self.trainer = trainer_class(model, loader, optimizer)
        self.trainer.run_step = _naming_stopped_ranks(self.trainer.run_step)
        self.checkpointer = SEDetectionCheckpointer(
            model,
            cfg.train.output_dir,
            **converted_weights_check(cfg),
            trainer=self.trainer,
            process_states=self.process_states,
        )
        start_heartbeat(cfg.train.output_dir, comm.get_rank(), comm.get_world_size())
        self.start_iter = 0
        self.last_eval_results = None
        self.trainer.register_hooks(self.build_hooks())

    def build_hooks(self):
        """Detectron2's lazy-training hooks (the checkpointer on every process, gathering each
        process's state), ``curves.png`` (``PlotCurvesHook``) and, last, the preemption check."""
        cfg, main = self.cfg, comm.is_main_process()
        output_dir = cfg.train.output_dir
        checkpoint_hook = ProcessStateCheckpointer(
            self.checkpointer, process_states=self.process_states, **cfg.train.checkpointer
        )
        return [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            checkpoint_hook,
            hooks.EvalHook(cfg.train.eval_period, self._evaluate),
            hooks.PeriodicWriter(
                default_writers(output_dir, cfg.train.max_iter), period=cfg.train.log_period
            )
            if main
            else None,
            PlotCurvesHook(
                output_dir, (cfg.train.checkpointer.get("period", 0), cfg.train.eval_period)
            ),
            PreemptionHook(checkpoint_hook),
        ]

    def register_hooks(self, hook_list):
        """Register more hooks on :attr:`trainer` (as ``TrainerBase.register_hooks``)."""
        self.trainer.register_hooks(hook_list)

    def _evaluate(self):
        with preserved_rng():  # evaluation leaves the training random states alone
            self.last_eval_results = do_test(self.cfg, self.trainer.model)
        return self.last_eval_results

    def resume_or_load(self, resume: bool = True) -> None:
        """Load ``train.init_checkpoint``, or with ``resume`` the last checkpoint of the run.

        After a resume every process continues its data stream, aspect-ratio groups and random
        states from the checkpoint (a checkpoint of another number of processes: inexactly,
        with one warning).

        Raises:
            FileNotFoundError: if ``train.init_checkpoint`` is a missing local file.
            FrozenRandomInitError: if nothing is loaded and some layers are frozen.
        """
        init = self.cfg.train.init_checkpoint
        resuming = resume and self.checkpointer.has_checkpoint()
        if not resuming:
            check_init_checkpoint(init)
            frozen = [] if init else frozen_state_keys(self.checkpointer.model)
            if frozen:
                raise FrozenRandomInitError(
                    f'train.init_checkpoint is "" (no pretrained weights) but {len(frozen)} '
                    f"parameters/buffers are frozen and would stay at their random "
                    f"initialization (first: {frozen[0]}). Set train.init_checkpoint to converted "
                    "weights (tools/convert_pretrained.py, docs/tutorials/weights.md) or "
                    "model.backbone.bottom_up.freeze_at=0 to train every layer."
                )
        self.checkpointer.resume_or_load(init, resume=resume)
        self.start_iter = self.trainer.iter + 1 if resuming else 0
        if resuming:
            logger.info(f"Resuming from iteration {self.start_iter}")
            resume_data_or_warn(self.process_states, self.start_iter, self.batch_size)

    def train(self):
        """Run iterations ``start_iter`` .. ``train.max_iter - 1``; returns the last results."""
        self.trainer.train(self.start_iter, self.cfg.train.max_iter)
        return self.last_eval_results
