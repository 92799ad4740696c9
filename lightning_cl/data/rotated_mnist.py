"""Rotated MNIST: every task has all ten digits, each task rotated by its own fixed angle
(Lopez-Paz & Ranzato 2017; GPM and OGD were published on it). Domain-IL by default.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms.functional import InterpolationMode, rotate

from lightning_cl.data.mnist_tasks import MNISTTasks
from lightning_cl.data.scenario import Scenario

ROTATED_MNIST_ANGLES = [0.0, 10.0, 20.0, 30.0, 40.0]


class RotatedMNIST(MNISTTasks):
    """MNIST rotated by each of ``angles`` (degrees, counter-clockwise), one task per angle.

    Args:
        angles: the rotation of each task, in training order.
        **kwargs: see :class:`~lightning_cl.data.mnist_tasks.MNISTTasks`; ``scenario``
            defaults to ``"domain"`` here.

    Raises:
        ValueError: if ``angles`` is empty or holds a value that is not a finite number.
    """

    benchmark = "rotated_mnist"

    def __init__(self, angles: list[float] = ROTATED_MNIST_ANGLES, scenario: Scenario = "domain", **kwargs) -> None:
        if not angles:
            raise ValueError("data.angles is empty; give one angle (degrees) per task, e.g. [0, 10, 20, 30, 40].")
        for i, a in enumerate(angles):
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                raise ValueError(f"data.angles[{i}]={a!r} is not a finite number of degrees.")
        self.angles = [float(a) for a in angles]
        super().__init__(scenario=scenario, **kwargs)

    def task_classes(self) -> list[list[int]]:
        return [list(range(self.num_classes))] * len(self.angles)

    def task_names(self) -> list[str]:
        return [f"{a:g}°" for a in self.angles]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.mnist(split)
        if self.angles[task] == 0:
            return x, y
        images = x.view(-1, 1, 28, 28)
        # Bilinear, corners filled with the preprocessed value of a black pixel; once per task.
        rotated = rotate(images, self.angles[task], interpolation=InterpolationMode.BILINEAR, fill=[self.background])
        return rotated.reshape(len(x), -1), y
