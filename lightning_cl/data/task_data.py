"""What every task DataModule offers: the one interface the task loop, the methods and the
diagnostics rely on. A new benchmark is one subclass (one file) that says which classes each
task has and what its examples are; this base turns them into scenario labels, task ids,
loaders and per-task test sets.

Batches are ``(x, y, t)``: inputs, the scenario's labels (output units) and the task id of
every example (a method may mix tasks in one batch, e.g. replayed examples).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from lightning.pytorch import LightningDataModule

from lightning_cl.data.scenario import Scenario, TaskLabels, task_labels
from lightning_cl.data.tensor_loader import TensorBatchLoader

Split = str  # "train", "val" or "test"
TaskSet = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, scenario label, task id


class TaskDataModule(LightningDataModule, ABC):
    """A sequence of tasks, trained one at a time; the task loop moves ``current_task`` on.

    Subclasses set ``benchmark`` (the name recorded in ``results.json``), ``num_classes`` and
    ``input_size`` (the number of features of one example, the network's input; linked to
    ``model.input_size``), implement :meth:`task_classes`, :meth:`task_names` and
    :meth:`task_examples`, and set their own attributes before calling ``super().__init__``.

    Args:
        scenario: ``"class"``, ``"task"`` or ``"domain"`` (see ``lightning_cl.data.scenario``).
        batch_size: training batch size.
        cumulative: train task ``t`` on the data of tasks ``0..t`` (joint training, the upper
            bound; recorded as method ``joint``).

    Raises:
        ValueError: for an unknown scenario, domain-IL with tasks of different sizes, a
            batch size below 1, or a subclass that does not say its ``input_size``. Raised at
            construction, so before any training.
    """

    benchmark: ClassVar[str]
    num_classes: ClassVar[int]
    input_size: ClassVar[int]  # a property where it depends on the settings

    def __init__(self, scenario: Scenario = "class", batch_size: int = 64, cumulative: bool = False) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be at least 1.")
        # Checked here, not at the first batch: a forgotten size would be a shape error mid-run.
        if not hasattr(self, "input_size"):
            raise ValueError(f"{type(self).__name__} does not say its input_size (the number of features "
                             "of one example, e.g. 784 for MNIST); set it as a class attribute.")
        self.scenario, self.batch_size, self.cumulative = scenario, batch_size, cumulative
        self.labels: TaskLabels = task_labels(scenario, self.task_classes(), self.num_classes)
        self.current_task = 0
        self.train_batches: int | None = None  # set by the task loop from task_loop.steps_per_task
        self._sets: dict[tuple[str, int], TaskSet] = {}
        self._train: tuple[tuple[int, ...], TaskSet] | None = None  # the last training set built

    # ----------------------------------------------------------------- what a benchmark says
    @abstractmethod
    def task_classes(self) -> list[list[int]]:
        """The benchmark's classes in each task, in training order."""

    @abstractmethod
    def task_names(self) -> list[str]:
        """A short name of each task for plots and logs (e.g. ``"[1, 2]"``, ``"20°"``)."""

    @abstractmethod
    def task_examples(self, split: Split, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, class)`` of ``task`` in ``split`` on the training device (after :meth:`setup`)."""

    # ----------------------------------------------------------------- what everyone may use
    @property
    def num_tasks(self) -> int:
        return len(self.labels.units)

    @property
    def num_outputs(self) -> int:
        """The size of the output layer the scenario needs (linked to ``model.num_outputs``)."""
        return self.labels.num_outputs

    def unit_mask(self) -> torch.Tensor | None:
        """Task-IL: ``(tasks, outputs)`` bool, the units each task may choose among; else None."""
        return self.labels.unit_mask()

    def task_units(self, task: int) -> list[int]:
        """The output units that ``task``'s examples are labelled with (its head in task-IL)."""
        return list(self.labels.units[task])

    def seen_units(self, task: int | None = None) -> list[int]:
        """Output units of tasks 0..task (default: the current task), in task order."""
        return self.labels.seen_units(self.current_task if task is None else task)

    def task_data(self, split: Split, task: int) -> TaskSet:
        """``(x, y, t)`` of one task in ``split``: scenario labels and task ids; cached."""
        if (split, task) not in self._sets:
            self._sets[(split, task)] = self._labelled(split, task)
        return self._sets[(split, task)]

    def test_sets(self) -> list[TaskSet]:
        """The test set of every task, in task order (evaluation tests each on its own)."""
        return [self.task_data("test", t) for t in range(self.num_tasks)]

    def seen_data(self, split: Split, task: int | None = None) -> TaskSet:
        """``(x, y, t)`` of tasks 0..task (default: the current task) in ``split``, pooled."""
        task = self.current_task if task is None else task
        sets = [self.task_data(split, t) for t in range(task + 1)]
        return sets[0] if len(sets) == 1 else tuple(torch.cat(parts) for parts in zip(*sets))

    def _labelled(self, split: Split, task: int) -> TaskSet:
        x, classes = self.task_examples(split, task)
        y = self.labels.relabel(classes, task)
        return x, y, torch.full_like(y, task)

    def _training_set(self, task: int) -> TaskSet:
        tasks = tuple(range(task + 1)) if self.cumulative else (task,)
        if self._train is None or self._train[0] != tasks:
            # Not kept in _sets: the ten training sets of Permuted MNIST take 1.7 GB.
            parts = [self._labelled("train", t) for t in tasks]
            self._train = (tasks, parts[0] if len(parts) == 1 else tuple(torch.cat(p) for p in zip(*parts)))
        return self._train[1]

    def task_train_loader(self, task: int | None = None, num_batches: int | None = None) -> TensorBatchLoader:
        """Shuffled training batches of ``task`` (default: the current one): one pass, or
        ``num_batches`` batches over as many reshuffled passes as that takes. Methods use it
        to measure a task (a mean gradient, a Fisher); the trainer gets :meth:`train_dataloader`."""
        task = self.current_task if task is None else task
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        # One permutation per (run seed, epoch): reproducible, and identical after a resume.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + epoch
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatchLoader(*self._training_set(task), batch_size=self.batch_size, shuffle=True, seed=seed,
                                 rank=rank, world_size=world, num_batches=num_batches)

    # ----------------------------------------------------------------- Lightning
    def train_dataloader(self) -> TensorBatchLoader:
        return self.task_train_loader(self.current_task, self.train_batches)

    def val_dataloader(self) -> TensorBatchLoader:
        # Held-out training examples of every task seen so far, as one batch: one forward pass.
        data = self.seen_data("val")
        return TensorBatchLoader(*data, batch_size=max(1, len(data[0])))

    def state_dict(self) -> dict:
        return {"current_task": self.current_task, "tasks": self.task_classes(), "task_names": self.task_names(),
                "scenario": self.scenario}

    def load_state_dict(self, state_dict: dict) -> None:
        mine = self.state_dict()
        for key in ("tasks", "task_names", "scenario"):
            if key in state_dict and state_dict[key] != mine[key]:
                setting = "data.tasks" if key != "scenario" else "data.scenario"
                raise ValueError(
                    f"The checkpoint was trained with {key} {state_dict[key]}, but this run has {mine[key]} "
                    f"({setting}); resume with the config the checkpoint was made with."
                )
        self.current_task = state_dict["current_task"]
