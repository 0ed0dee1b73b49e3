"""Detectron2's DefaultTrainer with what SE detection training needs on top.

* atomic checkpoints and load guards (:class:`~se_detectron.checkpoint.SEDetectionCheckpointer`);
* exact ``--resume`` for any number of processes and loader workers: every process's data
  position, aspect-ratio groups and random states continue where the run stopped
  (:mod:`se_detectron.engine.resume`);
* preemption: ``SIGTERM`` / ``SIGUSR1`` end training after the current iteration with a
  checkpoint (:mod:`se_detectron.engine.preemption`); a stopped process is named when a
  collective times out (:mod:`se_detectron.engine.heartbeat`);
* COCO box evaluation with a selectable COCOeval engine (:mod:`se_detectron.evaluation`);
* image-read errors that name the file (:class:`~se_detectron.data.SafeDatasetMapper`);
* multi-process training on CPU (gloo) as well as GPU;
* ``SOLVER.OPTIMIZER``: SGD or AdamW (:mod:`se_detectron.engine.optimizer`);
* a PNG of the loss and AP curves in the output directory.
"""

import logging
import os
import time
import weakref
from typing import Sequence, Union

import torch
from detectron2.data import build_detection_test_loader, get_detection_dataset_dicts
from detectron2.engine import (
    AMPTrainer,
    DefaultTrainer,
    SimpleTrainer,
    TrainerBase,
    create_ddp_model,
    hooks,
)
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..checkpoint import SEDetectionCheckpointer, check_no_frozen_random_init
from ..data import SafeDatasetMapper
from ..evaluation import build_evaluator
from ..modeling.roi_align_choice import apply_cpu_roi_align
from ..utils.optim import unscale_before_step
from .heartbeat import naming_stopped_ranks, start_heartbeat
from .optimizer import SolverConfigError, build_optimizer
from .preemption import PreemptionHook
from .resume import (
    ProcessStateCheckpointer,
    ProcessStates,
    build_resumable_train_loader,
    preserved_rng,
)
from .training_curves import plot_training_curves

__all__ = [
    "AMP_PRECISIONS",
    "PlotCurvesHook",
    "SETrainer",
    "amp_precision",
    "resume_data_or_warn",
]

logger = logging.getLogger(__name__)


class PlotCurvesHook(hooks.HookBase):
    """Redraw ``curves.png`` (losses and AP) from ``metrics.json`` now and then, and at the end.

    Drawing the PNG costs ~0.6 s on a 2-core CPU (matplotlib), as much as a few training
    iterations of the demo, so it is redrawn only after an evaluation or a checkpoint (when there
    is something new to see, or a crash would otherwise leave an old picture), never more often
    than every ``min_interval_s`` seconds, and always when training ends.

    Args:
        output_dir: the run's output directory (holding ``metrics.json``).
        periods: iteration period(s) that trigger a redraw (e.g. ``SOLVER.CHECKPOINT_PERIOD`` and
            ``TEST.EVAL_PERIOD``); zeros are ignored.
        min_interval_s: smallest time between two redraws during training.
    """

    def __init__(
        self, output_dir: str, periods: Union[int, Sequence[int]], min_interval_s: float = 60.0
    ):
        if isinstance(periods, int):
            periods = (periods,)
        self._metrics = os.path.join(output_dir, "metrics.json")
        self._out = os.path.join(output_dir, "curves.png")
        self._periods = [int(p) for p in periods if p and int(p) > 0]
        self._min_interval_s = float(min_interval_s)
        self._last = float("-inf")
        self.redraws = 0

    def _plot(self):
        if comm.is_main_process() and os.path.isfile(self._metrics):
            plot_training_curves(self._metrics, self._out)
            self.redraws += 1
        self._last = time.monotonic()

    def after_step(self):
        step = self.trainer.iter + 1
        due = any(step % p == 0 for p in self._periods)
        if due and time.monotonic() - self._last >= self._min_interval_s:
            self._plot()

    def after_train(self):
        self._plot()


def resume_data_or_warn(process_states, start_iter: int, total_batch_size: int) -> None:
    """After a resume: if the checkpoint could not give every process its own data and random
    states (written by another number of processes), restart the data stream at
    ``start_iter * total_batch_size`` and say once what is not exact.

    Args:
        process_states: the trainer's :class:`~se_detectron.engine.resume.ProcessStates`.
        start_iter: the iteration training continues at.
        total_batch_size: images per iteration over all processes.
    """
    exact = process_states.exact
    if comm.get_world_size() > 1:
        exact = all(comm.all_gather(exact))
    if exact:
        return
    process_states.loader.stream.start_at(start_iter * total_batch_size)
    if comm.is_main_process():
        logger.warning(process_states.inexact_resume_message(start_iter))


AMP_PRECISIONS = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def amp_precision(cfg) -> torch.dtype:
    """The autocast dtype of ``SOLVER.AMP.PRECISION``, checked for a model that can use it.

    Args:
        cfg: a config with :func:`se_detectron.add_se_config` applied.

    Raises:
        SolverConfigError: naming ``SOLVER.AMP.PRECISION`` for an unknown dtype, or
            ``SOLVER.AMP.ENABLED`` when ``MODEL.DEVICE`` is not CUDA (Detectron2's AMPTrainer
            would fail its first step with a bare assertion).
    """
    name = cfg.SOLVER.AMP.get("PRECISION", "float16")
    if name not in AMP_PRECISIONS:
        raise SolverConfigError(
            f"SOLVER.AMP.PRECISION must be one of {tuple(AMP_PRECISIONS)}, got {name!r}"
        )
    if not cfg.MODEL.DEVICE.startswith("cuda"):
        raise SolverConfigError(
            f"SOLVER.AMP.ENABLED True needs CUDA (Detectron2's AMPTrainer), but MODEL.DEVICE is "
            f"{cfg.MODEL.DEVICE!r}: set SOLVER.AMP.ENABLED False to train on the CPU"
        )
    return AMP_PRECISIONS[name]


class SETrainer(DefaultTrainer):
    """The training loop of ``tools/train_net.py``; same interface as ``DefaultTrainer``.

    Args:
        cfg: a frozen config made by :func:`se_detectron.engine.train_net.setup`.
    """

    def __init__(self, cfg):
        # Same construction as DefaultTrainer.__init__, with our DDP wrapper, train loader and
        # checkpointer; TrainerBase.__init__ sets up the hook machinery.
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        # also for a subclass's build_optimizer: a step that clips gets unscaled gradients
        optimizer = unscale_before_step(self.build_optimizer(cfg, model))
        data_loader = self.build_train_loader(cfg)
        self.train_loader = data_loader
        self.process_states = ProcessStates(data_loader)
        # Detectron2's create_ddp_model; CPU (gloo) processes must not get device_ids
        on_cuda = cfg.MODEL.DEVICE.startswith("cuda")
        model = create_ddp_model(
            model,
            device_ids=[comm.get_local_rank()] if on_cuda else None,
            broadcast_buffers=False,
        )
        if cfg.SOLVER.AMP.ENABLED:
            precision = amp_precision(cfg)
            scaler = torch.amp.GradScaler("cuda", enabled=precision == torch.float16)
            self._trainer = AMPTrainer(
                model, data_loader, optimizer, grad_scaler=scaler, precision=precision
            )
        else:
            self._trainer = SimpleTrainer(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SEDetectionCheckpointer(
            model,
            cfg.OUTPUT_DIR,
            cfg=cfg,
            trainer=weakref.proxy(self),
            process_states=self.process_states,
        )
        start_heartbeat(cfg.OUTPUT_DIR, comm.get_rank(), comm.get_world_size())
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    def resume_or_load(self, resume: bool = True):
        """Load ``MODEL.WEIGHTS``, or with ``resume`` the last checkpoint of ``OUTPUT_DIR``.

        After a resume every process continues its data stream, aspect-ratio groups and random
        states from the checkpoint, so the run continues as if it had never stopped. A
        checkpoint of another number of processes continues inexactly (one warning says so).
        """
        resuming = resume and self.checkpointer.has_checkpoint()
        if not resuming and not self.cfg.MODEL.WEIGHTS:
            check_no_frozen_random_init(self.checkpointer.model, self.cfg)
        super().resume_or_load(resume=resume)
        if resuming:
            logger.info(f"Resuming from iteration {self.start_iter}")
            resume_data_or_warn(self.process_states, self.start_iter, self.cfg.SOLVER.IMS_PER_BATCH)

    def run_step(self):
        try:
            with naming_stopped_ranks():
                super().run_step()
        except FloatingPointError as e:
            if "iteration" in str(e):
                raise
            raise FloatingPointError(
                f"{e} (at iteration={self.iter}; lower SOLVER.BASE_LR, raise "
                "SOLVER.WARMUP_ITERS or check the annotations)"
            ) from e

    @classmethod
    def build_model(cls, cfg):
        """Detectron2's model; its poolers' CPU RoIAlign is ``MODEL.CPU_ROI_ALIGN``'s."""
        model = super().build_model(cfg)
        apply_cpu_roi_align(model, cfg)
        return model

    @classmethod
    def build_optimizer(cls, cfg, model):
        """The optimizer named by ``SOLVER.OPTIMIZER`` (SGD or AdamW)."""
        return build_optimizer(cfg, model)

    def build_hooks(self):
        """Detectron2's hooks, with the checkpointer run on every process (gathering each
        process's state), evaluation that leaves the training random states alone, the curves
        and, last, the preemption check."""
        ret = [
            h
            for h in super().build_hooks()
            if not isinstance(h, (hooks.PeriodicCheckpointer, hooks.EvalHook))
        ]
        checkpoint_hook = ProcessStateCheckpointer(
            self.checkpointer, self.cfg.SOLVER.CHECKPOINT_PERIOD, self.process_states
        )

        def test_and_save_results():
            with preserved_rng():
                self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        writers = [i for i, h in enumerate(ret) if isinstance(h, hooks.PeriodicWriter)]
        at = writers[0] if writers else len(ret)
        ret[at:at] = [
            checkpoint_hook,
            hooks.EvalHook(self.cfg.TEST.EVAL_PERIOD, test_and_save_results),
        ]
        periods = (self.cfg.SOLVER.CHECKPOINT_PERIOD, self.cfg.TEST.EVAL_PERIOD)
        ret.append(PlotCurvesHook(self.cfg.OUTPUT_DIR, periods))
        ret.append(PreemptionHook(checkpoint_hook))
        return ret

    @classmethod
    def build_train_loader(cls, cfg):
        """The :class:`~se_detectron.engine.resume.ResumableTrainLoader` of ``DATASETS.TRAIN``
        (Detectron2's ``build_detection_train_loader`` settings, resumable exactly)."""
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN={cfg.DATALOADER.SAMPLER_TRAIN!r} is not supported by "
                "SETrainer (it needs the resumable 'TrainingSampler'); use 'TrainingSampler'"
            )
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        return build_resumable_train_loader(
            dataset,
            mapper=SafeDatasetMapper(cfg, True),
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            seed=cfg.SEED if cfg.SEED >= 0 else None,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SafeDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)
