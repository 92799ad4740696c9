"""The run's record: evaluation after each task, its logging, and ``results.json``.

The task loop (``task_loop.py``) decides when a task ends; this decides what is measured
then and keeps the :class:`~lightning_cl.results.RunResults` record, written atomically into
the run's log directory after every task (and, marked incomplete, when a run fails).

The accuracies are those of the network's logits, or of the scores of the run's one method
with a prediction rule of its own (``Method.predict``: iCaRL's nearest mean of exemplars).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info

from lightning_cl.data.scenario import mask_logits
from lightning_cl.evaluation import Predict, TaskEvaluation, evaluate_tasks, pooled_accuracy
from lightning_cl.methods.method import method_name, methods_of, predicting_method
from lightning_cl.metrics import ACC
from lightning_cl.results import RESULTS_FILE, RunResults
from lightning_cl.settings import grouping_settings


def prediction_rule(trainer: Trainer, pl_module: LightningModule) -> Predict | None:
    """The scores of the run's method with a prediction rule, masked to each example's task in
    task-IL as the logits are (where the rule returns None: the network's logits); None where
    no method declares one, so that such runs measure exactly as before."""
    method = predicting_method(methods_of(trainer))
    if method is None:
        return None

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scores = method.predict(trainer, pl_module, x, t)
        if scores is None:
            return pl_module.eval_logits(x, t)[0]
        return mask_logits(scores, t, pl_module.unit_mask)

    return predict


class RunRecorder:
    """Measures the model after each task and keeps the run's :class:`RunResults`.

    ``run_config`` (the resolved CLI config), ``overrides`` (what its command line changed) and ``seed``
    are set by the CLI; a resumed run keeps the overrides of its checkpoint.
    """

    def __init__(self) -> None:
        self.run_config: dict[str, Any] | None = None
        self.overrides: dict[str, Any] | None = None
        self.seed: int | None = None
        self.results_path: Path | None = None
        self.evaluations: list[TaskEvaluation] = []
        # per task, the accuracy on the held-out training examples of the tasks seen so far: what a
        # study's selection of hyper-parameters compares (never the test set)
        self.val_seen_accuracy: list[float | None] = []
        self.epochs_used: list[int] = []
        self.steps_used: list[int] = []
        self.random_init_accuracy: list[float] | None = None
        # the units of each task when a callback asks for a class-IL run's task-IL accuracy too
        # (its task_il_units(datamodule): lightning_cl.diagnostics.TaskILAccuracy); None: not recorded
        self.task_il_units: list[list[int]] | None = None
        self.task_il_random_init_accuracy: list[float] | None = None
        self.method_metrics: dict[str, list[float | None]] = {}  # per task, what methods report (Method.task_metrics)
        self._elapsed_before = 0.0  # seconds spent before a resume
        self._fit_start = time.perf_counter()

    def setup(self, trainer: Trainer) -> None:
        if trainer.log_dir is not None:
            self.results_path = Path(trainer.log_dir) / RESULTS_FILE
        self.task_il_units = next((cb.task_il_units(trainer.datamodule) for cb in trainer.callbacks
                                   if hasattr(cb, "task_il_units")), None)

    def start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """At the start of training: the random-init accuracies ``b_j`` (for FWT), once per run."""
        self._fit_start = time.perf_counter()
        if self.random_init_accuracy is None and not self.evaluations:
            evaluation = evaluate_tasks(pl_module.eval_logits, trainer.datamodule.test_sets(), seen_tasks=1,
                                        predict=prediction_rule(trainer, pl_module), task_units=self.task_il_units)
            self.random_init_accuracy = evaluation.task_accuracy
            self.task_il_random_init_accuracy = evaluation.task_il_accuracy

    def task_finished(self, trainer: Trainer, pl_module: LightningModule, task: int, epochs: int, steps: int) -> None:
        datamodule = trainer.datamodule
        predict = prediction_rule(trainer, pl_module)
        evaluation = evaluate_tasks(pl_module.eval_logits, datamodule.test_sets(), seen_tasks=task + 1, predict=predict,
                                    task_units=self.task_il_units)
        self.evaluations.append(evaluation)
        self.val_seen_accuracy.append(pooled_accuracy(pl_module.eval_logits, datamodule.seen_data("val", task),
                                                      predict=predict))
        self.epochs_used.append(epochs)
        self.steps_used.append(steps)
        self._collect_method_metrics(trainer, pl_module, task)
        record = self.record(trainer, complete=task + 1 == datamodule.num_tasks)

        metrics = {f"test/acc_task{j + 1}": acc for j, acc in enumerate(evaluation.task_accuracy)}
        metrics |= {"test/acc_seen": evaluation.seen_accuracy, "test/loss_seen": evaluation.seen_loss}
        metrics |= {f"sparsity/{k}": v for k, v in evaluation.sparsity.items()}
        metrics |= {f"cl/{k}": v for k, v in record.metrics().items() if v is not None}
        metrics |= {f"cl_task_il/{k}": v for k, v in (record.task_il_metrics() or {}).items() if v is not None}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        length = f"{epochs} epochs" if datamodule.train_batches is None else f"{steps} steps"
        rank_zero_info(
            f"task {task + 1}/{datamodule.num_tasks} {datamodule.task_names()[task]} ({length}): "
            f"seen-task test acc {evaluation.seen_accuracy:.4f}, loss {evaluation.seen_loss:.3f}, "
            f"{ACC.label} {record.metrics()[ACC.key]:.4f}, sparsity {evaluation.sparsity['overall']:.3f}"
            + (f", task-IL {ACC.label} {record.task_il_metrics()[ACC.key]:.4f}" if self.task_il_units else "")
        )
        self.write(record, trainer)
        if record.complete:
            self._log_hparams(trainer, record)

    def _collect_method_metrics(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        done = len(self.evaluations)  # one entry per task trained, this one the last
        for method in methods_of(trainer):
            for key, value in method.task_metrics(trainer, pl_module, task).items():
                column = self.method_metrics.setdefault(key, [])
                column.extend([None] * (done - 1 - len(column)))
                column.append(value)

    def _log_hparams(self, trainer: Trainer, record: RunResults) -> None:
        """The run's grouping settings and final metrics in TensorBoard's HParams view, so that
        ``tensorboard --logdir ROOT`` compares every run of a study."""
        params = {"benchmark": record.benchmark, "scenario": record.scenario, "method": record.method,
                  "seed": record.seed if record.seed is not None else -1}
        params |= {k: v if isinstance(v, (int, float, str, bool)) else str(v)
                   for k, v in grouping_settings(record.config).items()}
        metrics = {f"hparams/{k}": v for k, v in record.metrics().items() if v is not None}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics)

    def elapsed(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._fit_start

    def record(self, trainer: Trainer, complete: bool, error: str | None = None) -> RunResults:
        """The run's :class:`RunResults` as measured so far."""
        datamodule = trainer.datamodule
        evaluations = self.evaluations
        return RunResults(
            complete=complete,
            error=error,
            benchmark=datamodule.benchmark,
            scenario=datamodule.scenario,
            method=method_name(trainer),
            tasks=datamodule.task_classes(),
            task_names=datamodule.task_names(),
            accuracy_matrix=[e.task_accuracy for e in evaluations],
            random_init_accuracy=self.random_init_accuracy,
            seen_accuracy=[e.seen_accuracy for e in evaluations],
            seen_loss=[e.seen_loss for e in evaluations],
            val_seen_accuracy=list(self.val_seen_accuracy),
            sparsity=[e.sparsity for e in evaluations],
            epochs_per_task=list(self.epochs_used),
            steps_per_task=list(self.steps_used),
            global_step=trainer.global_step,
            seed=self.seed,
            wall_time_s=round(self.elapsed(), 3),
            config=self.run_config,
            overrides=self.overrides,
            method_metrics={k: list(v) for k, v in self.method_metrics.items()},
            task_il_accuracy_matrix=None if self.task_il_units is None else [e.task_il_accuracy for e in evaluations],
            task_il_random_init_accuracy=self.task_il_random_init_accuracy,
        )

    def write(self, record: RunResults, trainer: Trainer) -> None:
        if self.results_path is not None and trainer.is_global_zero:
            record.write(self.results_path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_used": list(self.epochs_used),
            "steps_used": list(self.steps_used),
            "evaluations": [vars(e) for e in self.evaluations],
            "val_seen_accuracy": list(self.val_seen_accuracy),
            "random_init_accuracy": self.random_init_accuracy,
            "task_il_random_init_accuracy": self.task_il_random_init_accuracy,
            "elapsed_s": self.elapsed(),
            "overrides": self.overrides,
            "method_metrics": {k: list(v) for k, v in self.method_metrics.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_used = list(state["epochs_used"])
        self.steps_used = list(state.get("steps_used", []))
        self.evaluations = [TaskEvaluation(**e) for e in state["evaluations"]]
        # a checkpoint made before validation was recorded: unknown for the tasks it had done
        self.val_seen_accuracy = list(state.get("val_seen_accuracy", [None] * len(self.evaluations)))
        self.random_init_accuracy = state.get("random_init_accuracy")
        self.task_il_random_init_accuracy = state.get("task_il_random_init_accuracy")
        self.method_metrics = {k: list(v) for k, v in state.get("method_metrics", {}).items()}
        self._elapsed_before = state["elapsed_s"]
        if "overrides" in state:  # the first start knew them; a resume from the run's config.yaml sees none
            self.overrides = state["overrides"]
