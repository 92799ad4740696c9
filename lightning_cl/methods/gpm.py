"""Gradient Projection Memory (Saha, Garg and Roy 2021, "Gradient Projection Memory for Continual
Learning", ICLR, arXiv:2103.09762; reference code: github.com/sahagobinda/GPM).

After each task, every layer keeps an orthonormal basis of the inputs it saw on that task (the
leading singular vectors of a matrix of sampled inputs, up to an energy threshold). Later
tasks update each layer only orthogonally to its basis, ``grad_W <- grad_W - grad_W M M^T``,
so the layer's outputs on the old tasks' inputs stay (to first order) as they were.

Against the reference code (github.com/sahagobinda/GPM at dc5ba5c, main_pmnist.py):
``get_representation_matrix`` takes 300 random training examples (``b=r[0:300]``,
``batch_list=[300,300,300]``); ``main`` sets ``threshold = np.array([0.95,0.99,0.99])`` for every
task; ``update_GPM`` keeps, after the first task, the directions whose cumulative energy is
below the threshold (``r = np.sum(np.cumsum(sval_ratio)<threshold[i]) #+1``, one fewer than eq. 5)
and after later tasks the fewest that reach it (eq. 9); ``main`` builds a new (plain SGD)
optimiser for every task. Its MLP has no biases.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.gradients import gpm_extend, gpm_inside_norm2, gpm_project_
from lightning_cl.maths.passes import layer_inputs
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.span_projection import Projection, SpanProjection
from lightning_cl.task_callback import setting


class GPM(SpanProjection):
    """Project each Linear layer's gradient (or update) off the inputs that earlier tasks gave that layer.

    The layers are the network's Linear layers (``network.linear_layers()``, which the method
    contract asks of a network for GPM). The paper's MLP has no biases; here each layer is
    treated as one matrix ``[W | b]`` acting on its input with a constant 1 appended, so biases
    are projected too and the old inputs' outputs are protected exactly as in the paper. Normalisation layers (BatchNorm, LayerNorm)
    are not projected: GPM protects the Linear layers only.

    The basis update runs at each task end (except the last) on ``examples`` training
    examples of the task, in eval mode; the projection in ``on_before_optimizer_step``, once
    per step on the final gradient, costs two small matrix products per layer; that of the
    update (``project: update`` or ``both``) as much after the step
    (:mod:`~lightning_cl.methods.span_projection`). The leak is logged as ``gpm/leak`` (all
    Linear layers together) and ``gpm/leak_layer<i>``.

    Args:
        threshold: the energy threshold ``eps_th`` of each layer, input layer first (the
            paper's Permuted-MNIST MLP: 0.95 for the first layer, 0.99 for the others), or one
            value for every layer. Higher keeps more directions: less forgetting, less room
            for new tasks.
        examples: training examples per task whose layer inputs form the representation
            matrices (the reference code: 300).
        project: ``"gradient"`` (the paper, exact with plain SGD), ``"update"`` (exact with any
            optimiser, e.g. Adam) or ``"both"`` (the gradient, then the update: exact, and Adam's
            moments see projected gradients only; GPM's best form with Adam).
        reset_optimizer: clear the optimiser's state (Adam's moments) when each task after the
            first starts, as the reference code's new optimiser per task does.
        leak_every: measure the leak on every this many steps (1: every step).

    Raises:
        ValueError: for a threshold outside (0, 1], ``examples`` or ``leak_every`` below 1 or an
            unknown ``project``; at setup, a ``ContractError`` (a ValueError) for a number of
            thresholds that is neither 1 nor the number of Linear layers.
    """

    name = "gpm"
    keeps = ("bases", "leak_sums", "leak_steps")
    requires_network = ("linear_layers",)

    def __init__(
        self, threshold: list[float] = [0.95, 0.99, 0.99], examples: int = 300, project: Projection = "gradient",
        reset_optimizer: bool = False, leak_every: int = 10,
    ) -> None:
        if not threshold or any(not 0 < th <= 1 for th in threshold):
            raise ValueError(f"{setting(self, 'threshold')}={list(threshold)} must be one or more values in (0, 1].")
        if examples < 1:
            raise ValueError(f"{setting(self, 'examples')}={examples} must be at least 1.")
        self.threshold, self.examples = list(threshold), examples
        self.init_projection(project, reset_optimizer, leak_every)
        self.bases: list[torch.Tensor] = []  # per layer, (in + 1, k): orthonormal columns

    @staticmethod
    def layers(pl_module: LightningModule) -> list[torch.nn.Linear]:
        return pl_module.network.linear_layers()

    @override
    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        super().check_setup(datamodule, pl_module)  # the contract: the network offers its layers
        n = len(self.layers(pl_module))
        if len(self.threshold) not in (1, n):
            raise ContractError(f"{setting(self, 'threshold')}={self.threshold}: give one value, or one per Linear "
                                f"layer ({n} in this network).")

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)  # the declared state, restored and on the device
        if not self.bases:
            self.bases = [torch.empty(layer.in_features + (layer.bias is not None), 0, device=pl_module.device)
                          for layer in self.layers(pl_module)]

    # ----------------------------------------------------------------- the span (SpanProjection)
    @property
    def span_empty(self) -> bool:
        return not any(basis.shape[1] for basis in self.bases)

    @property
    def leak_groups(self) -> tuple[str, ...]:
        return tuple(f"layer{i + 1}" for i in range(len(self.bases)))

    def protected(self, pl_module: LightningModule) -> list[torch.Tensor]:
        """Each Linear layer's weight, then its bias (if it has one)."""
        return [p for layer in self.layers(pl_module) for p in (layer.weight, layer.bias) if p is not None]

    def _by_layer(self, tensors: list[torch.Tensor]):
        """``(weight, bias or None, basis)`` per layer, of ``tensors`` laid out as :meth:`protected`."""
        pieces = iter(tensors)
        for basis in self.bases:
            weight = next(pieces)
            yield weight, (next(pieces) if len(basis) > weight.shape[1] else None), basis  # a bias: a row more

    def project_gradient_(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for layer, basis in zip(self.layers(pl_module), self.bases):
            if basis.shape[1] and layer.weight.grad is not None:
                gpm_project_(layer.weight.grad, None if layer.bias is None else layer.bias.grad, basis)

    def project_(self, tensors: list[torch.Tensor]) -> None:
        for weight, bias, basis in self._by_layer(tensors):
            if basis.shape[1]:
                gpm_project_(weight, bias, basis)

    def inside_norms(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        rows = [torch.stack([gpm_inside_norm2(w, b, basis) if basis.shape[1] else w.new_zeros(()),
                             w.square().sum() + (0 if b is None else b.square().sum())])
                for w, b, basis in self._by_layer(tensors)]
        per_layer = torch.stack(rows)
        return torch.cat([per_layer.sum(0, keepdim=True), per_layer])

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        xs, count = [], 0
        for x, _, _ in trainer.datamodule.task_train_loader(task):  # a shuffled pass: a random sample
            xs.append(x)
            count += len(x)
            if count >= self.examples:
                break
        x = torch.cat(xs)[: self.examples]
        layers = self.layers(pl_module)
        was_training = pl_module.network.training
        pl_module.network.eval()  # the representation the model is tested with (no Dropout)
        inputs = layer_inputs(pl_module.network, layers, x)
        pl_module.network.train(was_training)
        thresholds = self.threshold * len(layers) if len(self.threshold) == 1 else self.threshold
        for i, (layer, inp, th) in enumerate(zip(layers, inputs, thresholds)):
            if layer.bias is not None:
                inp = torch.cat([inp, torch.ones(len(inp), 1, device=inp.device, dtype=inp.dtype)], dim=1)
            self.bases[i] = gpm_extend(self.bases[i], inp.T, th, first=task == 0)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # the leak
        for i, basis in enumerate(self.bases):
            pl_module.log(f"gpm/basis_layer{i + 1}", float(basis.shape[1]), on_epoch=True)
