"""Mini-batches drawn by index from tensors that are already in memory (on the training device).

MNIST fits in memory many times over; a ``DataLoader`` over a ``Dataset`` would pay Python,
collation and PIL costs per sample. This loader gathers a pass a block of batches at a time
(``x[permutation[block]]``, ~``GATHER_EXAMPLES`` examples) and yields contiguous slices of the
block, which are views and cost nothing. Gathering the whole pass at once made the same batches
but held a second copy of the training set: joint training on 20 Rotated-MNIST tasks (1.2
million examples, 3.8 GB) ran out of memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch


class TensorBatchLoader:
    """Iterate batches (tuples, one slice of each tensor) over in-memory tensors.

    Args:
        tensors: inputs, labels, ...; first dimension the examples; any device.
        batch_size: examples per batch (the last batch of a pass may be smaller).
        shuffle: permute the examples; the permutation depends only on ``seed``, so an epoch
            is reproducible (and resumable) from its seed alone.
        seed: seed of the permutation (of the first pass; pass ``p`` uses ``seed + p * PASS_SEED_STRIDE``).
        rank, world_size: under data parallelism each process takes every ``world_size``-th
            example of the (shared) permutation, after trimming to a multiple of ``world_size``
            so that all processes run the same number of steps.
        num_batches: yield exactly this many batches, over as many reshuffled passes as that
            takes (training length in iterations); None: one pass.
    """

    PASS_SEED_STRIDE = 7_919
    GATHER_EXAMPLES = 16_384  # examples gathered at once (whole batches, at least one)

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_batches: int | None = None,
    ) -> None:
        if len({len(t) for t in tensors}) != 1:
            raise ValueError(f"the tensors have different numbers of examples: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if num_batches is not None and num_batches < 1:
            raise ValueError(f"num_batches={num_batches} must be at least 1")
        self.tensors = tensors
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world_size, self.num_batches = rank, world_size, num_batches

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0]) // self.world_size

    def __len__(self) -> int:
        return self.num_batches or math.ceil(self.num_examples / self.batch_size)

    def _pass(self, seed: int) -> Iterator[tuple[torch.Tensor, ...]]:
        tensors = self.tensors
        if self.shuffle or self.world_size > 1:
            n = len(tensors[0])
            if self.shuffle:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            else:
                order = torch.arange(n)
            order = order[: self.num_examples * self.world_size][self.rank :: self.world_size].to(tensors[0].device)
            block = max(1, self.GATHER_EXAMPLES // self.batch_size) * self.batch_size
            for first in range(0, len(order), block):
                gathered = tuple(t[order[first : first + block]] for t in tensors)
                for start in range(0, len(gathered[0]), self.batch_size):
                    yield tuple(t[start : start + self.batch_size] for t in gathered)
            return
        for start in range(0, len(tensors[0]), self.batch_size):
            yield tuple(t[start : start + self.batch_size] for t in tensors)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        if self.num_batches is None:
            yield from self._pass(self.seed)
            return
        produced, p = 0, 0
        while True:
            for batch in self._pass(self.seed + p * self.PASS_SEED_STRIDE):
                yield batch
                produced += 1
                if produced == self.num_batches:
                    return
            p += 1
