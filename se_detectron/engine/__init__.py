"""Detection training and evaluation: the trainer, exact resumption, curves, prediction."""

from .optimizer import OPTIMIZERS, SolverConfigError, build_optimizer
from .plot import plot_training_curves, read_metrics
from .resume import ResumableTrainingSampler, RNGStates
from .trainer import PlotCurvesHook, SETrainer

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
