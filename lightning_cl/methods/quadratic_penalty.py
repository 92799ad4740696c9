"""The base of the regularisers (EWC, online EWC, SI, MAS): a penalty
``sum_k sum_i w_k,i (theta_i - a_k,i)^2`` for moving the parameters away from anchors ``a_k``,
each parameter weighted by an importance ``w_k`` (the method's scale included).

Why the gradient and not a loss term: autograd through the penalty costs a forward and a
backward over every parameter for every anchor, measured at 1.4x a naive step on the
Split-MNIST MLP (benchmarks/method_cost.py). Its gradient has a closed form,
``2 sum_k w_k (theta - a_k) = 2 W (theta - c)`` with ``W = sum_k w_k`` and ``c`` the
importance-weighted mean anchor ``sum_k w_k a_k / W``, so it is added to the gradient in
``on_before_optimizer_step`` with four in-place operations over all parameters, however
many tasks there are. ``theta - c`` is taken before multiplying by ``W``, so a huge ``W`` (EWC's
lambda is up to 1e10) does not cancel catastrophically. The penalty's value is computed only
when the logger writes (``train/loss_<name>``); ``train/loss`` is the data loss alone.

A regulariser listed before a projection method (OGD, A-GEM, GPM) has its gradient projected
with the rest; listed after, it is not.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.method import Method
from lightning_cl.maths.passes import trainable_parameters

Tensors = dict[str, torch.Tensor]  # parameter name (in ``pl_module.network``) -> tensor
_STALE = object()


class QuadraticPenalty(Method):
    """A :class:`~lightning_cl.methods.method.Method` whose penalty is a sum of weighted quadratics.

    A subclass returns its terms from :meth:`penalty_terms` and calls :meth:`terms_changed`
    whenever they change (at a task end; the base calls it when training starts, after a
    checkpoint's state is restored and moved to the device).
    """

    def __init__(self) -> None:
        # (parameters, 2W, c) in the parameters' order, on their device, or None without terms;
        # _STALE until built (again) after a change.
        self._compiled: Any = _STALE
        self._offsets: list[torch.Tensor] = []  # theta - c, per step

    def penalty_terms(self) -> list[tuple[Tensors, Tensors]]:
        """``[(w_k, a_k), ...]``: importance (scale included) and anchor per term; [] for no penalty yet."""
        raise NotImplementedError

    def terms_changed(self) -> None:
        self._compiled = _STALE

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # the declared state, restored and on the device
        self.terms_changed()

    def penalty(self, pl_module: LightningModule) -> torch.Tensor:
        """The penalty's value, ``sum_k sum_i w_k,i (theta_i - a_k,i)^2`` (0 without terms)."""
        params = trainable_parameters(pl_module.network)
        terms = self.penalty_terms()
        total = sum((w[n] * (params[n] - a[n]).square()).sum() for w, a in terms for n in w)
        return total if terms else torch.zeros((), device=pl_module.device)

    @torch.no_grad()
    def _compile(self, pl_module: LightningModule) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]] | None:
        terms = self.penalty_terms()
        if not terms:
            return None
        params, weights, centres = [], [], []
        for name, p in trainable_parameters(pl_module.network).items():
            w = [wk[name].to(p.device, torch.float64) for wk, _ in terms]
            a = [ak[name].to(p.device, torch.float64) for _, ak in terms]
            total = torch.stack(w).sum(0)
            weighted_mean = torch.stack([wk * ak for wk, ak in zip(w, a)]).sum(0) / total
            # Where no term weighs a parameter, W is 0 and any centre will do.
            centre = torch.where(total > 0, weighted_mean, a[-1])
            params.append(p)
            weights.append(2 * total.to(p.dtype))  # 2W: the gradient's factor
            centres.append(centre.to(p.dtype))
        self._offsets = [torch.empty_like(p) for p in params]
        return params, weights, centres

    @override
    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if self._compiled is _STALE:
            self._compiled = self._compile(pl_module)
        if self._compiled is None:
            return
        params, weights, centres = self._compiled
        for p in params:
            if p.grad is None:  # a parameter the loss did not reach still feels the penalty
                p.grad = torch.zeros_like(p)
        # grad += 2W (theta - c), in a buffer kept from step to step: four in-place passes cost
        # less than allocating (measured on the Split-MNIST MLP).
        offsets = self._offsets
        torch._foreach_copy_(offsets, params)
        torch._foreach_sub_(offsets, centres)
        torch._foreach_mul_(offsets, weights)
        torch._foreach_add_([p.grad for p in params], offsets)
        if trainer is not None and trainer.global_step % trainer.log_every_n_steps == 0:
            # Only when the logger writes: computing the value costs as much as the gradient.
            pl_module.log(f"train/loss_{self.name}", self.penalty(pl_module), on_step=True, on_epoch=False)
