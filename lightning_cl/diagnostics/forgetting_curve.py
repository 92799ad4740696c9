"""Forgetting curve: test accuracy on every task seen so far, sampled while a task trains.

The notebook's diagnostics, 1: in naive fine-tuning the accuracy on earlier tasks collapses within
the first ~10 batches of a new task, so the default samples every 2 batches for the first 50
batches of a task, then every 25. Accuracies are measured on a fixed, class-balanced
subsample of the test set (200 images per task by default) so that a sample costs one small
forward pass, and they stay on the device until the task ends (no host sync per batch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic, check_positive, due, to_host
from lightning_cl.diagnostics.latent_space import class_balanced_subsample
from lightning_cl.task_callback import setting
from lightning_cl.plots import forgetting_curve_figure
from lightning_cl.results import write_json_atomic


def per_group_accuracy(logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Accuracy of ``logits`` on ``y`` within each group (``group[i]`` in 0..num_groups-1); NaN for an empty group.

    Stays on the device: no host sync.
    """
    correct = (logits.argmax(1) == y).to(torch.float32)
    hits = torch.zeros(num_groups, device=logits.device).scatter_add_(0, group, correct)
    counts = torch.zeros(num_groups, device=logits.device).scatter_add_(0, group, torch.ones_like(correct))
    return hits / counts  # 0/0 = NaN for an empty group


class ForgettingCurve(Diagnostic):
    """Samples the test accuracy of every task seen so far while a task trains.

    Writes ``forgetting_curve.png`` and its numbers, ``forgetting_curve.json`` (``records``:
    step, task, batch_in_task, accuracy per task, null before a task is trained), beside
    ``results.json`` at the end of the run, and logs
    ``forgetting/acc_task{j}`` to the loggers at every task end (at the steps they were taken).
    Tasks not yet trained are recorded as NaN.

    Args:
        every_n_batches: sampling interval during the first ``dense_batches`` batches of a task.
        dense_batches: how many batches into a task the dense sampling lasts.
        sparse_every_n_batches: sampling interval after that.
        samples_per_task: test images per task (class-balanced) that the accuracy is measured on.
        seed: seed of the subsample.

    Raises:
        ValueError: if an interval or ``samples_per_task`` is not a positive integer, or
            ``dense_batches`` is negative.
    """

    def __init__(
        self,
        every_n_batches: int = 2,
        dense_batches: int = 50,
        sparse_every_n_batches: int = 25,
        samples_per_task: int = 200,
        seed: int = 0,
    ) -> None:
        check_positive(setting(ForgettingCurve, "every_n_batches"), every_n_batches)
        check_positive(setting(ForgettingCurve, "sparse_every_n_batches"), sparse_every_n_batches)
        check_positive(setting(ForgettingCurve, "samples_per_task"), samples_per_task)
        if dense_batches < 0:
            raise ValueError(f"{setting(ForgettingCurve, 'dense_batches')}={dense_batches} must be >= 0.")
        self.every_n_batches, self.dense_batches = every_n_batches, dense_batches
        self.sparse_every_n_batches, self.samples_per_task, self.seed = sparse_every_n_batches, samples_per_task, seed
        self._subsample: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # x, y, task of each
        self._batch_in_task = 0
        self._pending: list[tuple[int, int, int, torch.Tensor]] = []  # on the device until the task ends
        self.records: list[tuple[int, int, int, list[float]]] = []  # (step, task, batch in task, acc per task)

    # ----------------------------------------------------------------- measurement
    def _build_subsample(self, trainer: Trainer) -> None:
        parts = []
        for x, y, t in trainer.datamodule.test_sets():  # ~samples_per_task per task, split over its labels
            labels = y.unique().tolist()
            n = -(-self.samples_per_task // len(labels))
            idx = class_balanced_subsample(y, labels, n, seed=self.seed)[: self.samples_per_task]
            parts.append((x[idx], y[idx], t[idx]))
        self._subsample = tuple(torch.cat(p) for p in zip(*parts))

    @torch.no_grad()
    def _measure(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        if self._subsample is None:
            self._build_subsample(trainer)
        x, y, group = self._subsample
        logits, _ = pl_module.eval_logits(x, group)
        acc = per_group_accuracy(logits, y, group, trainer.datamodule.num_tasks)
        acc[task + 1 :] = float("nan")  # not trained yet
        self._pending.append((trainer.global_step, task, self._batch_in_task, acc))

    def _flush(self, trainer: Trainer) -> None:
        """Move the pending samples to the host (one sync) and log them."""
        new, self._pending = to_host(self._pending), []
        self.records.extend(new)
        for step, _, _, accs in new:
            metrics = {f"forgetting/acc_task{j + 1}": a for j, a in enumerate(accs) if a == a}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def arrays(self) -> dict[str, np.ndarray]:
        """The samples as arrays: ``step``, ``task``, ``batch_in_task`` and ``accuracy`` (records x tasks)."""
        return {
            "step": np.array([r[0] for r in self.records]),
            "task": np.array([r[1] for r in self.records]),
            "batch_in_task": np.array([r[2] for r in self.records]),
            "accuracy": np.array([r[3] for r in self.records], dtype=float),
        }

    # ----------------------------------------------------------------- hooks
    @override
    def on_task_start(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self._batch_in_task = 0
        self._measure(trainer, pl_module, task)  # the accuracies the task starts from

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batch_in_task += 1
        if due(self._batch_in_task, self.every_n_batches, self.dense_batches, self.sparse_every_n_batches):
            self._measure(trainer, pl_module, trainer.datamodule.current_task)

    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self._flush(trainer)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)
        if not self.records:
            return
        a = self.arrays()
        fig = forgetting_curve_figure(a["step"], a["task"], a["batch_in_task"], a["accuracy"],
                                      trainer.datamodule.task_names(), zoom_batches=self.dense_batches)
        self.publish(trainer, fig, "forgetting_curve")
        out = self.output_dir(trainer)
        if out is not None and trainer.is_global_zero:  # the numbers behind the picture
            write_json_atomic(out / "forgetting_curve.json", {
                "tasks": trainer.datamodule.task_classes(),
                "task_names": trainer.datamodule.task_names(),
                "samples_per_task": self.samples_per_task,
                "records": [{"step": s, "task": t, "batch_in_task": b, "accuracy": [a if a == a else None for a in acc]}
                            for s, t, b, acc in self.records],
            })

    @override
    def state_dict(self) -> dict[str, Any]:
        records = self.records + to_host(self._pending)
        return {"batch_in_task": self._batch_in_task, "records": [list(r) for r in records]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._batch_in_task = state_dict["batch_in_task"]
        self.records = [tuple(r) for r in state_dict["records"]]
