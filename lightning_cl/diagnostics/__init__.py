"""Diagnostic callbacks: the pictures of the notebook's diagnostics, each a callback switched on in
config (``-c configs/diagnostics.yaml`` switches on all of them). Each logs to TensorBoard and
saves a PNG beside ``results.json``. :class:`TaskILAccuracy` draws nothing: it has a class-IL
run record its task-IL accuracy too (Mammoth's masking), in ``results.json``."""

from lightning_cl.diagnostics.accuracy_matrix import AccuracyMatrix
from lightning_cl.diagnostics.forgetting_curve import ForgettingCurve
from lightning_cl.diagnostics.latent_space import LatentSpace
from lightning_cl.diagnostics.probability_profile import ProbabilityProfile
from lightning_cl.diagnostics.task_il_accuracy import TaskILAccuracy
from lightning_cl.diagnostics.weight_updates import WeightUpdates

__all__ = ["AccuracyMatrix", "ForgettingCurve", "LatentSpace", "ProbabilityProfile", "TaskILAccuracy",
           "WeightUpdates"]
