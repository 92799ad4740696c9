"""The MNIST part shared by the MNIST benchmarks: files, the held-out split, tensors in memory.

MNIST (LeCun et al.) with its official 60,000 / 10,000 split, pixels scaled to [0, 1]
(and, for the notebook's protocol, normalised with mean 0.1307 and std 0.3081), flattened to
784 features. A seeded, stratified part of the training set is held out for validation.
A benchmark subclass says which examples make each task (:meth:`task_examples`); whatever it
does to them (a permutation, a rotation) is done once per task and cached, never per batch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lightning_cl.data.mnist_files import ensure_mnist
from lightning_cl.data.mnist_tensors import MNIST_MEAN, MNIST_STD, load_mnist, stratified_holdout
from lightning_cl.data.task_data import TaskDataModule


_SPLITS: dict[tuple, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}


def mnist_splits(data_dir: str, normalize: bool, val_fraction: float, split_seed: int) -> dict:
    """MNIST's train / val / test tensors on the CPU, kept for the next run in this process (a
    warm study worker loads them once). Nothing writes into them: tasks are made by indexing,
    which copies. Only the last preprocessing is kept, so memory does not grow."""
    key = (str(Path(data_dir).resolve()), normalize, val_fraction, split_seed)
    if key not in _SPLITS:
        _SPLITS.clear()
        x_train, y_train = load_mnist(data_dir, train=True, normalize=normalize)
        x_test, y_test = load_mnist(data_dir, train=False, normalize=normalize)
        val = stratified_holdout(y_train, val_fraction, split_seed)
        _SPLITS[key] = {"train": (x_train[~val], y_train[~val]), "val": (x_train[val], y_train[val]),
                        "test": (x_test, y_test)}
    return _SPLITS[key]


class MNISTTasks(TaskDataModule):
    """Base of the MNIST benchmarks: loads and splits MNIST once, on the training device.

    Args:
        data_dir: where the IDX files are, or will be put (``data_dir/MNIST/raw``).
        val_fraction: fraction of each class's training images held out for validation.
        split_seed: seed of the held-out split; fixed by default so that runs with
            different training seeds are validated on the same images.
        normalize: standardise pixels with MNIST's mean and std (the notebook); False keeps
            them in [0, 1] (the published Split-MNIST protocol).
        download: fetch MNIST if it is not in ``data_dir``.
        **kwargs: ``scenario``, ``batch_size``, ``cumulative`` (:class:`TaskDataModule`).
    """

    num_classes = 10
    input_size = 784  # 28 x 28 pixels, flattened

    def __init__(
        self,
        data_dir: str = "data",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        normalize: bool = True,
        download: bool = True,
        **kwargs,
    ) -> None:
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"data.val_fraction={val_fraction} must be in [0, 1).")
        self.data_dir, self.val_fraction, self.split_seed = data_dir, val_fraction, split_seed
        self.normalize, self.download = normalize, download
        self._mnist: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        super().__init__(**kwargs)

    @property
    def background(self) -> float:
        """The value of a black pixel after preprocessing (what a rotation fills corners with)."""
        return -MNIST_MEAN / MNIST_STD if self.normalize else 0.0

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, allow_download=self.download)

    def setup(self, stage: str | None = None) -> None:
        if self._mnist is not None:
            return
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        splits = mnist_splits(self.data_dir, self.normalize, self.val_fraction, self.split_seed)
        self._mnist = {k: (x.to(device), y.to(device)) for k, (x, y) in splits.items()}

    def mnist(self, split: str, classes: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """MNIST's ``split`` (all of it, or the examples of ``classes``), preprocessed, on the device."""
        assert self._mnist is not None, "call setup() first"
        x, y = self._mnist[split]
        if classes is None or sorted(classes) == list(range(self.num_classes)):
            return x, y
        keep = torch.isin(y, torch.tensor(classes, device=y.device))
        return x[keep], y[keep]
