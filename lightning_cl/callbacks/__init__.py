"""Continual-learning methods as Lightning callbacks, one per file."""

from lightning_cl.callbacks.accuracy_threshold import AccuracyThreshold
from lightning_cl.callbacks.ewc import EWC, OnlineEWC
from lightning_cl.callbacks.lwf import LwF
from lightning_cl.callbacks.mas import MAS
from lightning_cl.callbacks.ogd import OrthogonalGradientDescent
from lightning_cl.callbacks.si import SI
from lightning_cl.callbacks.task_lr import TaskLearningRate

__all__ = ["EWC", "MAS", "SI", "AccuracyThreshold", "LwF", "OnlineEWC", "OrthogonalGradientDescent", "TaskLearningRate"]
