"""Continual-learning methods as Lightning callbacks, one per file."""

from lightning_cl.callbacks.accuracy_threshold import AccuracyThreshold
from lightning_cl.callbacks.agem import AGEM
from lightning_cl.callbacks.er import ExperienceReplay
from lightning_cl.callbacks.ewc import EWC, OnlineEWC
from lightning_cl.callbacks.gpm import GPM
from lightning_cl.callbacks.lwf import LwF
from lightning_cl.callbacks.mas import MAS
from lightning_cl.callbacks.ogd import OrthogonalGradientDescent
from lightning_cl.callbacks.si import SI
from lightning_cl.callbacks.task_lr import TaskLearningRate

__all__ = ["AGEM", "EWC", "GPM", "MAS", "SI", "AccuracyThreshold", "ExperienceReplay", "LwF", "OnlineEWC",
           "OrthogonalGradientDescent", "TaskLearningRate"]
