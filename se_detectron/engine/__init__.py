"""Detection training and evaluation: the trainer, exact resumption, curves, prediction."""

from .plot import plot_training_curves, read_metrics
from .resume import ResumableTrainingSampler, RNGStates
from .trainer import PlotCurvesHook, SETrainer

__all__ = [
    "PlotCurvesHook",
    "RNGStates",
    "ResumableTrainingSampler",
    "SETrainer",
    "plot_training_curves",
    "read_metrics",
]
