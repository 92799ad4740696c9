"""What the methods that project each optimiser step's gradient against a memory share (GEM,
A-GEM): the step's gradient gathered into one flat vector, projected in place, and the fraction
of the epoch's steps that were projected, logged as ``<name>/projected_frac``."""

from __future__ import annotations

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.gradients import FlatGradient
from lightning_cl.methods.method import Method


class ProjectedStep(Method):
    """A mix-in base of a method that projects the step's gradient in ``on_before_optimizer_step``.

    A subclass says when it constrains (:meth:`constrains`), projects ``self._grad`` (gather,
    project, scatter) in its own ``on_before_optimizer_step``, and counts ``self._projected``
    and ``self._steps``, which it resets at each epoch's start in the type it counts in.
    """

    def __init__(self) -> None:
        self._params: list[torch.nn.Parameter] = []
        self._grad: FlatGradient | None = None  # the step's gradient, projected in place
        self._projected = None  # steps of the epoch that were projected
        self._steps = 0

    def constrains(self) -> bool:
        """Whether this step is projected (the memory holds an earlier task)."""
        raise NotImplementedError

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._grad = FlatGradient(self._params)

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if self.constrains():
            self._grad.attach()  # backward then accumulates into one flat vector, projected in place

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._steps:
            pl_module.log(f"{self.name}/projected_frac", self._projected / self._steps, on_epoch=True, sync_dist=True)
