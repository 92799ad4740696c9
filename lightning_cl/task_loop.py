"""The task loop: train the tasks of the DataModule one after the other inside one ``fit``.

One ``Trainer.fit`` covers the whole sequence, so TensorBoard has one continuous step axis,
one optimiser state carries over between tasks (as in the notebook), and a checkpoint saved
at any epoch end carries the task position (this callback's state and the DataModule's).

At the end of each task it calls ``on_task_end`` of every :class:`TaskCallback`, evaluates on
the test set (every task, and all classes seen so far), logs that, and writes ``results.json``
(atomically) into the run's log directory.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_cl.evaluation import TaskEvaluation, evaluate_tasks
from lightning_cl.results import FORMAT_VERSION, RESULTS_FILE, write_json_atomic
from lightning_cl.task_callback import TaskCallback


class TaskLoop(TaskCallback):
    """Drives the task sequence of a task DataModule (``tasks``, ``current_task``, ``test_tensors``).

    Args:
        epochs_per_task: the number of epochs of each task, or the most of them when a
            :class:`TaskCallback` can end a task early (accuracy-threshold stopping). This
            replaces ``trainer.max_epochs``, which is set from it.

    Raises:
        ValueError: if ``epochs_per_task`` < 1, or the DataModule has no task sequence.
    """

    def __init__(self, epochs_per_task: int = 5) -> None:
        if epochs_per_task < 1:
            raise ValueError(f"task_loop.epochs_per_task={epochs_per_task} must be at least 1.")
        self.epochs_per_task = epochs_per_task
        self.run_config: dict[str, Any] | None = None  # the resolved CLI config, set by the CLI
        self.seed: int | None = None
        self._epochs_in_task = 0
        self._epochs_used: list[int] = []
        self._evaluations: list[TaskEvaluation] = []
        self._elapsed_before = 0.0  # seconds spent before a resume
        self._fit_start = time.perf_counter()
        self.results_path: Path | None = None

    # ----------------------------------------------------------------- Lightning hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "tasks"):
            raise ValueError("TaskLoop needs a DataModule with a task sequence (e.g. lightning_cl.data.SplitMNIST).")
        trainer.fit_loop.max_epochs = self.epochs_per_task * len(datamodule.tasks)
        if trainer.log_dir is not None:
            self.results_path = Path(trainer.log_dir) / RESULTS_FILE

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epochs_in_task == 0:
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
        self._finish_task(trainer, pl_module, task)
        if task + 1 < len(datamodule.tasks):
            datamodule.current_task = task + 1  # the trainer reloads the loaders next epoch
        else:
            trainer.should_stop = True

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.results_path is not None and trainer.is_global_zero:
            print(f"results: {self.results_path}")

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        # Keep what was measured, marked incomplete, whatever stopped the run.
        self._write_results(trainer, complete=False, error=self.describe_exception(trainer, exception))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_in_task": self._epochs_in_task,
            "epochs_used": list(self._epochs_used),
            "evaluations": [vars(e) for e in self._evaluations],
            "elapsed_s": self._elapsed(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epochs_in_task = state_dict["epochs_in_task"]
        self._epochs_used = list(state_dict["epochs_used"])
        self._evaluations = [TaskEvaluation(**e) for e in state_dict["evaluations"]]
        self._elapsed_before = state_dict["elapsed_s"]

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
        return (f"the run was terminated by SIGTERM (e.g. a scheduler's time limit) after {len(self._evaluations)} "
                f"finished task(s); {resume}")

    # ----------------------------------------------------------------- task end
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

    def _finish_task(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        datamodule = trainer.datamodule
        x, y = datamodule.test_tensors()
        evaluation = evaluate_tasks(pl_module.network, x, y, datamodule.tasks, datamodule.seen_classes(task))
        self._evaluations.append(evaluation)
        self._epochs_used.append(self._epochs_in_task)
        self._epochs_in_task = 0

        metrics = {f"test/acc_task{j + 1}": acc for j, acc in enumerate(evaluation.task_accuracy)}
        metrics |= {"test/acc_seen": evaluation.seen_accuracy, "test/loss_seen": evaluation.seen_loss}
        metrics |= {f"sparsity/{k}": v for k, v in evaluation.sparsity.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info(
            f"task {task + 1}/{len(datamodule.tasks)} {datamodule.tasks[task]} ({self._epochs_used[-1]} epochs): "
            f"seen-class test acc {evaluation.seen_accuracy:.4f}, loss {evaluation.seen_loss:.3f}, "
            f"sparsity {evaluation.sparsity['overall']:.3f}"
        )
        self._write_results(trainer, complete=task + 1 == len(datamodule.tasks))

    def _elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._fit_start

    def results(self, trainer: Trainer, complete: bool, error: str | None = None) -> dict[str, Any]:
        """The ``results.json`` record (format documented in README.md)."""
        evaluations = self._evaluations
        seen = [e.seen_accuracy for e in evaluations]
        return {
            "format_version": FORMAT_VERSION,
            "complete": complete,
            "error": error,
            "tasks": trainer.datamodule.tasks,
            "tasks_done": len(evaluations),
            "accuracy_matrix": [e.task_accuracy for e in evaluations],
            "seen_accuracy": seen,
            "seen_loss": [e.seen_loss for e in evaluations],
            "sparsity": [e.sparsity for e in evaluations],
            "final_seen_accuracy": seen[-1] if complete else None,
            "epochs_per_task": list(self._epochs_used),
            "global_step": trainer.global_step,
            "seed": self.seed,
            "wall_time_s": round(self._elapsed(), 3),
            "config": self.run_config,
        }

    def _write_results(self, trainer: Trainer, complete: bool, error: str | None = None) -> None:
        if self.results_path is None or not trainer.is_global_zero:
            return
        write_json_atomic(self.results_path, self.results(trainer, complete, error))
