"""Accuracy-matrix heatmap of a run: row i = after training task i, column j = test accuracy
on task j, read from the run's ``results.json`` when the run ends."""

from __future__ import annotations

import json

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic
from lightning_cl.plots import accuracy_matrix_figure
from lightning_cl.results import RESULTS_FILE


class AccuracyMatrix(Diagnostic):
    """At the end of the run, draws ``accuracy_matrix.png`` from ``results.json`` (and logs it to TensorBoard)."""

    def __init__(self) -> None:
        self.matrix: np.ndarray | None = None

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        out = self.output_dir(trainer)
        if out is None or not (out / RESULTS_FILE).exists() or not trainer.is_global_zero:
            return
        results = json.loads((out / RESULTS_FILE).read_text())
        if not results["accuracy_matrix"]:
            return
        self.matrix = np.array(results["accuracy_matrix"], dtype=float)
        seed = results.get("seed")
        fig = accuracy_matrix_figure(self.matrix, results["tasks"], f"Accuracy matrix (seed {seed})")
        self.publish(trainer, fig, "accuracy_matrix")
