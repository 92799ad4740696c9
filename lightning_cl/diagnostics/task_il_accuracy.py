"""The task-IL accuracy of a class-IL run: after each task, each task's test set is also scored
with the network's outputs restricted to that task's own units, as Mammoth reports task-IL and
class-IL accuracy from one class-IL run (Buzzega et al. 2020; github.com/aimagelab/mammoth,
``utils/training.py`` at commit 7ab9db97e3b5df6e1d9974468c7958f5c07696e1: ``evaluate`` scores the
outputs, then ``mask_classes(outputs, dataset, k)`` sets every output outside task ``k``'s classes to
``-inf`` and scores them again). Training is untouched: the scores come from the forward pass that
measures the accuracy matrix.

Switched on by this callback in the config (``configs/benchmarks/seq_mnist.yaml``):

.. code-block:: yaml

    trainer:
      callbacks+:
        - class_path: lightning_cl.diagnostics.TaskILAccuracy

The run recorder (``lightning_cl/recorder.py``) asks the trainer's callbacks for
:meth:`TaskILAccuracy.task_il_units` and then records ``task_il_accuracy_matrix`` and
``task_il_random_init_accuracy`` in ``results.json``; the report shows their metrics.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override


class TaskILAccuracy(Callback):
    """Record a class-IL run's task-IL accuracy matrix too (each test set scored on its task's units).

    In class-IL every task has units of its own (its classes; tasks that repeat classes, as
    Permuted MNIST's, get a block of units each: ``lightning_cl.data.scenario``), so restricting
    the outputs to them is the task-IL question asked of the class-IL model. In task-IL the
    accuracy matrix already is that (the logits are masked in training and testing), and in
    domain-IL the tasks share their units: then nothing more is recorded, and the run says so.
    """

    @staticmethod
    def task_il_units(datamodule: Any) -> list[list[int]] | None:
        """The output units of each task when the run is class-IL, else None (nothing to record)."""
        if getattr(datamodule, "scenario", None) != "class":
            return None
        return [list(datamodule.task_units(t)) for t in range(datamodule.num_tasks)]

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        scenario = getattr(trainer.datamodule, "scenario", None)
        if self.task_il_units(trainer.datamodule) is None:
            why = ("the accuracy matrix already is task-IL" if scenario == "task"
                   else "the tasks share their output units")
            rank_zero_info(f"TaskILAccuracy: data.scenario={scenario}: {why}; no task-IL matrix is recorded.")
