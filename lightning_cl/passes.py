"""Pure passes over data that methods share (STYLE.md: "mean gradient, per-example gradients,
Fisher diagonal, layer inputs"), tested once on small tensors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


@torch.no_grad()
def layer_inputs(network: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The input of each of ``layers`` when ``network(x)`` runs (one forward pass, no gradients),
    in the order of ``layers``; ``(examples, in_features)`` each for Linear layers.

    The network runs in the mode it is in: the caller decides (GPM uses eval mode, the
    representation the model tests with).
    """
    inputs: list[torch.Tensor | None] = [None] * len(layers)

    def keep(i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs[i] = args[0].detach()
        return hook

    handles = [layer.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        network(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, v in enumerate(inputs) if v is None]
    if missing:
        raise ValueError(f"layers {missing} were not called by the network's forward pass")
    return inputs
