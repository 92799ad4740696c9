"""Continual-learning methods as Lightning callbacks, one per file."""

from lightning_cl.callbacks.accuracy_threshold import AccuracyThreshold
from lightning_cl.callbacks.ogd import OrthogonalGradientDescent
from lightning_cl.callbacks.task_lr import TaskLearningRate

__all__ = ["AccuracyThreshold", "OrthogonalGradientDescent", "TaskLearningRate"]
