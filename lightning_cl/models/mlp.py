"""The notebook's MLP: 784 -> 120 -> 84 -> 10 (the published Split-MNIST protocol: 784 -> 400 ->
400 -> outputs), with optional BatchNorm/LayerNorm and Dropout.

Variants are configuration (``norm``, ``dropout``), not subclasses. The forward pass returns
the logits and the hidden activations ``(h1, h2)`` after ReLU (and before Dropout), which the
L1 penalty, the sparsity measurement and the latent-space pictures all read.

The network contract, which this MLP keeps and another network (``model.network``) must keep:

- built as ``Network(input_size, num_outputs, **its_own_settings)``: the sizes come from the
  data (``TaskDataModule.input_size`` and ``num_outputs``);
- ``forward(x)`` with ``x`` of shape ``(batch, input_size)`` returns ``(logits, hidden)``:
  logits ``(batch, num_outputs)`` and a tuple of hidden activations, each ``(batch, width)``;
- ``linear_layers()`` returns its ``nn.Linear`` layers, input layer first, head last (what
  GPM and OGD project).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm = Literal["none", "batch", "layer"]
NORMS = ("none", "batch", "layer")


class MLP(nn.Module):
    """Multi-layer perceptron with one or more hidden layers.

    Args:
        norm: ``"none"``, ``"batch"`` (BatchNorm1d) or ``"layer"`` (LayerNorm), placed after each
            hidden linear layer and before its ReLU.
        dropout: probability of Dropout after each hidden ReLU; 0 disables it.
        in_features, hidden, num_classes: the layer sizes.

    Raises:
        ValueError: if ``norm`` is unknown, ``dropout`` is outside [0, 1), or ``hidden`` is
            empty or holds a width below 1.
    """

    def __init__(
        self,
        norm: Norm = "none",
        dropout: float = 0.0,
        in_features: int = 784,
        hidden: tuple[int, ...] = (120, 84),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm={norm!r} is not supported; use one of {', '.join(NORMS)}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must be in [0, 1) (it is the probability of zeroing a unit).")
        if not hidden or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in hidden):
            raise ValueError(f"hidden={list(hidden)} must be a non-empty list of positive layer widths, e.g. [400, 400].")
        sizes = (in_features, *hidden)
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(_norm_layer(norm, width) for width in hidden)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(hidden[-1], num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        hidden = []
        for linear, norm in zip(self.linears, self.norms):
            h = torch.relu(norm(linear(x)))
            hidden.append(h)
            x = self.dropout(h)
        return self.head(x), tuple(hidden)

    def linear_layers(self) -> list[nn.Linear]:
        """The Linear layers, input layer first, head last (what GPM and OGD project)."""
        return [*self.linears, self.head]


def _norm_layer(norm: str, width: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width)
    if norm == "layer":
        return nn.LayerNorm(width)
    return nn.Identity()
