"""What a continual-learning method may contribute to training, besides the task moments of
:class:`~lightning_cl.task_callback.TaskCallback`.

The module owns the training step and combines what methods *return* (STYLE.md: methods do
not mutate shared state):

* :meth:`Method.training_batch` may return a new training batch (the module calls it from
  ``on_after_batch_transfer``, which Lightning lets return a new batch);
* :meth:`Method.loss_terms` returns named loss terms, added to the loss and logged as
  ``train/loss_<name>``;
* :meth:`Method.current_loss_weight` scales the current batch's cross-entropy (LwF and ER
  weight it by ``1/t`` in task ``t``);
* gradient methods (OGD, A-GEM, GPM) act in ``on_before_optimizer_step``, once per optimiser
  step on the final gradient, and set ``projects_gradients`` so that settings that would
  change that gradient behind their back (mixed precision) are refused.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer

from lightning_cl.task_callback import TaskCallback


class Method(TaskCallback):
    """Base of the continual-learning methods. ``name`` is what ``results.json`` records."""

    name: ClassVar[str]
    projects_gradients: ClassVar[bool] = False

    def training_batch(self, trainer: Trainer, pl_module: LightningModule, batch: Any) -> Any:
        """Return the batch to train on (default: ``batch`` unchanged)."""
        return batch

    def loss_terms(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: tuple[torch.Tensor, tuple[torch.Tensor, ...]]
    ) -> dict[str, torch.Tensor]:
        """Named loss terms to add; ``outputs`` are the module's ``(logits, hidden)`` of ``batch``."""
        return {}

    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """The weight of the current batch's cross-entropy (default 1)."""
        return 1.0


def methods_of(trainer: Trainer) -> list[Method]:
    return [cb for cb in trainer.callbacks if isinstance(cb, Method)]


def method_name(trainer: Trainer) -> str:
    """``none`` (naive fine-tuning), ``joint`` (``data.cumulative``), a method's name, or names joined by ``+``."""
    names = [m.name for m in methods_of(trainer)]
    if getattr(trainer.datamodule, "cumulative", False):
        names.insert(0, "joint")
    return "+".join(names) or "none"
