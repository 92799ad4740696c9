"""The bases of the methods that keep an episodic memory: :class:`MemoryMethod` (ER, A-GEM)
fills it with each task's examples at the task's end (but the last); :class:`StreamMemoryMethod`
(Mammoth's ER, DER, DER++) fills a reservoir with every training batch as it passes.

A subclass uses ``self.memory`` (:class:`~lightning_cl.methods.memory.Memory` or
:class:`~lightning_cl.methods.memory.StreamMemory`) and ``self.generator`` in its own hooks;
both are declared state (checkpointed, the memory moved to the module's device), so that a
resumed run keeps the same memory and draws the same batches.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.memory import SAMPLINGS, Memory, Sampling, StreamMemory, run_seed, task_stream
from lightning_cl.methods.method import Method
from lightning_cl.task_callback import setting


class MemoryMethod(Method):
    """A :class:`~lightning_cl.methods.method.Method` with an episodic memory, filled at each task end.

    Args:
        per_class: examples kept per class of each task (``"balanced"``), or the budget per
            class of the whole sequence (``"reservoir"``: ``per_class`` times its number of classes).
        batch_size: memory examples drawn per training step.
        sampling: ``"balanced"`` (a fixed number per class, chosen at random),
            ``"reservoir"`` (a uniform sample of every training example offered so far) or
            ``"task"`` (``per_task`` examples of each task, chosen at random whatever their class).
        per_task: ``"task"`` sampling's examples kept of each task (only with it).

    Raises:
        ValueError: for an unknown ``sampling``, ``per_class`` or ``batch_size`` below 1, or a
            ``per_task`` missing for ``"task"`` sampling (or given to another).
    """

    keeps = ("memory", "generator")

    def __init__(self, per_class: int, batch_size: int, sampling: Sampling, per_task: int | None = None) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"{setting(self, 'sampling')}={sampling!r} is not supported; use one of {', '.join(SAMPLINGS)}.")
        for arg, value in (("per_class", per_class), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 1.")
        if sampling == "task" and (per_task is None or per_task < 1):
            raise ValueError(f"{setting(self, 'sampling')}=task needs per_task, the examples kept of each task "
                             f"(at least 1; Mammoth's A-GEM: buffer size // number of tasks), got {per_task}.")
        if sampling != "task" and per_task is not None:
            raise ValueError(f"{setting(self, 'per_task')}={per_task} is only used by sampling=task (sampling is "
                             f"{sampling}); remove per_task, or set sampling to task.")
        self.per_class, self.batch_size, self.sampling, self.per_task = per_class, batch_size, sampling, per_task
        self.memory: Memory | None = None
        # Draws the memory's examples and every memory batch: on the CPU, so that its state is
        # plain data in the checkpoint and a resumed run draws the same batches.
        self.generator = torch.Generator()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Before a checkpoint is restored, which then overwrites both.
        self.memory = Memory.for_sequence(trainer.datamodule, self.per_class, self.sampling, self.per_task)
        self.generator.manual_seed(run_seed())

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.memory.add(*task_stream(trainer.datamodule, task), self.generator)


class StreamMemoryMethod(Method):
    """A :class:`~lightning_cl.methods.method.Method` whose memory is a reservoir over the training
    stream (:class:`~lightning_cl.methods.memory.StreamMemory`): after every optimiser step the
    step's batch ``(x, y, t)`` is offered to it, example by example (Mammoth's
    ``buffer.add_data`` at the end of ``observe``), with the extras the subclass named in
    ``stores`` and handed over in that step with :meth:`store` (DER: the batch's logits).

    :meth:`replay` draws ``minibatch_size`` kept examples (all of them if fewer; ``None`` while
    nothing is kept). The memory's slots and every replayed batch come from one CPU generator
    seeded from the run's seed: both, and the memory, are in the checkpoint.

    Args:
        buffer_size: the most examples kept (the papers' buffer size).
        minibatch_size: examples replayed per draw.

    Raises:
        ValueError: if ``buffer_size`` or ``minibatch_size`` is below 1.
    """

    keeps = ("memory", "generator")
    stores: ClassVar[tuple[str, ...]] = ()  # the extra per-example tensors kept, e.g. ("logits",)

    def __init__(self, buffer_size: int, minibatch_size: int) -> None:
        for arg, value in (("buffer_size", buffer_size), ("minibatch_size", minibatch_size)):
            if value < 1:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 1.")
        self.buffer_size, self.minibatch_size = buffer_size, minibatch_size
        self.memory: StreamMemory | None = None
        # Draws the reservoir's slots and every replayed batch: on the CPU, so that its state is
        # plain data in the checkpoint and a resumed run continues the same random stream.
        self.generator = torch.Generator()
        self._stored: dict[str, torch.Tensor] = {}

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Before a checkpoint is restored, which then overwrites both.
        self.memory = StreamMemory(self.buffer_size)
        self.generator.manual_seed(run_seed())

    def replay(self) -> dict[str, torch.Tensor] | None:
        """``minibatch_size`` kept examples (``"x"``, ``"y"``, ``"t"`` and the extras), or None if none is kept."""
        if not len(self.memory):
            return None
        return self.memory.sample(self.minibatch_size, self.generator)

    def store(self, **extras: torch.Tensor) -> None:
        """Hand over the extras (``stores``) of the current batch, kept with it after the step."""
        self._stored = extras

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        stored, self._stored = self._stored, {}
        if lacking := [name for name in self.stores if name not in stored]:
            raise RuntimeError(f"{type(self).__name__} keeps {', '.join(lacking)} with each example, but the training "
                               "step did not ask for its loss_terms: the module must call every method's loss_terms "
                               "(as lightning_cl.classifier.ContinualClassifier does).")
        x, y, t = batch[:3]
        self.memory.add(x, y, t, self.generator, **stored)
