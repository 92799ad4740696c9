"""The Split-MNIST DataModule: MNIST in memory, split into tasks of classes, one task at a time.

SPEC.md, "Data and protocol": the official 60,000 / 10,000 split, pixels scaled to [0, 1],
normalised with mean 0.1307 and std 0.3081, flattened to 784 features. A seeded, stratified
part of the training set is held out for the per-epoch validation.

The task loop (``lightning_cl.task_loop.TaskLoop``) moves ``current_task`` forward; the
loaders follow it because the trainer reloads them every epoch.
"""

from __future__ import annotations

import os

import torch
from lightning.pytorch import LightningDataModule

from lightning_cl.data.mnist_files import ensure_mnist
from lightning_cl.data.mnist_tensors import load_mnist, stratified_holdout
from lightning_cl.data.tensor_loader import TensorBatchLoader

SPLIT_MNIST_TASKS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]
NUM_CLASSES = 10


class SplitMNIST(LightningDataModule):
    """MNIST as a sequence of tasks, each a list of classes.

    Args:
        tasks: the class lists, trained in this order. ``[[0, 1, ..., 9]]`` is concurrent
            (joint) training; the default is the five Split-MNIST pairs of SPEC.md.
        data_dir: where the IDX files are, or will be put (``data_dir/MNIST/raw``).
        batch_size: training batch size.
        val_fraction: fraction of each class's training images held out for validation.
        split_seed: seed of the held-out split; fixed by default so that runs with
            different training seeds are validated on the same images.
        download: fetch MNIST if it is not in ``data_dir``.

    Raises:
        ValueError: if a task is empty, a class is outside 0-9 or appears twice, or a number
            is out of range. Raised at construction, so before any training.
    """

    def __init__(
        self,
        tasks: list[list[int]] = SPLIT_MNIST_TASKS,
        data_dir: str = "data",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        download: bool = True,
    ) -> None:
        super().__init__()
        validate_tasks(tasks)
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size} must be at least 1.")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1).")
        self.tasks = [list(t) for t in tasks]
        self.data_dir, self.batch_size, self.val_fraction = data_dir, batch_size, val_fraction
        self.split_seed, self.download = split_seed, download
        self.current_task = 0
        self._tensors: dict[str, torch.Tensor] | None = None
        self._subsets: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    def seen_classes(self, task: int | None = None) -> list[int]:
        """Classes of tasks 0..task (default: the current task)."""
        task = self.current_task if task is None else task
        return [c for t in self.tasks[: task + 1] for c in t]

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, allow_download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self._tensors is not None:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        x_train, y_train = load_mnist(self.data_dir, train=True)
        x_test, y_test = load_mnist(self.data_dir, train=False)
        val_mask = stratified_holdout(y_train, self.val_fraction, self.split_seed)
        tensors = {
            "x_train": x_train[~val_mask],
            "y_train": y_train[~val_mask],
            "x_val": x_train[val_mask],
            "y_val": y_train[val_mask],
            "x_test": x_test,
            "y_test": y_test,
        }
        self._tensors = {k: v.to(device) for k, v in tensors.items()}

    def _split(self, split: str, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples of ``classes`` in ``split``; cached, as the loaders are rebuilt every epoch."""
        assert self._tensors is not None, "call setup() first"
        key = (split, *classes)
        if key not in self._subsets:
            x, y = self._tensors[f"x_{split}"], self._tensors[f"y_{split}"]
            keep = torch.isin(y, torch.tensor(classes, device=y.device))
            self._subsets[key] = (x[keep], y[keep])
        return self._subsets[key]

    def train_dataloader(self) -> TensorBatchLoader:
        x, y = self._split("train", self.tasks[self.current_task])
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        # One permutation per (run seed, epoch): reproducible, and identical after a resume.
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0)) * 1_000_003 + epoch
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return TensorBatchLoader(x, y, self.batch_size, shuffle=True, seed=seed, rank=rank, world_size=world)

    def val_dataloader(self) -> TensorBatchLoader:
        # Held-out training images of every class seen so far, as one batch: one forward pass.
        x, y = self._split("val", self.seen_classes())
        return TensorBatchLoader(x, y, batch_size=max(1, len(x)))

    def test_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole official test set, normalised, on the training device."""
        assert self._tensors is not None, "call setup() first"
        return self._tensors["x_test"], self._tensors["y_test"]

    def state_dict(self) -> dict:
        return {"current_task": self.current_task, "tasks": self.tasks}

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict["tasks"] != self.tasks:
            raise ValueError(
                f"The checkpoint was trained on tasks {state_dict['tasks']}, but data.tasks is {self.tasks}; "
                "resume with the config the checkpoint was made with."
            )
        self.current_task = state_dict["current_task"]


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
