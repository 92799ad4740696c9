"""Learning rate by task: the notebook's OGD runs trained the first task at the base learning
rate (Adam 1e-4) and every later task at a fifth of it (the notebook's OGD variant; OGD itself
is Farajtabar et al. 2020, AISTATS).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.task_callback import TaskCallback, setting


class TaskLearningRate(TaskCallback):
    """Set every optimiser parameter group's lr to ``base_lr * factor`` for the second and later tasks.

    The base lr is each group's lr when the first task starts; the factor is applied once, not
    once per task (the notebook used lr/5 for every task after the first).

    Args:
        factor: multiplier of the base learning rate from the second task on.

    Raises:
        ValueError: if ``factor`` is not positive.
    """

    def __init__(self, factor: float = 0.2) -> None:
        if factor <= 0:
            raise ValueError(f"{setting(TaskLearningRate, 'factor')}={factor} must be > 0.")
        self.factor = factor
        self._base_lrs: list[list[float]] | None = None  # per optimiser, per parameter group

    @override
    def on_task_start(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        if self._base_lrs is None:  # restored from the checkpoint after a resume
            self._base_lrs = [[group["lr"] for group in opt.param_groups] for opt in trainer.optimizers]
        scale = 1.0 if task == 0 else self.factor
        for opt, base_lrs in zip(trainer.optimizers, self._base_lrs):
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * scale

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self._base_lrs}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._base_lrs = state_dict["base_lrs"]
