"""The base of the methods that keep an episodic memory of earlier tasks' examples (ER, A-GEM):
the memory's settings and filling it at each task end (but the last).

A subclass uses ``self.memory`` (:class:`~lightning_cl.methods.memory.Memory`) and ``self.generator``
in its own hooks; both are declared state (checkpointed, the memory moved to the module's
device), so that a resumed run draws the same batches.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.memory import SAMPLINGS, Memory, Sampling, run_seed, task_stream
from lightning_cl.methods.method import Method
from lightning_cl.task_callback import setting


class MemoryMethod(Method):
    """A :class:`~lightning_cl.methods.method.Method` with an episodic memory, filled at each task end.

    Args:
        per_class: examples kept per class of each task (``"balanced"``), or the budget per
            class of the whole sequence (``"reservoir"``: ``per_class`` times its number of classes).
        batch_size: memory examples drawn per training step.
        sampling: ``"balanced"`` (a fixed number per class, chosen at random) or
            ``"reservoir"`` (a uniform sample of every training example offered so far).

    Raises:
        ValueError: for an unknown ``sampling``, or ``per_class`` or ``batch_size`` below 1.
    """

    keeps = ("memory", "generator")

    def __init__(self, per_class: int, batch_size: int, sampling: Sampling) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"{setting(self, 'sampling')}={sampling!r} is not supported; use one of {', '.join(SAMPLINGS)}.")
        for arg, value in (("per_class", per_class), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 1.")
        self.per_class, self.batch_size, self.sampling = per_class, batch_size, sampling
        self.memory: Memory | None = None
        # Draws the memory's examples and every memory batch: on the CPU, so that its state is
        # plain data in the checkpoint and a resumed run draws the same batches.
        self.generator = torch.Generator()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Before a checkpoint is restored, which then overwrites both.
        self.memory = Memory.for_sequence(trainer.datamodule, self.per_class, self.sampling)
        self.generator.manual_seed(run_seed())

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.memory.add(*task_stream(trainer.datamodule, task), self.generator)
