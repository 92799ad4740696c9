"""Split-MNIST: each task is a few of the ten digits (the notebook's protocol and the published one).

The notebook's tasks are ``[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]`` (the default here); the
published protocol (van de Ven et al. 2022) uses ``[0, 1], [2, 3], ..., [8, 9]`` and pixels in
[0, 1] (``configs/benchmarks/split_mnist.yaml``). ``[[0, 1, ..., 9]]`` is concurrent training.
"""

from __future__ import annotations

import torch

from lightning_cl.data.mnist_tasks import MNISTTasks

SPLIT_MNIST_TASKS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]
NUM_CLASSES = 10


class SplitMNIST(MNISTTasks):
    """MNIST as a sequence of tasks, each a list of digits.

    Args:
        tasks: the class lists, trained in this order.
        **kwargs: see :class:`~lightning_cl.data.mnist_tasks.MNISTTasks` (``data_dir``,
            ``normalize``, ...) and :class:`~lightning_cl.data.task_data.TaskDataModule`
            (``scenario``, ``batch_size``, ``cumulative``).

    Raises:
        ValueError: if a task is empty, a class is outside 0-9 or appears twice, or a number
            is out of range. Raised at construction, so before any training.
    """

    benchmark = "split_mnist"

    def __init__(self, tasks: list[list[int]] = SPLIT_MNIST_TASKS, **kwargs) -> None:
        validate_tasks(tasks)
        self.tasks = [list(t) for t in tasks]
        super().__init__(**kwargs)

    def task_classes(self) -> list[list[int]]:
        return self.tasks

    def task_names(self) -> list[str]:
        return [str(t) for t in self.tasks]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mnist(split, self.tasks[task])


def validate_tasks(tasks: list[list[int]]) -> None:
    """Raise ValueError naming ``data.tasks`` if the task list cannot be trained."""
    if not tasks:
        raise ValueError("data.tasks is empty; give at least one task, e.g. [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]].")
    seen: dict[int, int] = {}
    for i, task in enumerate(tasks):
        if not task:
            raise ValueError(f"data.tasks[{i}] is empty; every task needs at least one class.")
        for c in task:
            if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < NUM_CLASSES:
                raise ValueError(f"data.tasks[{i}] contains {c!r}; classes are the integers 0-9.")
            if c in seen:
                raise ValueError(f"data.tasks: class {c} is in task {seen[c]} and task {i}; each class belongs to one task.")
            seen[c] = i
