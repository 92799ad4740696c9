"""Data: MNIST files and tensors, the in-memory batch loader, the scenarios, and the task
DataModules (one file per benchmark)."""

from lightning_cl.data.permuted_mnist import PermutedMNIST
from lightning_cl.data.rotated_mnist import RotatedMNIST
from lightning_cl.data.split_mnist import SplitMNIST
from lightning_cl.data.task_data import TaskDataModule

__all__ = ["PermutedMNIST", "RotatedMNIST", "SplitMNIST", "TaskDataModule"]
