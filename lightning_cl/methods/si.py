"""Synaptic Intelligence (Zenke, Poole and Ganguli 2017, "Continual Learning Through Synaptic
Intelligence", ICML, arXiv:1703.04200).

While a task trains, each parameter's contribution to the drop in the loss is accumulated
along the optimisation path, ``w = sum over steps of -g * delta`` (``g`` the gradient, ``delta``
the step's change). At the task's end it is normalised by how far the parameter moved,
``omega += w / (Delta^2 + xi)``, and later tasks pay ``c * sum omega (theta - theta*)^2``.

As van de Ven, Tuytelaars & Tolias 2022 ("Three types of incremental learning") compute it, whose
Split-MNIST ``c`` the config holds. Reference code: github.com/GMvandeVen/continual-learning at
commit df9f983c1f3981496d2ca128cbdf1d846e33adab, ``models/cl/continual_learner.py``:
``update_importance_estimates`` (``W[n].add_(-p.grad*(p.detach()-p_old[n]))`` after every step,
``train.py`` ``train_cl``), ``update_omega`` (``omega_add = W[n]/(p_change**2 + epsilon)``, the
change since the task started) and ``surrogate_loss`` (``(omega * (p-prev_values)**2).sum()``,
times ``reg_strength``). The ``p.grad`` there is the gradient of the whole loss, SI's own penalty
included: ``models/classifier.py``, ``train_a_batch``, adds ``reg_strength * surrogate_loss()`` to
``loss_total`` before ``loss_total.backward()``.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.passes import trainable_parameters
from lightning_cl.methods.quadratic_penalty import QuadraticPenalty, Tensors
from lightning_cl.task_callback import setting


class SI(QuadraticPenalty):
    """Penalise moving the parameters whose path integral says they reduced an earlier task's loss.

    ``g`` is the gradient the optimiser used (of the whole loss, SI's own penalty included, as
    in the reference code: see the module docstring) and ``delta`` the step's change, both read in
    ``on_train_batch_end``, after the step, against the parameters kept in
    ``on_before_optimizer_step``. Every step after the first task adds
    the gradient of ``c * sum_i omega_i (theta_i - theta*_i)^2``
    (:class:`~lightning_cl.methods.quadratic_penalty.QuadraticPenalty`), whose value is logged as
    ``train/loss_si``; ``theta*`` are the parameters at the end of the latest task.

    Args:
        c: the penalty's weight (the Split-MNIST protocol of van de Ven et al. 2022: task-IL 10,
            domain-IL 5e4, class-IL 5e3).
        xi: damping of the normalisation, so that a parameter that hardly moved does not get
            an unbounded importance (van de Ven et al. 2022: 0.1).

    Raises:
        ValueError: for a negative ``c`` or a non-positive ``xi``.
    """

    name = "si"
    # The path of an unfinished task too: a resumed run continues it exactly.
    keeps = ("omega", "anchor", "path", "task_start")

    def __init__(self, c: float, xi: float = 0.1) -> None:
        if c < 0:
            raise ValueError(f"{setting(self, 'c')}={c} must be >= 0.")
        if xi <= 0:
            raise ValueError(f"{setting(self, 'xi')}={xi} must be > 0.")
        super().__init__()
        self.c, self.xi = c, xi
        self.omega: Tensors | None = None  # importance, summed over the tasks so far
        self.anchor: Tensors | None = None  # theta*: the parameters after the latest task
        self.path: Tensors | None = None  # w of the current task
        self.task_start: Tensors | None = None  # the parameters when the current task started
        # The parameters before the step in progress, in buffers reused from step to step:
        self._before: list[torch.Tensor] = []
        self._stepped = False

    @override
    def on_task_start(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        params = trainable_parameters(pl_module.network)
        self.path = {n: torch.zeros_like(p) for n, p in params.items()}
        self.task_start = {n: p.detach().clone() for n, p in params.items()}

    @override
    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        super().on_before_optimizer_step(trainer, pl_module, optimizer)  # the penalty's gradient, part of g
        params = list(trainable_parameters(pl_module.network).values())
        if len(self._before) != len(params) or self._before[0].device != params[0].device:
            self._before = [torch.zeros_like(p) for p in params]
        torch._foreach_copy_(self._before, params)
        self._stepped = True

    @override
    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._stepped:
            return
        # g is still each .grad: the module clears gradients before backward, not after the step,
        # and optimisers do not change .grad. Reading it here saves copying it every step. A
        # parameter without a gradient (g = 0) adds nothing.
        rows = [(b, p, w) for b, p, w in zip(self._before, trainable_parameters(pl_module.network).values(),
                                             self.path.values()) if p.grad is not None]
        if rows:
            before, params, path = (list(col) for col in zip(*rows))
            torch._foreach_sub_(before, params)  # now -delta
            torch._foreach_mul_(before, [p.grad for p in params])  # -g * delta
            torch._foreach_add_(path, before)  # w += -g * delta
        self._stepped = False

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        params = trainable_parameters(pl_module.network)
        new = {n: self.path[n] / ((p.detach() - self.task_start[n]).square() + self.xi) for n, p in params.items()}
        self.omega = new if self.omega is None else {n: self.omega[n] + new[n] for n in new}
        self.anchor = {n: p.detach().clone() for n, p in params.items()}
        self.terms_changed()

    @override
    def penalty_terms(self) -> list[tuple[Tensors, Tensors]]:
        """``c * omega`` and ``theta*`` (none before the first task ends)."""
        return [] if self.omega is None else [({n: self.c * v for n, v in self.omega.items()}, self.anchor)]
