"""Gradient Projection Memory (Saha, Garg and Roy 2021, "Gradient Projection Memory for Continual
Learning", ICLR, arXiv:2103.09762; reference code: github.com/sahagobinda/GPM).

After each task, every layer keeps an orthonormal basis of the inputs it saw on that task (the
leading singular vectors of a matrix of sampled inputs, up to an energy threshold). Later
tasks update each layer only orthogonally to its basis, ``grad_W <- grad_W - grad_W M M^T``,
so the layer's outputs on the old tasks' inputs stay (to first order) as they were.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.gradients import gpm_extend, gpm_project_
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.method import Method
from lightning_cl.maths.passes import layer_inputs
from lightning_cl.task_callback import setting


class GPM(Method):
    """Project each Linear layer's gradient off the inputs that earlier tasks gave that layer.

    The layers are the network's Linear layers (``network.linear_layers()``, which the method
    contract asks of a network for GPM). The paper's MLP has no biases; here each layer is
    treated as one matrix ``[W | b]`` acting on its input with a constant 1 appended, so biases
    are projected too and the old inputs' outputs are protected exactly as in the paper. Normalisation layers (BatchNorm, LayerNorm)
    are not projected: GPM protects the Linear layers only.

    The basis update runs at each task end (except the last) on ``examples`` training
    examples of the task, in eval mode; the projection in ``on_before_optimizer_step``, once
    per step on the final gradient, costs two small matrix products per layer.

    Args:
        threshold: the energy threshold ``eps_th`` of each layer, input layer first (the
            paper's Permuted-MNIST MLP: 0.95 for the first layer, 0.99 for the others), or one
            value for every layer. Higher keeps more directions: less forgetting, less room
            for new tasks.
        examples: training examples per task whose layer inputs form the representation
            matrices (the paper: 125 for the MLP; its code: 300).

    Raises:
        ValueError: for a threshold outside (0, 1] or ``examples`` below 1; at setup, a
            ``ContractError`` (a ValueError) for a number of thresholds that is neither 1 nor
            the number of Linear layers.
    """

    name = "gpm"
    projects_gradients = True
    keeps = ("bases",)
    requires_network = ("linear_layers",)

    def __init__(self, threshold: list[float] = [0.95, 0.99, 0.99], examples: int = 125) -> None:
        if not threshold or any(not 0 < th <= 1 for th in threshold):
            raise ValueError(f"{setting(self, 'threshold')}={list(threshold)} must be one or more values in (0, 1].")
        if examples < 1:
            raise ValueError(f"{setting(self, 'examples')}={examples} must be at least 1.")
        self.threshold, self.examples = list(threshold), examples
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

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        for layer, basis in zip(self.layers(pl_module), self.bases):
            if basis.shape[1] and layer.weight.grad is not None:
                gpm_project_(layer.weight.grad, None if layer.bias is None else layer.bias.grad, basis)

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
            self.bases[i] = gpm_extend(self.bases[i], inp.T, th)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for i, basis in enumerate(self.bases):
            pl_module.log(f"gpm/basis_layer{i + 1}", float(basis.shape[1]), on_epoch=True)
