"""Accuracy-matrix heatmap of a run: row i = after training task i, column j = test accuracy
on task j, drawn from the run's record when the run ends."""

from __future__ import annotations

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic
from lightning_cl.plots import accuracy_matrix_figure
from lightning_cl.task_loop import run_results


class AccuracyMatrix(Diagnostic):
    """At the end of the run, draws ``accuracy_matrix.png`` from the task loop's record (and logs it to TensorBoard)."""

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        record = run_results(trainer) if trainer.is_global_zero else None
        if record is None or not record.accuracy_matrix:
            return
        self.matrix = np.array(record.accuracy_matrix, dtype=float)
        title = f"Accuracy matrix, {record.benchmark} {record.scenario}-IL, {record.method} (seed {record.seed})"
        self.publish(trainer, accuracy_matrix_figure(self.matrix, record.task_names, title), "accuracy_matrix")
