"""Mini-batches drawn by index from tensors that are already in memory (on the training device).

MNIST fits in memory many times over; a ``DataLoader`` over a ``Dataset`` would pay Python,
collation and PIL costs per sample. This loader gathers the whole epoch once
(``x[permutation]``) and then yields contiguous slices, which are views and cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class TensorBatchLoader:
    """Iterate ``(x, y)`` batches over in-memory tensors.

    Args:
        x, y: inputs and labels, first dimension the examples; any device.
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: permute the examples; the permutation depends only on ``seed``, so an epoch
            is reproducible (and resumable) from its seed alone.
        seed: seed of the permutation.
        rank, world_size: under data parallelism each process takes every ``world_size``-th
            example of the (shared) permutation, after trimming to a multiple of ``world_size``
            so that all processes run the same number of steps.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size

    @property
    def num_examples(self) -> int:
        return len(self.x) // self.world_size

    def __len__(self) -> int:
        return math.ceil(self.num_examples / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = self.x, self.y
        if self.shuffle or self.world_size > 1:
            n = len(x)
            if self.shuffle:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            else:
                order = torch.arange(n)
            order = order[: self.num_examples * self.world_size][self.rank :: self.world_size].to(x.device)
            x, y = x[order], y[order]
        for start in range(0, len(x), self.batch_size):
            yield x[start : start + self.batch_size], y[start : start + self.batch_size]
