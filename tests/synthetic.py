"""A task DataModule without MNIST: ten well-separated Gaussian classes in 784 dimensions.

Tests of the task loop, the scenarios and the methods train on it in well under a second, and
it is one file, as a new benchmark is meant to be.
"""

from __future__ import annotations

import torch

from lightning_cl.data.task_data import TaskDataModule

SIZES = {"train": 128, "val": 8, "test": 40}  # examples per class

# A config of two synthetic tasks of a few steps each, for runs and studies in a subprocess.
CONFIG = """\
data:
  class_path: synthetic.{data}
  init_args:
    tasks: [[0, 1], [2, 3]]
    batch_size: 32
task_loop:
  epochs_per_task: null
  steps_per_task: {steps}
"""


def config_yaml(steps: int, data: str = "SyntheticTasks") -> str:
    """:data:`CONFIG` for ``steps`` steps per task of the DataModule ``data`` of this file."""
    return CONFIG.format(steps=steps, data=data)


class SyntheticTasks(TaskDataModule):
    """Class ``c`` is ``N(mean_c, 1)`` with a random unit ``mean_c`` times ``separation``."""

    benchmark = "synthetic"
    num_classes = 10
    sizes = SIZES
    input_size = 784

    def __init__(self, tasks: list[list[int]] = [[0, 1], [2, 3], [4, 5]], separation: float = 8.0, seed: int = 0,
                 **kwargs) -> None:
        self.tasks = [list(t) for t in tasks]
        generator = torch.Generator().manual_seed(seed)
        means = torch.randn(self.num_classes, self.input_size, generator=generator)
        means = separation * means / means.norm(dim=1, keepdim=True)
        self._data = {}
        for split, n in self.sizes.items():
            y = torch.arange(self.num_classes).repeat_interleave(n)
            self._data[split] = (means[y] + torch.randn(len(y), self.input_size, generator=generator), y)
        super().__init__(**kwargs)

    def task_classes(self) -> list[list[int]]:
        return self.tasks

    def task_names(self) -> list[str]:
        return [str(t) for t in self.tasks]

    def task_examples(self, split: str, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._data[split]
        keep = torch.isin(y, torch.tensor(self.tasks[task]))
        return x[keep], y[keep]


class SyntheticOnDisk(SyntheticTasks):
    """:class:`SyntheticTasks` with the placement settings of a benchmark read from disk
    (``data_dir``, ``download``), which it ignores: for tests of what may differ on resume."""

    def __init__(self, data_dir: str = "data", download: bool = True, **kwargs) -> None:
        self.data_dir, self.download = data_dir, download
        super().__init__(**kwargs)
