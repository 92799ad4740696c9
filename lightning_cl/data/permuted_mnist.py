"""Permuted MNIST: every task has all ten digits, each task with its own fixed pixel permutation
(Goodfellow et al. 2013; the benchmark of EWC, GPM and OGD). Task 1 is the original images.
Domain-IL by default: the same ten outputs in every task.
"""

from __future__ import annotations

import torch

from lightning_cl.data.mnist_tasks import MNISTTasks
from lightning_cl.data.scenario import Scenario


def task_permutations(num_tasks: int, seed: int, num_pixels: int = 784) -> list[torch.Tensor]:
    """Task 0: the identity; task k: a permutation from a generator seeded by ``(seed, k)``,
    so a task's permutation does not depend on how many tasks there are."""
    perms = [torch.arange(num_pixels)]
    for k in range(1, num_tasks):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + k)
        perms.append(torch.randperm(num_pixels, generator=generator))
    return perms


class PermutedMNIST(MNISTTasks):
    """MNIST, ``num_tasks`` times, each task's pixels in its own fixed order.

    Args:
        num_tasks: number of tasks (the first unpermuted).
        permutation_seed: seed of the permutations (fixed by default, so that runs with
            different training seeds see the same tasks).
        **kwargs: see :class:`~lightning_cl.data.mnist_tasks.MNISTTasks`; ``scenario``
            defaults to ``"domain"`` here.

    Raises:
        ValueError: if ``num_tasks`` < 1.
    """

    benchmark = "permuted_mnist"

    def __init__(self, num_tasks: int = 10, permutation_seed: int = 0, scenario: Scenario = "domain", **kwargs) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"data.num_tasks={num_tasks!r} must be a positive number of permutations (tasks).")
        self.num_tasks_setting, self.permutation_seed = num_tasks, permutation_seed
        self.permutations = task_permutations(num_tasks, permutation_seed)
        super().__init__(scenario=scenario, **kwargs)

    def task_classes(self) -> list[list[int]]:
        return [list(range(self.num_classes))] * self.num_tasks_setting

    def task_names(self) -> list[str]:
        return ["original"] + [f"perm {k}" for k in range(1, self.num_tasks_setting)]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.mnist(split)
        if task == 0:
            return x, y
        return x[:, self.permutations[task].to(x.device)], y  # a new tensor, made once per task
