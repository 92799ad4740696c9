"""Rotated MNIST: every task has all ten digits, each task rotated by its own fixed angle
(Lopez-Paz & Ranzato 2017; GPM and OGD were published on it). Domain-IL by default.
:class:`RandomRotatedMNIST` draws each task's angle at random, as Mammoth's ``rot-mnist``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from torchvision.transforms.functional import InterpolationMode, rotate

from lightning_cl.data.mnist_tasks import MNISTTasks
from lightning_cl.data.scenario import Scenario

ROTATED_MNIST_ANGLES = [0.0, 10.0, 20.0, 30.0, 40.0]
Interpolation = Literal["nearest", "bilinear"]
INTERPOLATIONS = ("nearest", "bilinear")


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
            if not _is_angle(a):
                raise ValueError(f"data.angles[{i}]={a!r} is not a finite number of degrees.")
        self.angles = [float(a) for a in angles]
        super().__init__(scenario=scenario, **kwargs)

    def task_classes(self) -> list[list[int]]:
        return [list(range(self.num_classes))] * len(self.angles)

    def task_names(self) -> list[str]:
        return [f"{a:g}°" for a in self.angles]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.mnist(split)
        if self.angles[task] == 0 or not len(x):  # nothing to turn (an empty split: data.val_fraction 0)
            return x, y
        images = x.view(-1, 1, 28, 28)
        # Bilinear, corners filled with the preprocessed value of a black pixel; once per task.
        rotated = rotate(images, self.angles[task], interpolation=InterpolationMode.BILINEAR, fill=[self.background])
        return rotated.reshape(len(x), -1), y


def random_angles(num_tasks: int, seed: int, low: float = 0.0, high: float = 180.0) -> list[float]:
    """One angle per task, drawn uniformly from ``[low, high)`` degrees in task order by NumPy's
    legacy Mersenne-Twister generator seeded with ``seed``: the values that Mammoth's
    ``Rotation()`` transforms draw, one ``np.random.uniform(deg_min, deg_max)`` per task, right
    after ``np.random.seed(seed)`` (see :class:`RandomRotatedMNIST`)."""
    generator = np.random.RandomState(seed)
    return [float(generator.uniform(low, high)) for _ in range(num_tasks)]


class RandomRotatedMNIST(RotatedMNIST):
    """Rotated MNIST as Mammoth's ``rot-mnist`` (Buzzega et al. 2020, "Dark Experience for General
    Continual Learning", NeurIPS): ``num_tasks`` tasks, each all ten digits turned by its own angle
    drawn uniformly from ``angle_range`` degrees; the first task is rotated too.

    Mammoth (github.com/aimagelab/mammoth): ``datasets/rot_mnist.py`` (commit 7ab9db97e3b5df6e1d9974468c7958f5c07696e1,
    the same rule at 0d727a7235cf836698418ca33a973431d1d671f0) builds
    ``transforms.Compose((Rotation(), transforms.ToTensor()))`` in every call of
    ``get_data_loaders``, i.e. once per task, for the task's training and test sets alike, with
    ``N_TASKS = 20``; ``datasets/transforms/rotation.py`` (7ab9db97...): ``Rotation(deg_min=0,
    deg_max=180)`` draws ``self.degrees = np.random.uniform(self.deg_min, self.deg_max)`` once, at
    construction, and applies ``torchvision.transforms.functional.rotate(x, self.degrees)`` to each
    PIL image (torchvision's default: nearest neighbour, no expansion, corners filled with 0). The
    generator is NumPy's global one, seeded by ``--seed`` (``utils/conf.py``, ``set_random_seed``:
    ``np.random.seed(seed)``; no ``--seed``, no seed).

    Here the angles are :func:`random_angles` of ``rotation_seed``: the first ``num_tasks`` draws
    after ``np.random.seed(rotation_seed)``, a fixed function of that seed, the same for every
    method and training seed (as ``PermutedMNIST``'s ``permutation_seed``). Mammoth's own draws
    are not a function of the seed alone: every other user of NumPy's global generator moves it
    on. In the 2020 code (``utils/training.py`` at 7ab9db97...) ``train`` first builds a copy of
    the dataset and calls its ``get_data_loaders`` ``N_TASKS`` times (to evaluate a random network
    for FWT), so the tasks trained get draws 21 to 40 (``random_angles(40, seed)[20:]`` for a
    method that draws nothing else; the later code does this only with
    ``--enable_other_metrics``), and a memory's reservoir sampling draws between tasks. The
    distribution, uniform on [0, 180) per task, independently, is Mammoth's.

    Images are rotated with ``interpolation`` (default ``"nearest"``, Mammoth's); on MNIST,
    torchvision's nearest-neighbour rotation of the [0, 1] tensors gives the same pixels as its
    rotation of the PIL images that Mammoth rotates (tests/test_mammoth_protocol.py).

    Args:
        num_tasks: the number of tasks (Mammoth: 20).
        rotation_seed: the seed of the angles.
        angle_range: ``[low, high]`` degrees (Mammoth: ``[0, 180]``).
        interpolation: ``"nearest"`` (Mammoth's) or ``"bilinear"`` (:class:`RotatedMNIST`'s).
        **kwargs: see :class:`~lightning_cl.data.mnist_tasks.MNISTTasks`; ``scenario``
            defaults to ``"domain"``.

    Raises:
        ValueError: if ``num_tasks`` < 1, ``angle_range`` is not two finite numbers low < high,
            or ``interpolation`` is unknown.
    """

    def __init__(self, num_tasks: int = 20, rotation_seed: int = 0, angle_range: tuple[float, float] = (0.0, 180.0),
                 interpolation: Interpolation = "nearest", scenario: Scenario = "domain", **kwargs) -> None:
        if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"data.num_tasks={num_tasks!r} must be a positive number of tasks (rotations).")
        bounds = list(angle_range)
        if len(bounds) != 2 or not all(_is_angle(a) for a in bounds) or not bounds[0] < bounds[1]:
            raise ValueError(f"data.angle_range={list(angle_range)} must be two finite angles [low, high] in degrees, "
                             "low < high, e.g. [0, 180].")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"data.interpolation={interpolation!r} is not supported; use one of "
                             f"{', '.join(INTERPOLATIONS)}.")
        self.num_tasks_setting, self.rotation_seed = num_tasks, rotation_seed
        self.angle_range = (float(bounds[0]), float(bounds[1]))
        self.interpolation = interpolation
        super().__init__(angles=random_angles(num_tasks, rotation_seed, *self.angle_range), scenario=scenario, **kwargs)

    def task_names(self) -> list[str]:
        return [f"{a:.1f}°" for a in self.angles]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.mnist(split)
        if not len(x):  # an empty split (data.val_fraction 0): torchvision cannot rotate no images
            return x, y
        if self.interpolation == "nearest":
            return nearest_rotation(x, self.angles[task], self.background), y
        rotated = rotate(x.view(-1, 1, 28, 28), self.angles[task], interpolation=InterpolationMode.BILINEAR,
                         fill=[self.background])
        return rotated.reshape(len(x), -1), y


def nearest_rotation(x: torch.Tensor, angle: float, fill: float, side: int = 28) -> torch.Tensor:
    """``torchvision``'s nearest-neighbour ``rotate`` of the flattened ``side`` x ``side`` images
    ``x`` by ``angle`` degrees, corners filled with ``fill``, pixel for pixel, done as one gather.

    A nearest rotation copies each output pixel from one source pixel, the same one for every
    image, so rotating an image of pixel indices once tells every output pixel where to read
    (indices up to 783 are exact in float32). On 60,000 images this takes a fraction of a second,
    where ``rotate``'s ``grid_sample`` took ~5 s a task on one core.
    """
    index = torch.arange(side * side, dtype=torch.float32).view(1, 1, side, side)
    source = rotate(index, angle, interpolation=InterpolationMode.NEAREST, fill=[-1.0]).flatten().long()
    outside = source < 0
    rotated = torch.index_select(x, 1, source.clamp(min=0).to(x.device))
    rotated[:, outside.to(x.device)] = fill
    return rotated


def _is_angle(a: object) -> bool:
    """A finite number of degrees (not a bool)."""
    return isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a)
