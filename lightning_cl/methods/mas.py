"""Memory Aware Synapses (Aljundi, Babiloni, Elhoseiny, Rohrbach and Tuytelaars 2018, "Memory
Aware Synapses: Learning what (not) to forget", ECCV, arXiv:1711.09601).

A parameter's importance is how sensitive the network's output is to it, without labels: the
mean over a task's examples of ``|d ||f(x)||^2 / d theta|``, ``f(x)`` the logits. Importances
add up over tasks, and later tasks pay ``lam * sum Omega (theta - theta*)^2``.
"""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.passes import first_examples, output_norm_importance, trainable_parameters
from lightning_cl.methods.quadratic_penalty import QuadraticPenalty, Tensors
from lightning_cl.task_callback import setting


class MAS(QuadraticPenalty):
    """Penalise moving the parameters that the outputs on earlier tasks were sensitive to.

    After each task (but the last), the importance is measured on the task's first
    ``examples`` training examples of a shuffled pass, in eval mode (in task-IL ``f(x)`` is the
    example's task's units), added to ``Omega``, and ``theta*`` becomes the current
    parameters. Every later step adds the gradient of ``lam * sum_i Omega_i (theta_i - theta*_i)^2``
    (:class:`~lightning_cl.methods.quadratic_penalty.QuadraticPenalty`), whose value is logged as ``train/loss_mas``.

    Args:
        lam: the penalty's weight (the Split-MNIST protocol gives none; configs/methods/mas.yaml records how it was chosen).
        examples: the most training examples of a task the importance is averaged over.

    Raises:
        ValueError: for a negative ``lam`` or ``examples`` below 1.
    """

    name = "mas"
    keeps = ("omega", "anchor")

    def __init__(self, lam: float, examples: int = 1000) -> None:
        if lam < 0:
            raise ValueError(f"{setting(self, 'lam')}={lam} must be >= 0.")
        if examples < 1:
            raise ValueError(f"{setting(self, 'examples')}={examples} must be at least 1.")
        super().__init__()
        self.lam, self.examples = lam, examples
        self.omega: Tensors | None = None
        self.anchor: Tensors | None = None

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        x, _, t = first_examples(trainer.datamodule.task_train_loader(task), self.examples)
        new = output_norm_importance(pl_module.network, x, t, unit_mask=pl_module.unit_mask)
        self.omega = new if self.omega is None else {n: self.omega[n] + new[n] for n in new}
        self.anchor = {n: p.detach().clone() for n, p in trainable_parameters(pl_module.network).items()}
        self.terms_changed()

    @override
    def penalty_terms(self) -> list[tuple[Tensors, Tensors]]:
        """``lam * Omega`` and ``theta*`` (none before the first task ends)."""
        return [] if self.omega is None else [({n: self.lam * v for n, v in self.omega.items()}, self.anchor)]
