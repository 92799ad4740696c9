"""``results.json``: the per-run record that users compare across runs (format in README.md).

:class:`RunResults` is the record: the task loop fills it and writes it, the accuracy-matrix
picture and the report take it as it is. Reading a file back (the report over old runs) goes
through :meth:`RunResults.read`, which names the file and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lightning_cl.atomic_write import write_atomic
from lightning_cl.metrics import cl_metrics

RESULTS_FILE = "results.json"
# Changes when a key changes meaning or a reader needs a new key (2 added benchmark, scenario,
# method, task_names, random_init_accuracy and the CL metrics, and moved data under init_args;
# overrides, warnings, method_metrics, val_seen_accuracy and the optional task_il_* keys were added since,
# in format 2).
# A key derived from the others (tasks_done, final_seen_accuracy, final_val_accuracy, the metrics, warnings) is
# recomputed on reading, and readers ignore keys they do not know: adding one keeps the version,
# so that a file of this lightning-cl stays readable by an earlier one.
FORMAT_VERSION = 2

# The seen-task test loss (cross-entropy, nats per example) above which a run's loss counts as
# exploded: the true class then gets on average a probability below e^-1000, i.e. the logits have
# blown up (Adam at model.lr 1e6: ~1e20). A run that only forgets stays far below it (naive
# class-IL Split-MNIST, 5 epochs per task: ~10). A NaN or infinite training loss stops the run
# instead (task_loop.py); this flags a run that went on to the end with numbers of a blown-up model.
EXPLODED_LOSS = 1e3

# Present since format 1: a file without one of them is not a results.json we can read.
REQUIRED_KEYS = ("complete", "tasks", "accuracy_matrix", "seen_accuracy")


class ResultsError(ValueError):
    """A ``results.json`` that cannot be read; the message names the file and the problem."""


@dataclass
class RunResults:
    """One run's measurements. Lists have one entry per task trained so far (``tasks_done``)."""

    complete: bool
    tasks: list[list[int]]
    accuracy_matrix: list[list[float]]
    seen_accuracy: list[float]
    seen_loss: list[float] = field(default_factory=list)
    # per task, the accuracy on the validation examples (held-out training data) of the tasks seen
    # so far; [] in files written before it was recorded, None where a run holds out no validation data
    val_seen_accuracy: list[float | None] = field(default_factory=list)
    sparsity: list[dict[str, float]] = field(default_factory=list)
    error: str | None = None
    benchmark: str = "split_mnist"
    scenario: str = "class"
    method: str = "none"
    task_names: list[str] = field(default_factory=list)
    random_init_accuracy: list[float] | None = None
    epochs_per_task: list[int] = field(default_factory=list)
    steps_per_task: list[int] = field(default_factory=list)
    global_step: int = 0
    seed: int | None = None
    wall_time_s: float | None = None
    config: dict[str, Any] | None = None
    # the settings the command line changed from the -c files' (lightning_cl.settings.overrides);
    # None where not known (a file of format 1 or 2, a run not started by lightning-cl)
    overrides: dict[str, Any] | None = None
    # per task, what the methods report of how they acted (Method.task_metrics), keyed <method>/<what>,
    # e.g. {"gpm/leak": [null, 2e-7]}; {} where no method reports anything (and in older files)
    method_metrics: dict[str, list[float | None]] = field(default_factory=dict)
    # a class-IL run's task-IL accuracy (each test set scored on its own task's units, Mammoth's
    # masking; lightning_cl.diagnostics.TaskILAccuracy): laid out as accuracy_matrix and
    # random_init_accuracy; None, and absent from the file, where not recorded
    task_il_accuracy_matrix: list[list[float]] | None = None
    task_il_random_init_accuracy: list[float] | None = None
    format_version: int = FORMAT_VERSION

    @property
    def tasks_done(self) -> int:
        return len(self.accuracy_matrix)

    @property
    def final_seen_accuracy(self) -> float | None:
        return self.seen_accuracy[-1] if self.complete and self.seen_accuracy else None

    @property
    def final_val_accuracy(self) -> float | None:
        """The validation accuracy after the last task of a complete run: what selection compares."""
        done = self.complete and len(self.val_seen_accuracy) == self.tasks_done
        return self.val_seen_accuracy[-1] if done and self.val_seen_accuracy else None

    @property
    def warnings(self) -> list[str]:
        """What makes the run's numbers suspect though it ran: a seen-task loss that exploded."""
        exploded = [(task, loss) for task, loss in enumerate(self.seen_loss)
                    if not math.isfinite(loss) or loss > EXPLODED_LOSS]
        if not exploded:
            return []
        task, loss = exploded[0]
        return [f"the loss exploded: the seen-task test loss was {loss:.3g} after task {task + 1} (above "
                f"{EXPLODED_LOSS:g} after {len(exploded)} of {len(self.seen_loss)} tasks): the accuracies are those "
                "of a blown-up model; try a smaller model.lr"]

    def metrics(self) -> dict[str, float | None]:
        """ACC, BWT, FWT, forgetting and learning accuracy over the tasks trained so far."""
        return cl_metrics(self.accuracy_matrix, self.random_init_accuracy)

    def task_il_metrics(self) -> dict[str, float | None] | None:
        """The metrics of :meth:`metrics` over the task-IL accuracy matrix; None where none was recorded."""
        if self.task_il_accuracy_matrix is None:
            return None
        return cl_metrics(self.task_il_accuracy_matrix, self.task_il_random_init_accuracy)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data = {"format_version": data.pop("format_version"), **data}
        if self.task_il_accuracy_matrix is None:  # optional: a run without it writes the file it always did
            del data["task_il_accuracy_matrix"], data["task_il_random_init_accuracy"]
        data["tasks_done"] = self.tasks_done
        data["final_seen_accuracy"] = self.final_seen_accuracy
        data["final_val_accuracy"] = self.final_val_accuracy
        data["warnings"] = self.warnings
        data.update(self.metrics())
        if self.task_il_accuracy_matrix is not None:
            data["task_il_metrics"] = self.task_il_metrics()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "results") -> RunResults:
        """The record of a parsed ``results.json`` (format 1 or 2, not newer); derived keys (``warnings``
        among them, so a file written before it existed is flagged too) are recomputed."""
        if not isinstance(data, dict):
            raise ResultsError(f"{source}: not a JSON object")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ResultsError(f"{source}: missing key(s) {', '.join(missing)}")
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ResultsError(f"{source}: format_version {version!r} is not a format version "
                               f"(this lightning-cl reads 1 to {FORMAT_VERSION})")
        if version > FORMAT_VERSION:
            raise ResultsError(f"{source}: format_version {version} was written by a newer lightning-cl "
                               f"(this one reads format_version {FORMAT_VERSION} and older); upgrade to read it")
        known = {f.name for f in fields(cls)}
        record = cls(**{k: v for k, v in data.items() if k in known})
        if not record.task_names:
            record.task_names = [str(t) for t in record.tasks]
        return record

    @classmethod
    def read(cls, path: str | os.PathLike) -> RunResults:
        """Read ``path``; raise :class:`ResultsError` naming it if it is unreadable or incomplete."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ResultsError(f"{path}: cannot be read ({err})") from None
        try:
            return cls.from_dict(data, str(path))
        except TypeError as err:
            raise ResultsError(f"{path}: {err}") from None

    def write(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON so that ``path`` always holds either the old or the new file, never half of one
    (a temporary file in the same directory, fsync, rename: :func:`~lightning_cl.atomic_write.write_atomic`).

    Raises :class:`~lightning_cl.atomic_write.WriteFailed` (an ``OSError``) naming ``path``.
    """
    write_atomic(path, (json.dumps(data, indent=2) + "\n").encode())
