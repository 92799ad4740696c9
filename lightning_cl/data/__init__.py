"""Data: MNIST files and tensors, the in-memory batch loader, the scenarios, and the task
DataModules (one file per benchmark).

The DataModules are imported on first use (``lightning_cl.data.SplitMNIST``): the MNIST files
and tensors need no Lightning, and the plain-PyTorch benchmark baseline imports them alone.
"""

from importlib import import_module

_MODULES = {"PermutedMNIST": "permuted_mnist", "RotatedMNIST": "rotated_mnist",
            "RandomRotatedMNIST": "rotated_mnist", "SplitMNIST": "split_mnist",
            "TaskDataModule": "task_data"}

__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(import_module(f"lightning_cl.data.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'lightning_cl.data' has no attribute {name!r}")
