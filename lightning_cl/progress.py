"""The progress bar of ``lightning-cl``: Lightning's, with the task in its description.

Lightning's bar says ``Epoch 7``, counting epochs across the whole task sequence; this one says
``task 2/5 [3, 4]`` (and ``epoch 2/5`` of the task when a task lasts several epochs, the most
epochs when a callback may end a task early). Each task's bar stays on a line of its own,
above the task's line of test accuracies.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.task_callback import TaskCallback
from lightning_cl.task_loop import task_loop_of


def task_description(trainer: Trainer) -> str:
    """``task 2/5 [3, 4]``, ``task 2/5 [3, 4], epoch 3/5``; Lightning's ``Epoch N`` without a task loop."""
    datamodule, loop = trainer.datamodule, task_loop_of(trainer)
    if not isinstance(datamodule, TaskDataModule) or loop is None:
        return f"Epoch {trainer.current_epoch}"
    task = datamodule.current_task
    description = f"task {task + 1}/{datamodule.num_tasks} {datamodule.task_names()[task]}"
    if loop.epochs_per_task > 1:
        description += f", epoch {loop.epochs_in_task + 1}/{loop.epochs_per_task}"
    return description


class TaskProgressBar(TQDMProgressBar, TaskCallback):
    """:class:`~lightning.pytorch.callbacks.TQDMProgressBar` whose training bar names the task.

    At a task's end its bar is closed, so that it stays on screen with a line of its own and the
    task's line (the test accuracy) comes below it, not behind it on the same line.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._bar_closed = False

    @property
    def train_description(self) -> str:
        return task_description(self.trainer)  # a new bar's, instead of "Training"

    def on_train_epoch_start(self, trainer: Trainer, *_: Any) -> None:
        # Lightning's, with the description set before the bar is redrawn: its "Epoch N" would
        # otherwise be drawn first (and stay in a log of the output).
        if self._leave or self._bar_closed:
            self.train_progress_bar = self.init_train_tqdm()
            self._bar_closed = False
        bar = self.train_progress_bar
        bar.set_description(task_description(trainer), refresh=False)
        bar.reset(convert_inf(self.total_train_batches))
        bar.initial = 0

    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.close()
        self._bar_closed = True
