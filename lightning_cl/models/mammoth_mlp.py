"""Mammoth's MNIST network (Buzzega et al. 2020, "Dark Experience for General Continual Learning",
NeurIPS): an MLP ``input -> 100 -> 100 -> outputs`` with ReLU, initialised as Mammoth initialises it.

github.com/aimagelab/mammoth, ``backbone/MNISTMLP.py`` (commit 0d727a7235cf836698418ca33a973431d1d671f0):
``fc1 = nn.Linear(input_size, 100)``, ``fc2 = nn.Linear(100, 100)``, ``nn.ReLU()`` after each, then
``classifier = nn.Linear(100, output_size)``; ``reset_parameters`` applies ``xavier`` of
``backbone/__init__.py`` (commit 0667792dd4fa70af9caf1b7f89cad89a8d05e339) to every Linear layer:
weights uniform in ``[-a, a]`` with ``a = sqrt(3) * sqrt(2 / (fan_in + fan_out))`` (Glorot's uniform
rule, ``nn.init.xavier_uniform_`` with gain 1), biases 0. PyTorch's default initialisation, which
the built-in MLP keeps, draws smaller weights (``1/sqrt(fan_in)``: 0.036 against Xavier's 0.082 for
the first layer) and random biases.

The same network as :class:`~lightning_cl.models.mlp.MLP` (forward, hidden activations,
``linear_layers``) with Mammoth's initialisation; selected with ``model.network``
(``configs/benchmarks/seq_mnist.yaml``).
"""

from __future__ import annotations

from torch import nn

from lightning_cl.models.mlp import MLP


class MammothMLP(MLP):
    """Mammoth's ``MNISTMLP``: ``input_size -> hidden... -> num_outputs``, ReLU, Xavier-uniform
    weights and zero biases.

    Args:
        input_size: the number of features of one example (from the data: 784 for MNIST).
        num_outputs: the size of the output layer (from the data's scenario).
        hidden: the widths of the hidden layers (Mammoth: ``[100, 100]``).

    Raises:
        ValueError: if ``hidden`` is empty or holds a width below 1.
    """

    def __init__(self, input_size: int, num_outputs: int, hidden: list[int] = [100, 100]) -> None:
        super().__init__(in_features=input_size, hidden=tuple(hidden), num_classes=num_outputs)
        for layer in self.linear_layers():
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
