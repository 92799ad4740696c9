"""Experience Replay (Chaudhry, Rohrbach, Elhoseiny, Ajanthan, Dokania, Torr and Ranzato 2019,
"On Tiny Episodic Memories in Continual Learning", arXiv:1902.10486).

A small memory of earlier tasks' training examples is replayed alongside every batch. In
the Split-MNIST protocol of van de Ven, Tuytelaars & Tolias 2022: 100 examples per class, a
replayed batch of 128 each iteration, and in task ``t`` (from 1) the loss
``(1/t) * L_current + (1 - 1/t) * L_replay``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.memory import Sampling
from lightning_cl.methods.memory_method import MemoryMethod


class ExperienceReplay(MemoryMethod):
    """Train on a replayed memory batch next to every batch of task 2 onwards.

    At the end of each task its training examples are offered to the memory. Every training
    step of a later task draws ``batch_size`` memory examples (without replacement) and adds
    ``(1 - 1/t) * cross_entropy`` on them (masked to their own tasks in task-IL) as the loss
    term ``replay``, while the current batch's cross-entropy is weighted by ``1/t``.

    Args:
        per_class: examples kept per class of each task (``"balanced"``), or the budget per
            class of the whole sequence (``"reservoir"``: ``per_class`` times its number of classes).
        batch_size: replayed examples per training step.
        sampling: ``"balanced"`` (a fixed number per class, chosen at random),
            ``"reservoir"`` (a uniform sample of every training example offered so far) or
            ``"task"`` (``per_task`` examples of each task, chosen at random whatever their class).
        per_task: ``"task"`` sampling's examples kept of each task (only with it).

    Raises:
        ValueError: for an unknown ``sampling``, ``per_class`` or ``batch_size`` below 1, or
            ``per_task`` missing for ``"task"`` sampling (or given to another).
    """

    name = "er"

    def __init__(self, per_class: int = 100, batch_size: int = 128, sampling: Sampling = "balanced",
                 per_task: int | None = None) -> None:
        super().__init__(per_class, batch_size, sampling, per_task)

    @override
    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        return 1.0 / (trainer.datamodule.current_task + 1)

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        if not len(self.memory):
            return {}
        x, y, t = self.memory.sample(self.batch_size, self.generator)
        logits, _ = pl_module.scenario_forward(x, t)
        return {"replay": (1.0 - self.current_loss_weight(trainer, pl_module)) * F.cross_entropy(logits, y)}
