"""The three continual-learning scenarios (van de Ven & Tolias 2019; van de Ven, Tuytelaars &
Tolias 2022, "Three types of incremental learning"): the same task data, a different question.

* ``class`` (class-incremental): no task identity; one head over every class of every task.
* ``task`` (task-incremental): the task identity is given; the model chooses only among the
  current task's classes. We keep one shared head and mask its logits to the task's output
  units, in training and in testing (equivalent to a head per task that shares the hidden
  layers, and it leaves the network and every method unchanged).
* ``domain`` (domain-incremental): no task identity; the label is the class's position within
  its task (Split-MNIST: "first or second digit of the pair"), with an output layer of that size.

Pure label arithmetic, no Lightning: tested on small tensors in tests/test_scenario.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Scenario = Literal["class", "task", "domain"]
SCENARIOS = ("class", "task", "domain")


@dataclass(frozen=True)
class TaskLabels:
    """How each task's classes map to output units in a scenario.

    Attributes:
        scenario: ``"class"``, ``"task"`` or ``"domain"``.
        task_classes: the classes of each task (the benchmark's own labels).
        units: the output unit of each of those classes, task by task.
        num_outputs: the size of the output layer.
    """

    scenario: str
    task_classes: tuple[tuple[int, ...], ...]
    units: tuple[tuple[int, ...], ...]
    num_outputs: int

    def relabel(self, y: torch.Tensor, task: int) -> torch.Tensor:
        """Benchmark labels of ``task`` -> the scenario's training labels (output units)."""
        lookup = torch.full((max(self.task_classes[task]) + 1,), -1, dtype=torch.long)
        lookup[list(self.task_classes[task])] = torch.tensor(self.units[task])
        return lookup.to(y.device)[y]

    def unit_mask(self) -> torch.Tensor | None:
        """``(tasks, num_outputs)`` bool: the units each task may choose among (task-IL); None otherwise."""
        if self.scenario != "task":
            return None
        mask = torch.zeros(len(self.units), self.num_outputs, dtype=torch.bool)
        for t, units in enumerate(self.units):
            mask[t, list(units)] = True
        return mask

    def seen_units(self, task: int) -> list[int]:
        """The output units of tasks 0..task, in task order, each once."""
        return list(dict.fromkeys(u for units in self.units[: task + 1] for u in units))


def task_labels(scenario: str, task_classes: list[list[int]], num_classes: int) -> TaskLabels:
    """The :class:`TaskLabels` of ``scenario`` for tasks made of ``task_classes``.

    In class- and task-IL, tasks with disjoint classes (Split-MNIST) keep their class as the
    unit, and the head has ``num_classes`` outputs (the notebook's 10-way head). Tasks that
    repeat classes (Permuted/Rotated MNIST: every task has the ten digits) get units of their
    own, one block per task: task ``t``'s class ``c`` is unit ``offset_t + position of c``.

    Raises:
        ValueError: for an unknown scenario, or domain-IL with tasks of different sizes.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"data.scenario={scenario!r} is not a scenario; use one of {', '.join(SCENARIOS)}.")
    classes = tuple(tuple(int(c) for c in t) for t in task_classes)
    if scenario == "domain":
        sizes = sorted({len(t) for t in classes})
        if len(sizes) != 1:
            raise ValueError(
                f"data.scenario=domain labels each example by its class's position within its task, so every "
                f"task needs the same number of classes; these tasks have {sizes}. Use tasks of one size, "
                "or data.scenario class or task."
            )
        units = tuple(tuple(range(len(t))) for t in classes)
        return TaskLabels(scenario, classes, units, sizes[0])
    flat = [c for t in classes for c in t]
    if len(set(flat)) == len(flat):
        return TaskLabels(scenario, classes, classes, max(num_classes, max(flat) + 1))
    offsets = [sum(len(t) for t in classes[:i]) for i in range(len(classes))]
    units = tuple(tuple(o + i for i in range(len(t))) for o, t in zip(offsets, classes))
    return TaskLabels(scenario, classes, units, len(flat))


def mask_logits(logits: torch.Tensor, task_ids: torch.Tensor, unit_mask: torch.Tensor | None) -> torch.Tensor:
    """Task-IL: every logit outside the example's task set to the dtype's lowest value (finite,
    so softmax gives it exactly 0 and KL/CE terms stay finite). A no-op without a mask."""
    if unit_mask is None:
        return logits
    return logits.masked_fill(~unit_mask[task_ids], torch.finfo(logits.dtype).min)
