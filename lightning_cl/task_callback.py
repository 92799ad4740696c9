"""The moments of a task sequence that continual-learning methods hook into.

A method (OGD, EWC, a diagnostic...) subclasses :class:`TaskCallback` and overrides what it
needs; :class:`lightning_cl.task_loop.TaskLoop` calls these on every such callback of the
trainer, in the trainer's callback order.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer


class TaskCallback(Callback):
    """A Lightning ``Callback`` that also sees task boundaries. Tasks are numbered from 0."""

    def on_task_start(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        """Called before the first training batch of ``task`` (in ``on_train_epoch_start``)."""

    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        """Called after the last epoch of ``task``, before it is evaluated and the next task starts."""

    def task_should_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> bool:
        """Asked at the end of every epoch: return True to end ``task`` now (e.g. accuracy reached)."""
        return False


def setting(callback: type | object, arg: str) -> str:
    """How a user names a callback's argument in a message: where it is set in a config,
    e.g. ``trainer.callbacks: OrthogonalGradientDescent init_args.variant``."""
    cls = callback if isinstance(callback, type) else type(callback)
    return f"trainer.callbacks: {cls.__name__} init_args.{arg}"
