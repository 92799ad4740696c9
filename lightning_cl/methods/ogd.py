"""Orthogonal Gradient Descent (Farajtabar, Azizan, Mott and Li 2020, "Orthogonal Gradient
Descent for Continual Learning", AISTATS, arXiv:1910.07104).

At the end of each task, gradients that describe what the model does on that task are stored
as an orthonormal basis; during later tasks each update is projected onto the orthogonal
complement of that basis, so that (to first order) it does not change the stored outputs.
The notebook's variant stores one gradient per task, that of the mean loss over the task's
training batches. The paper projects the gradient and steps with plain SGD; ``project: update``
(or ``both``) projects the optimiser's update itself (:mod:`~lightning_cl.methods.span_projection`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.factored_span import FactoredSpan
from lightning_cl.maths.gradients import FlatGradient, flatten_grads, flat_views, orthonormal_extend, project_out_
from lightning_cl.maths.passes import first_examples, mean_loss_gradient, per_example_gradients, per_example_linear_factors
from lightning_cl.methods.span_projection import Projection, SpanProjection
from lightning_cl.task_callback import setting

Variant = Literal["mean_loss", "gtl", "all", "ave"]
VARIANTS = ("mean_loss", "gtl", "all", "ave")
# What the paper's variants differentiate, per example: (logits, label, units) -> scalar or vector.
LOGIT_OF = {
    "gtl": lambda logits, y, units: logits.gather(0, y.unsqueeze(0)).squeeze(0),  # the ground-truth logit
    "ave": lambda logits, y, units: logits.mean(),
    "all": lambda logits, y, units: logits,  # every logit: a Jacobian
}


class OrthogonalGradientDescent(SpanProjection):
    """Project every optimiser step of task 2 onwards off the gradients stored after earlier tasks.

    The projection of the gradient runs in ``on_before_optimizer_step``: once per optimiser
    step, on the final gradient (after gradient accumulation and AMP unscaling).
    ``on_after_backward`` would see each micro-batch's gradient, still multiplied by the AMP
    loss scale. The projection of the update (``project: update`` or ``both``) runs in
    ``on_train_batch_end``, on the change the optimiser made. The notebook's
    variant keeps an orthonormal ``(k, n)`` basis on the training device (a step costs two
    matrix-vector products); the paper's per-example variants keep their gradients as layer
    factors (:class:`~lightning_cl.maths.factored_span.FactoredSpan`: ~200x less memory on the
    published MLP, and two small matrix products per layer per step).

    Args:
        variant: which gradients are stored after a task.

            * ``"mean_loss"`` (the notebook): the gradient of the cross-entropy loss averaged
              over the task's training batches, model in train mode; one vector per task.
            * ``"gtl"``, ``"all"``, ``"ave"`` (the paper): per-example gradients of the
              ground-truth logit, of every logit (``num_classes`` vectors per example), or of
              the mean of the logits, for ``examples_per_task`` training examples. These use
              eval mode (BatchNorm's running statistics, no Dropout), the only mode in which a
              single example's gradient is defined for a BatchNorm network.
        examples_per_task: examples per task for the paper's variants (ignored by
            ``"mean_loss"``). Up to this many gradients are stored per task (times the
            number of classes for ``"all"``), each as ``in + out`` numbers per Linear layer.
        eps: a stored gradient whose norm after Gram-Schmidt is below this is skipped (the
            notebook's variant; the per-example variants leave out directions whose singular
            value is below 1e-4 of the largest).
        chunk_size: examples per vectorised per-example gradient computation (memory bound).
        project: ``"gradient"`` (the paper, exact with plain SGD), ``"update"`` (exact with any
            optimiser, e.g. Adam) or ``"both"`` (the gradient, then the update): see
            :mod:`~lightning_cl.methods.span_projection`. The leak, the share of the actual
            update inside the span, is logged as ``ogd/leak``.
        reset_optimizer: clear the optimiser's state (Adam's moments) when each task after the
            first starts.
        leak_every: measure the leak on every this many steps (1: every step).

    Raises:
        ValueError: for an unknown ``variant`` or ``project``, or a non-positive
            ``examples_per_task``, ``eps``, ``chunk_size`` or ``leak_every``.
    """

    name = "ogd"
    keeps = ("basis", "factors", "vectors_per_task", "leak_sums", "leak_steps")

    def __init__(
        self, variant: Variant = "mean_loss", examples_per_task: int = 200, eps: float = 1e-8, chunk_size: int = 50,
        project: Projection = "gradient", reset_optimizer: bool = False, leak_every: int = 10,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"{setting(self, 'variant')}={variant!r} is not supported; use one of {', '.join(VARIANTS)}.")
        if examples_per_task < 1:
            raise ValueError(f"{setting(self, 'examples_per_task')}={examples_per_task} must be at least 1.")
        if eps <= 0:
            raise ValueError(f"{setting(self, 'eps')}={eps} must be > 0.")
        if chunk_size < 1:
            raise ValueError(f"{setting(self, 'chunk_size')}={chunk_size} must be at least 1.")
        self.variant, self.examples_per_task, self.eps, self.chunk_size = variant, examples_per_task, eps, chunk_size
        self.init_projection(project, reset_optimizer, leak_every)
        self.basis: torch.Tensor | None = None  # mean_loss: (k, n) orthonormal rows, on the training device
        self.factors: FactoredSpan | None = None  # the per-example variants' gradients
        self.vectors_per_task: list[int] = []  # how many rows each task added
        self._params: list[torch.nn.Parameter] = []
        self._grad: FlatGradient | None = None  # the step's gradient, projected in place
        self._removed_sum: torch.Tensor | None = None  # sum over the epoch's steps of ||B g|| / ||g||, on device
        self._steps = 0

    @property
    def per_example(self) -> bool:
        return self.variant != "mean_loss"

    @property
    def requires_network(self) -> tuple[str, ...]:
        """The per-example variants keep their gradients as factors of the network's Linear layers."""
        return ("linear_layers",) if self.per_example else ()

    @property
    def basis_size(self) -> int:
        """The dimension of the span that steps are projected off."""
        if self.per_example:
            return 0 if self.factors is None else self.factors.rank
        return 0 if self.basis is None else len(self.basis)

    def orthonormal_basis(self) -> torch.Tensor:
        """The span as dense orthonormal rows (for inspection and tests: ``(k, n)`` floats)."""
        return self.factors.orthonormal_basis() if self.per_example else self.basis

    # ----------------------------------------------------------------- Lightning hooks
    def _new_factors(self, pl_module: LightningModule) -> FactoredSpan:
        linears = [m for m in pl_module.network.linear_layers() if m.weight.requires_grad]
        return FactoredSpan(self._params, linears)

    @override
    def restore(self, attribute: str, value: Any, pl_module: LightningModule) -> Any:
        if attribute != "factors" or value is None:
            return value
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        factors = self._new_factors(pl_module)  # its layers are the network's
        factors.load_state_dict(value)
        return factors

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # the declared state, restored and on the device
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        n = sum(p.numel() for p in self._params)
        if self.per_example:
            if self.factors is None:
                self.factors = self._new_factors(pl_module)
            return
        if self.basis is None:
            self.basis = torch.empty(0, n, device=pl_module.device)
        elif self.basis.shape[1] != n:
            raise ValueError(f"The OGD basis in the checkpoint has {self.basis.shape[1]} entries per vector, the model {n}.")
        self._grad = FlatGradient(self._params, dtype=self.basis.dtype)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._removed_sum = torch.zeros((), device=pl_module.device)
        self._steps = 0

    @override
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if self.basis_size == 0 or self.per_example:
            return
        self._grad.attach()  # backward then accumulates into one flat vector, projected in place

    # ----------------------------------------------------------------- the span (SpanProjection)
    @property
    def span_empty(self) -> bool:
        return self.basis_size == 0

    def protected(self, pl_module: LightningModule) -> list[torch.Tensor]:
        """Every trainable parameter: the stored gradients span the whole parameter space."""
        return self._params

    def project_(self, tensors: list[torch.Tensor]) -> None:
        if self.per_example:
            self.factors.project_(tensors)
            return
        flat = flatten_grads(self._params, tensors)
        project_out_(flat, self.basis)
        torch._foreach_copy_(tensors, flat_views(self._params, flat))

    def inside_norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors))).square()
        if self.per_example:
            inside = self.factors.inside_norm(tensors).square()
        else:
            inside = torch.mv(self.basis, flatten_grads(self._params, tensors)).square().sum()
        return torch.stack([inside, total]).reshape(1, 2)

    def project_gradient_(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.per_example:
            grads = [p.grad for p in self._params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            removed = self.factors.project_()
        else:
            g = self._grad.gather()
            norm = torch.linalg.vector_norm(g)
            removed = torch.linalg.vector_norm(project_out_(g, self.basis))
            self._grad.scatter(g)
        # Kept on the device and logged at the epoch end: .item() here would sync every step.
        self._removed_sum += removed / (norm + 1e-12)
        self._steps += 1

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the leak
        pl_module.log("ogd/basis_size", float(self.basis_size), on_epoch=True)
        if self._steps:
            pl_module.log("ogd/removed_frac", self._removed_sum / self._steps, on_epoch=True, sync_dist=True)

    # ----------------------------------------------------------------- task hooks
    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        if self.per_example:
            deltas, inputs, dense = self._per_example_factors(trainer, pl_module, task)
            if trainer.world_size > 1:  # each process used its own examples: keep all of them
                gather = lambda t: trainer.strategy.all_gather(t).reshape(-1, t.shape[-1])  # noqa: E731
                deltas, inputs, dense = [gather(d) for d in deltas], [gather(h) for h in inputs], gather(dense)
            self.vectors_per_task.append(self.factors.extend(deltas, inputs, dense))
            return
        vectors = self._mean_loss_gradient(trainer, pl_module, task)
        # Every process averaged over its own shard: their mean is the mean over the task.
        vectors = trainer.strategy.reduce(vectors, reduce_op="mean")
        before = self.basis_size
        self.basis = orthonormal_extend(self.basis, vectors.reshape(-1, self.basis.shape[1]), eps=self.eps)
        self.vectors_per_task.append(self.basis_size - before)

    def _mean_loss_gradient(self, trainer: Trainer, pl_module: LightningModule, task: int) -> torch.Tensor:
        loader = trainer.datamodule.task_train_loader(task)
        return mean_loss_gradient(pl_module, loader, self._params, forward=pl_module.scenario_forward)

    def _per_example_factors(
        self, trainer: Trainer, pl_module: LightningModule, task: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The task's per-example gradients as :meth:`FactoredSpan.extend` takes them."""
        per_process = -(-self.examples_per_task // trainer.world_size)
        # A shuffled pass: its first examples are a random sample of the task.
        x, y, _ = first_examples(trainer.datamodule.task_train_loader(task), per_process)
        of, jacobian = LOGIT_OF[self.variant], self.variant == "all"
        # The network's unmasked logits (in task-IL too).
        deltas, inputs = per_example_linear_factors(pl_module, x, y, of, self.factors.linears, jacobian=jacobian)
        rows = len(deltas[0]) if deltas else len(x)
        if not self.factors.others:
            return deltas, inputs, torch.empty(rows, 0, device=x.device)
        # The few other parameters (BatchNorm's) per example, densely.
        grads = per_example_gradients(pl_module, x, y, of, jacobian=jacobian, chunk_size=self.chunk_size)
        by_param = dict(zip([id(p) for p in self._params], grads.values()))
        lead = 2 if jacobian else 1
        dense = torch.cat([by_param[id(p)].reshape(*by_param[id(p)].shape[:lead], -1) for p in self.factors.others], dim=-1)
        return deltas, inputs, dense.reshape(rows, -1)
