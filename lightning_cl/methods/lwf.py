"""Learning without Forgetting (Li and Hoiem 2016, "Learning without Forgetting", ECCV; TPAMI
2017, arXiv:1606.09282), as van de Ven, Tuytelaars and Tolias 2022 ("Three types of incremental
learning", Nature Machine Intelligence) run it.

A frozen copy of the model after the previous task labels the current task's inputs with its
outputs; the model is trained to keep giving them (knowledge distillation at a temperature,
Hinton et al. 2015), with no data of the earlier tasks stored.

This follows the 2022 version of the reference code, github.com/GMvandeVen/continual-learning at
commit df9f983c1f3981496d2ca128cbdf1d846e33adab, in every scenario:

* ``train.py``, ``train_cl``: ``previous_model = copy.deepcopy(model).eval()`` after each task;
  LwF replays the current batch (``x_ = x``) with the previous model's scores as soft targets,
  ``scores_ = previous_model.classify(x_)``: over every output in class-IL (``options.py``:
  ``--active-classes`` defaults to ``all``, so ``active_classes`` is None) and domain-IL, and in
  task-IL once per earlier task on that task's units (``scores_temp[:, active_classes[context_id]]``);
* ``models/utils/loss_functions.py``, ``loss_fn_kd`` with its default ``norm=False``:
  ``-sum_c softmax(target/T)_c log softmax(scores/T)_c``, summed over the units and averaged over
  the batch, without the ``T^2`` factor of Hinton et al.;
* ``models/classifier.py``, ``train_a_batch`` with ``lwf_weighting`` (set for LwF in ``main.py``:
  ``if args.replay=="current" and model.replay_targets=="soft"``, read at commit
  0fa419e5f38b68f5aac73fa522a9ed4d5026dbb5): the distillation terms are averaged over the
  earlier tasks (``sum(loss_replay)/n_replays``), multiplied by ``context - 1`` except in
  class-IL (``if ... self.lwf_weighting and (not self.scenario=='class'): loss_replay *= (context-1)``),
  and added 1:1 to the current loss (``loss_total = loss_cur+loss_replay``).

So in task ``t``: class-IL ``L_current + KD(all units)``; domain-IL ``L_current + (t-1) KD(all
units)``; task-IL ``L_current + sum_{k<t} KD(units of task k)``; ``T`` 2 (``options.py``,
``--temp``). The 2019 version of the code (``encoder.py`` at commit
10811aa0a8801710d9b53bc7867b1d51fc1bdd70, ``train_a_batch``: ``rnt*loss_cur+(1-rnt)*loss_replay``
with ``rnt = 1/t``), which this class followed before, is not followed.
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
    """The reference code's ``loss_fn_kd``: the cross-entropy of ``softmax(logits/T)`` against the
    soft targets ``softmax(target_logits/T)``, summed over the units and averaged over the batch,
    without a ``T^2`` factor. Its gradient is that of ``KL(targets || softmax(logits/T))``; its
    value exceeds the KL divergence by the targets' entropy."""
    log_p = F.log_softmax(logits / temperature, dim=1)
    target = F.softmax(target_logits / temperature, dim=1)
    return -(target * log_p).sum(1).mean()


def frozen_copy(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode whose parameters take no gradient."""
    old = copy.deepcopy(network).eval()
    for p in old.parameters():
        p.requires_grad_(False)
        p.grad = None
    return old


class LwF(Method):
    """Distil the previous model's outputs on the current inputs (Learning without Forgetting).

    At the end of each task (but the last) a frozen copy of ``pl_module.network`` is kept (in eval
    mode). From the second task on, the distillation loss against it (:func:`distillation_loss`)
    is added to the unweighted cross-entropy, logged as ``train/loss_distill``, over the units the
    reference code compares (see the module docstring):

    * class-IL: every output unit of the network, those of tasks not seen yet included (a softmax
      over the old units alone would not change when the new units' logits grow, and could not
      stop the new classes from taking over); weight 1;
    * domain-IL: every unit; weight ``t - 1`` in task ``t``;
    * task-IL: each earlier task's own units in turn (its head), summed over those tasks. The
      batch's logits are masked to the current task, so the current model's unmasked logits come
      from a second forward pass (a BatchNorm network then updates its running statistics twice
      per step, as with the separate replay pass of the reference code).

    In class-IL and domain-IL the student's logits are those of the training step's forward pass
    (the reference code runs a second one; they differ only under Dropout).

    Args:
        temperature: the distillation temperature ``T`` (the reference code's default: 2).

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
        self._units: tuple[int, list[torch.Tensor]] | None = None  # task-IL: (task, units of each earlier task)

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

    def unit_groups(self, trainer: Trainer, pl_module: LightningModule) -> list[torch.Tensor]:
        """Task-IL: the output units of each earlier task, one KD term each."""
        datamodule, task = trainer.datamodule, trainer.datamodule.current_task
        if self._units is None or self._units[0] != task:
            groups = [datamodule.task_units(s) for s in range(task)]
            self._units = (task, [torch.tensor(list(g), device=pl_module.device) for g in groups])
        return self._units[1]

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        if self.old_network is None:
            return {}
        x = batch[0]
        with torch.no_grad():
            old = self.old_network(x)[0]
        datamodule = trainer.datamodule
        if pl_module.unit_mask is None:  # class-IL, domain-IL: every unit, one term
            kd = distillation_loss(outputs[0], old, self.temperature)
        else:
            new = pl_module.network(x)[0]
            groups = self.unit_groups(trainer, pl_module)
            kd = sum(distillation_loss(new[:, u], old[:, u], self.temperature) for u in groups) / len(groups)
        weight = 1 if datamodule.scenario == "class" else datamodule.current_task  # t - 1 in task t
        return {"distill": weight * kd}
