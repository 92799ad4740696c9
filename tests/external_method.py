"""A continual-learning method written outside the package, against the public method contract
alone (lightning_cl.methods.method.Method and lightning_cl.methods.contract): what a
researcher's own method file looks like. Used by tests/test_method_contract.py through
``lightning-cl fit`` with ``class_path: external_method.StayNearTaskEnd``."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer

from lightning_cl.methods.method import Method


class StayNearTaskEnd(Method):
    """Penalise ``strength * ||theta - theta*||^2``, ``theta*`` the parameters after the latest task
    (a plain L2 anchor: Kirkpatrick et al. 2017's EWC with a Fisher of ones)."""

    name = "stay_near"
    keeps = ("anchor", "tasks_kept")

    def __init__(self, strength: float = 1.0) -> None:
        if strength < 0:
            raise ValueError(f"trainer.callbacks: StayNearTaskEnd init_args.strength={strength} must be >= 0.")
        self.strength = strength
        self.anchor: dict[str, torch.Tensor] | None = None
        self.tasks_kept: list[int] = []

    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.anchor = {n: p.detach().clone() for n, p in pl_module.network.named_parameters()}
        self.tasks_kept.append(task)

    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        if self.anchor is None:
            return {}
        penalty = sum((p - self.anchor[n]).square().sum() for n, p in pl_module.network.named_parameters())
        return {"stay_near": self.strength * penalty}
