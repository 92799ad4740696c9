"""End a task once the epoch's training accuracy reaches a threshold (the notebook's OGD
variant: its OGD runs trained each task to 0.98 or 0.95 training accuracy, or at most about
30 epochs).

The most epochs per task stay ``task_loop.epochs_per_task``; ``results.json`` records the
epochs each task used (``epochs_per_task``).
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.task_callback import TaskCallback, setting


class AccuracyThreshold(TaskCallback):
    """Ask the task loop to end the task when ``pl_module.train_epoch_metrics()["acc"] >= threshold``.

    Args:
        threshold: training accuracy of an epoch (over the batches trained in it) that ends the task.

    Raises:
        ValueError: if ``threshold`` is not in (0, 1].
    """

    def __init__(self, threshold: float = 0.98) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"{setting(AccuracyThreshold, 'threshold')}={threshold} must be in (0, 1].")
        self.threshold = threshold

    @override
    def task_should_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> bool:
        acc = torch.tensor(pl_module.train_epoch_metrics()["acc"], device=pl_module.device)
        # Under DDP each process saw its own shard: decide on the mean, so that all agree.
        acc = float(trainer.strategy.reduce(acc, reduce_op="mean"))
        return acc >= self.threshold
