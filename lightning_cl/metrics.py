"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the test accuracy on task ``j`` after training task ``i`` (0-based here; the
formulas in the docs count from 1). ``R`` holds one row per task trained so far and a column
for every task; ``T`` is the number of rows. Definitions (Lopez-Paz & Ranzato 2017; Chaudhry
et al. 2018; Riemer et al. 2019):

* ACC = mean_j R[T-1][j] over the tasks trained (j < T).
* BWT = mean_{j<T-1} (R[T-1][j] - R[j][j]); negative means forgetting.
* FWT = mean_{0<j<T} (R[j-1][j] - b_j), ``b_j`` the accuracy of the randomly initialised model on task j.
* Forgetting = mean_{j<T-1} (max_{i<T-1} R[i][j] - R[T-1][j]).
* Learning accuracy = mean_{j<T} R[j][j].

BWT, FWT and forgetting need two tasks; with one they are None. :data:`CL_METRICS` names them
once for the record, TensorBoard, the log and the report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import fmean

Matrix = Sequence[Sequence[float]]


def average_accuracy(R: Matrix) -> float | None:
    T = len(R)
    return fmean(R[T - 1][:T]) if T else None


def backward_transfer(R: Matrix) -> float | None:
    T = len(R)
    return fmean(R[T - 1][j] - R[j][j] for j in range(T - 1)) if T > 1 else None


def forward_transfer(R: Matrix, random_init: Sequence[float] | None) -> float | None:
    T = len(R)
    if T < 2 or random_init is None:
        return None
    return fmean(R[j - 1][j] - random_init[j] for j in range(1, T))


def forgetting(R: Matrix) -> float | None:
    T = len(R)
    if T < 2:
        return None
    return fmean(max(R[i][j] for i in range(T - 1)) - R[T - 1][j] for j in range(T - 1))


def learning_accuracy(R: Matrix) -> float | None:
    T = len(R)
    return fmean(R[j][j] for j in range(T)) if T else None


@dataclass(frozen=True)
class CLMetric:
    """One metric: its key (in ``results.json`` and ``summary.json``, TensorBoard's ``cl/<key>``
    and ``hparams/<key>``), its label (the report's tables, the log), what it means in words
    (the report's legend) and how it is computed from ``R`` and the random-init accuracies."""

    key: str
    label: str
    meaning: str
    compute: Callable[[Matrix, Sequence[float] | None], float | None]


ACC = CLMetric("acc", "ACC", "mean final accuracy over the tasks", lambda R, b: average_accuracy(R))
BWT = CLMetric("bwt", "BWT", "final minus just-learnt accuracy (negative: forgetting)", lambda R, b: backward_transfer(R))
FWT = CLMetric("fwt", "FWT", "accuracy on a task before training it minus a random network's", forward_transfer)
FORGETTING = CLMetric("forgetting", "forgetting", "drop from the best earlier accuracy", lambda R, b: forgetting(R))
LEARNING_ACC = CLMetric("learning_acc", "learning acc", "mean just-learnt accuracy", lambda R, b: learning_accuracy(R))
CL_METRICS = (ACC, BWT, FWT, FORGETTING, LEARNING_ACC)  # in this order in results.json, summary.json and the report


def cl_metrics(R: Matrix, random_init: Sequence[float] | None) -> dict[str, float | None]:
    """Every metric of :data:`CL_METRICS`, by key."""
    return {m.key: m.compute(R, random_init) for m in CL_METRICS}
