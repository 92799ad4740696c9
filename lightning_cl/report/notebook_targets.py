"""The notebook's results, as data for the report.

Each :class:`Target` is one row of a table or sentence of the notebook's results: which
experiment it is (read from a run's resolved config), what is measured, and the notebook's
values as printed (single runs; a range where the notebook gives one).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    """What identifies a notebook experiment in a run's resolved config (``results.json["config"]``).

    ``kind`` is ``"concurrent"`` (one task) or ``"sequential"``; ``method`` is ``"ogd"`` when a
    trainer callback's class path names OGD, else ``"none"``; ``threshold`` is the
    accuracy-threshold of a stopping callback (None: fixed epochs).
    """

    kind: str
    norm: str = "none"
    dropout: float = 0.0
    lambda_l1: float = 0.0
    method: str = "none"
    threshold: float | None = None

    def label(self) -> str:
        parts = [self.kind, {"none": "plain", "batch": "BatchNorm", "layer": "LayerNorm"}[self.norm]]
        if self.dropout:
            parts.append(f"dropout {self.dropout:g}")
        if self.lambda_l1:
            parts.append(f"lambda_l1 {self.lambda_l1:g}")
        if self.method != "none":
            parts.append(self.method.upper())
        if self.threshold is not None:
            parts.append(f"threshold {self.threshold:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Column:
    """One measured quantity: ``measure`` is a list in results.json (``seen_accuracy``,
    ``seen_loss``, ``sparsity``), read at task ``task`` (0-based; -1: the last task)."""

    label: str
    measure: str
    task: int


@dataclass(frozen=True)
class Target:
    """One row of the notebook's results: ``values[i]`` is its value in ``columns[i]`` ("" where none)."""

    section: str
    row: str
    experiment: Experiment
    columns: tuple[Column, ...]
    values: tuple[str, ...]


def _per_task(measure: str, first: int = 0) -> tuple[Column, ...]:
    return tuple(Column(f"t{t + 1}", measure, t) for t in range(first, 5))


CONCURRENT = "Concurrent, 5 epochs: val acc on all classes"
SEQUENTIAL_ACC = "Sequential: accuracy on the seen classes after each task"
SEQUENTIAL_LOSS = "Sequential: validation loss on the seen classes after each task"
L1_CONCURRENT = "L1 sparsity, concurrent: val acc and population sparsity"
L1_SEQUENTIAL = "Sequential: population sparsity after each task"
OGD = "OGD + BatchNorm (Adam 1e-4, lr/5 after task 1): accuracy on the seen classes"
LOSS_PER_TASK = "Validation loss per task: plain / BatchNorm / OGD+BatchNorm"
OGD_DROPOUT = "Dropout on top of OGD + BatchNorm"

_ACC = (Column("val acc", "seen_accuracy", -1),)
_L1 = (Column("val acc", "seen_accuracy", -1), Column("population sparsity", "sparsity", -1))
_SEQ = "sequential"

TARGETS: tuple[Target, ...] = (
    Target(CONCURRENT, "plain", Experiment("concurrent"), _ACC, ("0.9646-0.9719",)),
    Target(CONCURRENT, "BatchNorm", Experiment("concurrent", norm="batch"), _ACC, ("0.9782",)),
    Target(SEQUENTIAL_ACC, "plain", Experiment(_SEQ), _per_task("seen_accuracy"),
           ("0.996", "0.486", "0.314", "0.252", "0.1985")),
    Target(SEQUENTIAL_ACC, "BatchNorm", Experiment(_SEQ, norm="batch"), _per_task("seen_accuracy"),
           ("0.998", "0.486", "0.316", "0.253", "0.1987")),
    Target(SEQUENTIAL_ACC, "Dropout 0.5", Experiment(_SEQ, dropout=0.5), _per_task("seen_accuracy"),
           ("0.996", "0.484", "0.312", "0.251", "0.1968")),
    Target(SEQUENTIAL_LOSS, "plain", Experiment(_SEQ), _per_task("seen_loss"),
           ("0.013", "11.24", "10.35", "13.89", "9.31")),
    Target(SEQUENTIAL_LOSS, "BatchNorm", Experiment(_SEQ, norm="batch"), _per_task("seen_loss"),
           ("0.015", "3.74", "4.80", "5.49", "5.84")),
    *(
        Target(L1_CONCURRENT, f"lambda {lam}", Experiment("concurrent", lambda_l1=float(lam)), _L1, (acc, sp))
        for lam, acc, sp in (("0.0", "0.972", "0.544"), ("0.001", "0.975", "0.567"), ("0.1", "0.973", "0.831"),
                             ("1.0", "0.949", "0.924"), ("2.0", "0.906", "0.933"))
    ),
    Target(L1_SEQUENTIAL, "plain, lambda 0", Experiment(_SEQ), _per_task("sparsity"),
           ("0.50", "0.78", "0.86", "0.86", "0.90")),
    Target(L1_SEQUENTIAL, "plain, lambda 1.0", Experiment(_SEQ, lambda_l1=1.0), _per_task("sparsity"),
           ("0.94", "0.94", "0.96", "0.97", "0.97")),
    Target(L1_SEQUENTIAL, "plain, lambda 1.0: accuracy (unchanged from lambda 0)", Experiment(_SEQ, lambda_l1=1.0),
           _per_task("seen_accuracy"), ("0.996", "0.486", "0.314", "0.252", "0.1985")),
    Target(L1_SEQUENTIAL, "BatchNorm, lambda 0", Experiment(_SEQ, norm="batch"), _per_task("sparsity"),
           ("~0.5", "~0.5", "~0.5", "~0.5", "~0.5")),
    Target(OGD, "threshold 0.98", Experiment(_SEQ, norm="batch", method="ogd", threshold=0.98),
           _per_task("seen_accuracy"), ("0.992", "0.660", "0.379", "0.367", "0.292")),
    Target(OGD, "threshold 0.95", Experiment(_SEQ, norm="batch", method="ogd", threshold=0.95),
           _per_task("seen_accuracy"), ("", "", "", "", "0.369")),
    Target(OGD, "threshold 0.95, lambda_l1 5.0",
           Experiment(_SEQ, norm="batch", lambda_l1=5.0, method="ogd", threshold=0.95),
           _per_task("seen_accuracy"), ("0.992", "0.866", "0.542", "0.446", "0.39-0.47")),
    Target(LOSS_PER_TASK, "plain", Experiment(_SEQ), _per_task("seen_loss", first=1), ("11.2", "10.4", "13.9", "9.3")),
    Target(LOSS_PER_TASK, "BatchNorm", Experiment(_SEQ, norm="batch"), _per_task("seen_loss", first=1),
           ("3.7", "4.8", "5.5", "5.8")),
    Target(LOSS_PER_TASK, "OGD+BatchNorm (threshold 0.98)",
           Experiment(_SEQ, norm="batch", method="ogd", threshold=0.98), _per_task("seen_loss", first=1), ("0.96", "1.57", "1.75", "1.97")),
    # The notebook does not give its dropout here; 0.2 is configs/split_mnist/ogd_bn_dropout.yaml's.
    Target(OGD_DROPOUT, "OGD + BatchNorm + Dropout 0.2 (threshold 0.98)",
           Experiment(_SEQ, norm="batch", dropout=0.2, method="ogd", threshold=0.98),
           (Column("t5", "seen_accuracy", 4),), ("0.27-0.29",)),
)

SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(t.section for t in TARGETS))
