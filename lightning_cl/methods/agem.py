"""Averaged Gradient Episodic Memory (Chaudhry, Ranzato, Rohrbach and Elhoseiny 2019,
"Efficient Lifelong Learning with A-GEM", ICLR, arXiv:1812.00420).

A memory of earlier tasks' examples gives, at every step, a reference gradient: the gradient
of the loss on a random memory batch. When the step's gradient ``g`` would increase that loss
(``g . g_ref < 0``) it is projected to ``g - (g . g_ref) / (g_ref . g_ref) g_ref``, the
closest gradient that does not (eq. 11). Memory: 100 examples per class, as in the Split-MNIST
protocol of van de Ven, Tuytelaars & Tolias 2022 ("Three types of incremental learning").
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.gradients import agem_project_, flatten_grads
from lightning_cl.methods.memory import Sampling
from lightning_cl.methods.memory_method import MemoryMethod
from lightning_cl.methods.projected_step import ProjectedStep


class AGEM(MemoryMethod, ProjectedStep):
    """Project every optimiser step of task 2 onwards so that it does not increase the loss on a memory batch.

    The projection runs in ``on_before_optimizer_step`` (once per step, on the final
    gradient). The reference gradient is taken with ``torch.autograd.grad`` on the memory
    batch (cross-entropy of ``scenario_forward``: masked to each example's task in task-IL), so
    the step's ``.grad`` is untouched until it is projected. The model stays in train mode, as
    in the paper's code: the memory batch also updates BatchNorm's running statistics.

    Args:
        per_class: examples kept per class of each task (``"balanced"``), or the budget per
            class of the whole sequence (``"reservoir"``).
        batch_size: memory examples per reference gradient (the paper: 256).
        sampling: ``"balanced"``, ``"reservoir"`` or ``"task"`` (see :class:`~lightning_cl.methods.memory.Memory`).
        per_task: ``"task"`` sampling: examples of each task kept, drawn at random whatever their
            class. Mammoth's A-GEM (``models/agem.py`` @ 7ab9db97, ``end_task``) keeps the first
            batch of a shuffled loader of ``buffer_size // N_TASKS`` examples of each task.

    Raises:
        ValueError: for an unknown ``sampling``, ``per_class`` or ``batch_size`` below 1, or
            ``per_task`` missing for ``"task"`` sampling (or given to another).
    """

    name = "agem"
    projects_gradients = True

    def __init__(self, per_class: int = 100, batch_size: int = 256, sampling: Sampling = "balanced",
                 per_task: int | None = None) -> None:
        super().__init__(per_class, batch_size, sampling, per_task)
        ProjectedStep.__init__(self)  # MemoryMethod's __init__ does not chain

    @override
    def constrains(self) -> bool:
        return len(self.memory) > 0

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._projected = torch.zeros((), device=pl_module.device)  # counted on the device: no sync per step
        self._steps = 0

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if not self.constrains():
            return
        x, y, t = self.memory.sample(self.batch_size, self.generator)
        with torch.enable_grad():
            logits, _ = pl_module.scenario_forward(x, t)
            ref = torch.autograd.grad(F.cross_entropy(logits, y), self._params, allow_unused=True)
        g = self._grad.gather()
        dot = agem_project_(g, flatten_grads(self._params, ref))
        self._grad.scatter(g)
        self._projected += dot < 0  # read at the epoch end: .item() here would sync every step
        self._steps += 1
