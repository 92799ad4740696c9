"""MNIST as normalised tensors (the notebook's protocol: [0, 1], mean 0.1307, std 0.3081, 784 features).

Torch and torchvision only, no Lightning: the plain-PyTorch benchmark baseline uses it too.
"""

from __future__ import annotations

import torch

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def load_mnist(data_dir: str, train: bool, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read the verified IDX files in ``data_dir/MNIST/raw`` with torchvision; return (x (N, 784), y (N,)),
    pixels standardised (``normalize``) or in [0, 1]."""
    from torchvision.datasets import MNIST

    dataset = MNIST(data_dir, train=train, download=False)
    if normalize:
        return normalise(dataset.data), dataset.targets
    return dataset.data.flatten(1).float().div_(255.0), dataset.targets


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 784), scaled to [0, 1] and standardised."""
    # In place on one new float tensor: three passes over 55M values cost ~0.3 s more.
    return images.flatten(1).float().div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of a seeded random ``fraction`` of each class's examples."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in labels.unique().tolist():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        mask[idx[: round(fraction * len(idx))]] = True
    return mask
