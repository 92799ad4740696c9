"""Task schedules that are not continual-learning methods: accuracy-threshold stopping and a
learning rate by task. The methods live in :mod:`lightning_cl.methods`."""

from lightning_cl.callbacks.accuracy_threshold import AccuracyThreshold
from lightning_cl.callbacks.task_lr import TaskLearningRate

__all__ = ["AccuracyThreshold", "TaskLearningRate"]

# Configs written before the methods moved name them here; say where they are now.
MOVED_TO_METHODS = {"AGEM", "EWC", "ExperienceReplay", "GPM", "LwF", "MAS", "OnlineEWC", "OrthogonalGradientDescent", "SI"}


def __getattr__(name: str):
    if name in MOVED_TO_METHODS:
        raise ImportError(f"lightning_cl.callbacks.{name} is now lightning_cl.methods.{name}: "
                          f"write class_path: lightning_cl.methods.{name} in the config.")
    raise AttributeError(f"module 'lightning_cl.callbacks' has no attribute {name!r}")
