"""Detection training and evaluation: the trainer, exact resumption, curves, prediction."""

from .optimizer import OPTIMIZERS, SolverConfigError, build_optimizer
from .preemption import PREEMPTED_EXIT_STATUS, TrainingPreempted
from .resume import ProcessStates, ResumableTrainLoader, build_resumable_train_loader
from .trainer import PlotCurvesHook, SETrainer
from .training_curves import plot_training_curves, read_metrics

__all__ = [
    "OPTIMIZERS",
    "PREEMPTED_EXIT_STATUS",
    "PlotCurvesHook",
    "ProcessStates",
    "ResumableTrainLoader",
    "SETrainer",
    "SolverConfigError",
    "TrainingPreempted",
    "build_optimizer",
    "build_resumable_train_loader",
    "plot_training_curves",
    "read_metrics",
]
