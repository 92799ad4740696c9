"""Experience Replay (Chaudhry, Rohrbach, Elhoseiny, Ajanthan, Dokania, Torr and Ranzato 2019,
"On Tiny Episodic Memories in Continual Learning", arXiv:1902.10486).

A small memory of earlier tasks' training examples is replayed alongside every batch. SPEC.md
(the Split-MNIST protocol of van de Ven, Tuytelaars & Tolias 2022): 100 examples per class, a
replayed batch of 128 each iteration, and in task ``t`` (from 1) the loss
``(1/t) * L_current + (1 - 1/t) * L_replay``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.memory import SAMPLINGS, Memory, Sampling, run_seed
from lightning_cl.method import Method
from lightning_cl.task_callback import setting


class ExperienceReplay(Method):
    """Train on a replayed memory batch next to every batch of task 2 onwards.

    At the end of each task its training examples are offered to the memory. Every training
    step of a later task draws ``batch_size`` memory examples (without replacement) and adds
    ``(1 - 1/t) * cross_entropy`` on them (masked to their own tasks in task-IL) as the loss
    term ``replay``, while the current batch's cross-entropy is weighted by ``1/t``.

    Args:
        per_class: examples kept per class of each task (``"balanced"``), or the budget per
            class of the whole sequence (``"reservoir"``: ``per_class`` times its number of classes).
        batch_size: replayed examples per training step.
        sampling: ``"balanced"`` (a fixed number per class, chosen at random) or
            ``"reservoir"`` (a uniform sample of every training example offered so far).

    Raises:
        ValueError: for an unknown ``sampling``, or ``per_class`` or ``batch_size`` below 1.
    """

    name = "er"

    def __init__(self, per_class: int = 100, batch_size: int = 128, sampling: Sampling = "balanced") -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"{setting(self, 'sampling')}={sampling!r} is not supported; use one of {', '.join(SAMPLINGS)}.")
        for arg, value in (("per_class", per_class), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 1.")
        self.per_class, self.batch_size, self.sampling = per_class, batch_size, sampling
        self.memory: Memory | None = None
        # Draws the memory's examples and every replayed batch: on the CPU, so that its state is
        # plain data in the checkpoint and a resumed run replays the same batches.
        self.generator = torch.Generator()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Before a checkpoint is restored: load_state_dict then overwrites both.
        self.memory = Memory.for_sequence(trainer.datamodule, self.per_class, self.sampling)
        self.generator.manual_seed(run_seed())

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.memory.to(pl_module.device)

    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.memory.add_task(trainer.datamodule, task, self.generator)

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

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict(), "generator": self.generator.get_state()}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.memory.load_state_dict(state_dict["memory"])
        self.generator.set_state(state_dict["generator"])
