"""Learning without Forgetting (Li and Hoiem 2016, "Learning without Forgetting", ECCV; TPAMI
2017, arXiv:1606.09282), with the weighting of van de Ven, Tuytelaars and Tolias 2022 ("Three
types of incremental learning"): in task ``t`` the loss is
``(1/t) * L_current + (1 - 1/t) * L_distill``.

A frozen copy of the model after the previous task labels the current task's inputs with its
outputs on the earlier tasks' units; the model is trained to keep giving them (knowledge
distillation at a temperature, Hinton et al. 2015), with no data of the earlier tasks stored.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_cl.methods.method import Method
from lightning_cl.task_callback import setting


def distillation_loss(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(target/T) || softmax(logits/T))``, averaged over the batch. It has the
    gradient of the soft cross-entropy of van de Ven et al.'s code, and is 0 when both agree."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    log_target = F.log_softmax(target_logits / temperature, dim=1)
    return F.kl_div(log_p, log_target, reduction="batchmean", log_target=True) * temperature**2


def frozen_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode whose parameters take no gradient."""
    old = copy.deepcopy(network).eval()
    for p in old.parameters():
        p.requires_grad_(False)
        p.grad = None
    return old


class LwF(Method):
    """Distil the previous model's outputs on the current inputs (Learning without Forgetting).

    At the end of each task (but the last) a frozen copy of ``pl_module.network`` is kept. In
    task ``t >= 2`` the cross-entropy is weighted ``1/t`` and ``(1 - 1/t) * KD`` is added,
    logged as ``train/loss_distill``. KD compares the old and the current model's logits on the
    units of the earlier tasks, as van de Ven et al.'s code does:

    * class-IL and domain-IL: the units of tasks ``1..t-1`` (domain-IL: every unit);
    * task-IL: each earlier task's own units in turn (its head), averaged over those tasks.
      The batch's logits are masked to the current task, so the current model's unmasked
      logits come from a second forward pass (a BatchNorm network then updates its running
      statistics twice per step, as with the separate replay pass of van de Ven et al.).

    Args:
        temperature: the distillation temperature ``T`` (van de Ven et al. 2022: 2).

    Raises:
        ValueError: for a non-positive ``temperature``.
    """

    name = "lwf"
    keeps = ("old_network",)

    def __init__(self, temperature: float = 2.0) -> None:
        if temperature <= 0:
            raise ValueError(f"{setting(self, 'temperature')}={temperature} must be > 0.")
        self.temperature = temperature
        self.old_network: nn.Module | None = None
        self._units: tuple[int, list[torch.Tensor]] | None = None  # (task, unit indices per KD term)

    @override
    def restore(self, attribute: str, value: Any, pl_module: LightningModule) -> Any:
        if value is None:
            return None
        old = frozen_copy(pl_module.network)  # the copy's architecture is the network's
        old.load_state_dict(value)
        return old

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.old_network = frozen_copy(pl_module.network)

    @override
    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        return 1.0 if self.old_network is None else 1.0 / (trainer.datamodule.current_task + 1)

    def unit_groups(self, trainer: Trainer, pl_module: LightningModule) -> list[torch.Tensor]:
        """The output units of each KD term in the current task (see the class docstring)."""
        datamodule, task = trainer.datamodule, trainer.datamodule.current_task
        if self._units is None or self._units[0] != task:
            groups = ([datamodule.task_units(s) for s in range(task)] if pl_module.unit_mask is not None
                      else [datamodule.seen_units(task - 1)])
            self._units = (task, [torch.tensor(list(g), device=pl_module.device) for g in groups])
        return self._units[1]

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        if self.old_network is None:
            return {}
        x = batch[0]
        with torch.no_grad():
            old = self.old_network(x)[0]
        new = outputs[0] if pl_module.unit_mask is None else pl_module.network(x)[0]
        groups = self.unit_groups(trainer, pl_module)
        kd = sum(distillation_loss(new[:, u], old[:, u], self.temperature) for u in groups) / len(groups)
        return {"distill": (1.0 - 1.0 / (trainer.datamodule.current_task + 1)) * kd}
