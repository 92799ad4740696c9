"""The task loop: train the tasks of a task DataModule one after the other inside one ``fit``.

One ``Trainer.fit`` covers the whole sequence, so TensorBoard has one continuous step axis,
one optimiser state carries over between tasks (as in the notebook), and a checkpoint saved
at any epoch end carries the task position (this callback's state and the DataModule's).

A task lasts ``epochs_per_task`` epochs, or ``steps_per_task`` optimiser steps (then the
task is one epoch of that many batches). At its end the loop calls ``on_task_end`` of every
:class:`TaskCallback`, hands the model to the :class:`~lightning_cl.recorder.RunRecorder`
(evaluation, logging, ``results.json``), and moves the DataModule to the next task.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.methods.contract import MODULE, missing
from lightning_cl.recorder import RunRecorder
from lightning_cl.results import RunResults
from lightning_cl.task_callback import TaskCallback

DEFAULT_EPOCHS_PER_TASK = 5


class TaskLoop(TaskCallback):
    """Drives the task sequence of a :class:`~lightning_cl.data.task_data.TaskDataModule`.

    Args:
        epochs_per_task: the number of epochs of each task, or the most of them when a
            :class:`TaskCallback` can end a task early (accuracy-threshold stopping).
            Default 5 when ``steps_per_task`` is not set either.
        steps_per_task: train each task for this many optimiser steps instead (the
            published Split-MNIST protocol: 2000), over as many passes as that takes.

    The trainer's ``max_epochs`` is set from these.

    Raises:
        ValueError: if both are set or one is < 1 (at construction); at setup, if the
            DataModule is not a task DataModule, the module lacks ``network``/``eval_logits``,
            or the trainer does not reload the loaders every epoch.
    """

    def __init__(self, epochs_per_task: int | None = None, steps_per_task: int | None = None) -> None:
        if epochs_per_task is not None and steps_per_task is not None:
            raise ValueError(
                f"task_loop.epochs_per_task={epochs_per_task} and task_loop.steps_per_task={steps_per_task} are both "
                "set; a task's length is one of them: set the other to null."
            )
        for name, value in (("epochs_per_task", epochs_per_task), ("steps_per_task", steps_per_task)):
            if value is not None and value < 1:
                raise ValueError(f"task_loop.{name}={value} must be at least 1.")
        self.steps_per_task = steps_per_task
        self.epochs_per_task = epochs_per_task if steps_per_task is None else 1
        if self.epochs_per_task is None:
            self.epochs_per_task = DEFAULT_EPOCHS_PER_TASK
        self.recorder = RunRecorder()
        self._epochs_in_task = 0
        self._task_start_step = 0

    # The CLI records the resolved config, its overrides and the seed in results.json through these.
    @property
    def run_config(self) -> dict[str, Any] | None:
        return self.recorder.run_config

    @run_config.setter
    def run_config(self, value: dict[str, Any] | None) -> None:
        self.recorder.run_config = value

    @property
    def overrides(self) -> dict[str, Any] | None:
        return self.recorder.overrides

    @overrides.setter
    def overrides(self, value: dict[str, Any] | None) -> None:
        self.recorder.overrides = value

    @property
    def seed(self) -> int | None:
        return self.recorder.seed

    @seed.setter
    def seed(self, value: int | None) -> None:
        self.recorder.seed = value

    @property
    def epochs_in_task(self) -> int:
        """Epochs of the current task trained so far (0 while its first runs)."""
        return self._epochs_in_task

    # ----------------------------------------------------------------- Lightning hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        check_task_interfaces(trainer, pl_module)
        datamodule: TaskDataModule = trainer.datamodule
        datamodule.train_batches = self.steps_per_task
        trainer.fit_loop.max_epochs = self.epochs_per_task * datamodule.num_tasks
        self.recorder.setup(trainer)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.recorder.start(trainer, pl_module)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epochs_in_task == 0:
            self._task_start_step = trainer.global_step
            for callback in self._task_callbacks(trainer):
                callback.on_task_start(trainer, pl_module, trainer.datamodule.current_task)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        datamodule = trainer.datamodule
        task = datamodule.current_task
        self._check_finite_loss(trainer, pl_module, task)
        self._epochs_in_task += 1
        callbacks = self._task_callbacks(trainer)
        ask = [cb.task_should_end(trainer, pl_module, task) for cb in callbacks]  # ask all: each may log
        if self._epochs_in_task < self.epochs_per_task and not any(ask):
            return
        for callback in callbacks:
            callback.on_task_end(trainer, pl_module, task)
        self.recorder.task_finished(trainer, pl_module, task, self._epochs_in_task,
                                    trainer.global_step - self._task_start_step)
        self._epochs_in_task = 0
        if task + 1 < datamodule.num_tasks:
            datamodule.current_task = task + 1  # the trainer reloads the loaders next epoch
        else:
            trainer.should_stop = True

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.recorder.results_path is not None and trainer.is_global_zero:
            print(f"results: {self.recorder.results_path}")
            for warning in self.run_results(trainer).warnings:  # also in results.json and the report
                print(f"warning: {warning}", file=sys.stderr)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Keep what was measured, marked incomplete, whatever stopped the run.
        if isinstance(trainer.datamodule, TaskDataModule):  # else the setup check itself failed
            error = self.describe_exception(trainer, exception)
            try:
                self.recorder.write(self.recorder.record(trainer, complete=False, error=error), trainer)
            except OSError as err:  # e.g. the full disk that stopped the run: results.json stays as it was
                if not isinstance(exception, OSError):  # else the exception in flight already says so
                    print(f"warning: {err}; results.json keeps the last finished task, not marked failed",
                          file=sys.stderr)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"epochs_in_task": self._epochs_in_task, "task_start_step": self._task_start_step,
                **self.recorder.state_dict()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epochs_in_task = state_dict["epochs_in_task"]
        self._task_start_step = state_dict.get("task_start_step", 0)
        self.recorder.load_state_dict(state_dict)

    def run_results(self, trainer: Trainer) -> RunResults:
        """The run's record as measured so far: complete once every task is trained."""
        return self.recorder.record(trainer, complete=len(self.recorder.evaluations) == trainer.datamodule.num_tasks)

    def describe_exception(self, trainer: Trainer, exception: BaseException) -> str:
        """Why the run stopped, for ``results.json``'s ``error``; a SIGTERM says how to resume."""
        if not isinstance(exception, SIGTERMException):
            return f"{type(exception).__name__}: {exception}"
        log_dir = Path(trainer.log_dir) if trainer.log_dir is not None else Path(".")
        dirpath = getattr(trainer.checkpoint_callback, "dirpath", None)
        ckpt = Path(dirpath) / "last.ckpt" if dirpath is not None else None
        resume = (f"resume with: lightning-cl fit -c {log_dir / 'config.yaml'} --ckpt_path {ckpt}"
                  if ckpt is not None and ckpt.is_file() else
                  f"no checkpoint was saved yet; start again with: lightning-cl fit -c {log_dir / 'config.yaml'}")
        return (f"the run was terminated by SIGTERM (e.g. a scheduler's time limit) after {len(self.recorder.evaluations)} "
                f"finished task(s); {resume}")

    # ----------------------------------------------------------------- helpers
    def _check_finite_loss(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        """Stop a diverged run before its model is evaluated and recorded as a finished task."""
        epoch_metrics = getattr(pl_module, "train_epoch_metrics", None)
        loss = epoch_metrics()["loss"] if epoch_metrics is not None else 0.0
        if not math.isfinite(loss):
            raise FloatingPointError(
                f"the training loss was {loss} in epoch {trainer.current_epoch} (task {task + 1}): training diverged. "
                "Try a smaller model.lr (or model.lambda_l1). Results up to the last finished task are kept."
            )

    def _task_callbacks(self, trainer: Trainer) -> list[TaskCallback]:
        return [cb for cb in trainer.callbacks if isinstance(cb, TaskCallback) and cb is not self]


def task_loop_of(trainer: Trainer) -> TaskLoop | None:
    """The trainer's task loop (None without one)."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, TaskLoop)), None)


def run_results(trainer: Trainer) -> RunResults | None:
    """The record of the trainer's run so far (None without a task loop): what callbacks read."""
    loop = task_loop_of(trainer)
    return loop.run_results(trainer) if loop is not None else None


def check_task_interfaces(trainer: Trainer, pl_module: LightningModule) -> None:
    """What the task loop, the methods and the diagnostics rely on, checked once at setup."""
    datamodule = trainer.datamodule
    if not isinstance(datamodule, TaskDataModule):
        raise ValueError(
            f"TaskLoop needs a lightning_cl.data.TaskDataModule (e.g. SplitMNIST, PermutedMNIST, RotatedMNIST); "
            f"got {type(datamodule).__name__}. A new benchmark subclasses TaskDataModule."
        )
    lacks = missing(pl_module, MODULE)
    if lacks:
        raise ValueError(
            f"TaskLoop needs a module with {', '.join(lacks)} (as lightning_cl.classifier.ContinualClassifier has, "
            f"declared in lightning_cl.methods.contract.ContinualModule); {type(pl_module).__name__} lacks them."
        )
    if trainer.reload_dataloaders_every_n_epochs != 1:
        raise ValueError(
            f"trainer.reload_dataloaders_every_n_epochs={trainer.reload_dataloaders_every_n_epochs}: the task loop "
            "switches tasks between epochs, so the loaders must be rebuilt every epoch; set it to 1."
        )
