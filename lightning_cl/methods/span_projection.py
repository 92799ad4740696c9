"""The kit of the methods that keep later tasks' updates off a protected span of parameter space
(GPM, OGD): the forms of the projection, the optimiser's reset at task boundaries, and the leak,
the share of the actual update that lies inside the span.

**Gradient, update or both** (``project``). The papers project the *gradient* and let the
optimiser step along it (``"gradient"``). With plain SGD the step is ``-lr`` times that gradient
and stays off the span; Adam divides every coordinate by its own ``sqrt(v)`` and adds momentum,
so its step leaves the span's complement (shrunk Split-MNIST: 7-15% of each step's change inside
GPM's span, per layer, 5-25% inside OGD's). ``"update"`` projects the *update* itself, exactly,
whatever the optimiser: the parameters are kept before the step and set after it to
``theta_before + P(theta_after - theta_before)``, ``P`` the projection off the span, as Wang et
al. 2021 ("Training Networks in Null Space of Feature Covariance for Continual Learning", CVPR)
do for Adam. Exact up to the float32 rounding of the parameters: the leak left is 1e-6 to 3e-5,
the smaller the steps the larger. Adam's moments then see the raw gradients. ``"both"``
projects the gradient first as well, so that the moments hold projected gradients only. For
GPM, whose span holds most of a new task's gradient (83-93% of its norm on shrunk Split-MNIST),
that matters (ACC, domain- / class-IL: gradient 0.780 / 0.550, update 0.668 / 0.356, both
0.846 / 0.646; configs/methods/gpm.yaml); for OGD-GTL (33-62%) it made no difference one seed
can show, and it costs a second projection per step (OGD-GTL's: ~0.8x a naive step of the
published MLP, benchmarks/method_cost.py). Costs per step: ``"gradient"`` and ``"update"`` one
projection, ``"both"`` two; ``"update"`` and ``"both"`` a copy of the parameters too.

**Reset** (``reset_optimizer``). The optimiser's state (Adam's moments and step counts) is
cleared when a task starts, from the second on: GPM's reference code builds a new optimiser for
every task (github.com/sahagobinda/GPM, main_pmnist.py, ``main``: ``optimizer =
optim.SGD(model.parameters(), lr=args.lr)`` for ``task_id == 0`` and again for each later task).

**Leak.** Every ``leak_every``-th step (counted by the trainer's global step) whose span is not
empty, the actual change ``delta`` of the step is measured against the span: ``||delta inside
the span|| / ||delta||``, with the parameters kept before the step (in buffers reused from step
to step, as SI keeps them). Its mean over an epoch's measured steps is logged as ``<name>/leak``
(and per group: GPM's ``gpm/leak_layer<i>``); its mean over a task's goes into
``results.json``'s ``method_metrics`` (``None`` for the first task, which has no span). A
measurement costs half a projection: OGD-GTL's, ~0.3x a naive step, hence every 10th step by
default.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.method import Method
from lightning_cl.task_callback import setting

Projection = Literal["gradient", "update", "both"]
PROJECTIONS = ("gradient", "update", "both")


class SpanProjection(Method):
    """Base of GPM and OGD. A subclass calls :meth:`init_projection` in ``__init__``, lists
    ``leak_sums`` and ``leak_steps`` in ``keeps`` and provides the span: :attr:`span_empty`,
    :meth:`protected`, :meth:`project_gradient_`, :meth:`project_` and :meth:`inside_norms`.

    Args (of the subclasses):
        project: ``"gradient"`` (the papers), ``"update"`` (exact under any optimiser) or
            ``"both"`` (the gradient, then the update: exact, and Adam's moments see projected
            gradients only).
        reset_optimizer: clear the optimiser's state when each task after the first starts.
        leak_every: measure the leak on every this many steps (1: every step).
    """

    projects_gradients = True
    leak_groups: tuple[str, ...] = ()  # names of the groups of inside_norms beyond the whole (GPM: its layers)

    def init_projection(self, project: Projection, reset_optimizer: bool, leak_every: int) -> None:
        if project not in PROJECTIONS:
            raise ValueError(f"{setting(self, 'project')}={project!r} is not supported; use one of {', '.join(PROJECTIONS)}.")
        if leak_every < 1:
            raise ValueError(f"{setting(self, 'leak_every')}={leak_every} must be at least 1.")
        self.project, self.reset_optimizer, self.leak_every = project, bool(reset_optimizer), leak_every
        # Declared state: the leak summed over the current task's steps (whole, then each group), and how many.
        self.leak_sums: torch.Tensor | None = None
        self.leak_steps = 0
        self._before: list[torch.Tensor] = []  # the protected parameters before the step in progress
        self._stepped = self._measure = False
        self._epoch_sums: torch.Tensor | None = None  # the same over the epoch, on the device: no sync per step
        self._epoch_steps = 0

    # ----------------------------------------------------------------- what a subclass provides
    @property
    def span_empty(self) -> bool:
        raise NotImplementedError

    def protected(self, pl_module: LightningModule) -> list[torch.Tensor]:
        """The parameters whose change the span constrains, in the order :meth:`project_` takes them."""
        raise NotImplementedError

    def project_gradient_(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """In place, the step's gradient off the span (the papers' projection)."""
        raise NotImplementedError

    def project_(self, tensors: list[torch.Tensor]) -> None:
        """In place, ``tensors`` (shaped like :meth:`protected`: a change of the parameters) off the span."""
        raise NotImplementedError

    def inside_norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """``(1 + len(leak_groups), 2)``: the squared norm of the part of ``tensors`` inside the span,
        and their squared norm, of the whole, then of each group."""
        raise NotImplementedError

    # ----------------------------------------------------------------- hooks
    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint made before the leak was measured lacks its sums: that task's leak then
        # averages the steps after the resume.
        super().load_state_dict({"leak_sums": None, "leak_steps": 0} | state_dict)

    @override
    def on_task_start(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.leak_sums, self.leak_steps = None, 0
        if self.reset_optimizer and task > 0:
            for optimizer in trainer.optimizers:
                optimizer.state.clear()  # Adam builds its moments and step count anew on the next step

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_sums, self._epoch_steps = None, 0

    @override
    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if self.span_empty:
            return
        if self.project != "update":
            self.project_gradient_(trainer, pl_module)
        self._measure = trainer.global_step % self.leak_every == 0
        if self.project == "gradient" and not self._measure:
            return
        params = self.protected(pl_module)
        if len(self._before) != len(params) or any(b.shape != p.shape or b.device != p.device
                                                   for b, p in zip(self._before, params)):
            self._before = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(self._before, params)
        self._stepped = True

    @override
    @torch.no_grad()
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._stepped:
            return
        self._stepped = False
        params = self.protected(pl_module)
        if self.project != "gradient":  # theta <- theta_before + P(theta - theta_before)
            torch._foreach_sub_(params, self._before)  # the parameters now hold the step's change
            self.project_(params)
            torch._foreach_add_(params, self._before)
        if not self._measure:
            return
        change = torch._foreach_sub(params, self._before)  # the change the step made, as the parameters hold it
        norms = self.inside_norms(change)
        leak = (norms[:, 0] / norms[:, 1].clamp(min=torch.finfo(norms.dtype).tiny)).sqrt()
        self._epoch_sums = leak if self._epoch_sums is None else self._epoch_sums + leak
        self._epoch_steps += 1
        self.leak_sums = leak if self.leak_sums is None else self.leak_sums + leak
        self.leak_steps += 1

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._epoch_steps:
            means = self._epoch_sums / self._epoch_steps
            for i, key in enumerate(self._leak_keys()):
                pl_module.log(key, means[i], on_epoch=True, sync_dist=True)

    @override
    def task_metrics(self, trainer: Trainer, pl_module: LightningModule, task: int) -> dict[str, float | None]:
        means = (self.leak_sums / self.leak_steps).tolist() if self.leak_steps else [None] * (1 + len(self.leak_groups))
        return dict(zip(self._leak_keys(), means))

    def _leak_keys(self) -> list[str]:
        return [f"{self.name}/leak", *(f"{self.name}/leak_{group}" for group in self.leak_groups)]
