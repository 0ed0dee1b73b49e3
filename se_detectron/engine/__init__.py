"""Detection training and evaluation: the trainer, exact resumption, curves, prediction."""

from .optimizer import OPTIMIZERS, SolverConfigError, build_optimizer
from .resume import ResumableTrainingSampler, RNGStates
from .trainer import PlotCurvesHook, SETrainer
from .training_curves import plot_training_curves, read_metrics

__all__ = [
    "OPTIMIZERS",
    "PlotCurvesHook",
    "RNGStates",
    "ResumableTrainingSampler",
    "SETrainer",
    "SolverConfigError",
    "build_optimizer",
    "plot_training_curves",
    "read_metrics",
]
