"""Pure measurement functions: test accuracy per task, seen-class loss/accuracy, sparsity.

SPEC.md, "Loss and measurements": population sparsity is the fraction of activations that
are exactly zero, over examples x neurons, on the test images of the classes seen so far.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy


@dataclass
class TaskEvaluation:
    """What is measured after a task. ``task_accuracy[j]`` is the test accuracy on task j's classes."""

    task_accuracy: list[float]
    seen_accuracy: float
    seen_loss: float
    sparsity: dict[str, float]


def population_sparsity(hidden: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Fraction of exact zeros per hidden layer (``h1``, ``h2``, ...) and over all of them (``overall``)."""
    zeros = [(h == 0).sum() for h in hidden]
    result = {f"h{i + 1}": (z / h.numel()).item() for i, (z, h) in enumerate(zip(zeros, hidden))}
    result["overall"] = (sum(zeros) / sum(h.numel() for h in hidden)).item()
    return result


def class_mask(y: torch.Tensor, classes: list[int]) -> torch.Tensor:
    return torch.isin(y, torch.tensor(classes, device=y.device))


@torch.no_grad()
def eval_forward(network: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``network(x)`` in eval mode (BatchNorm's running statistics, no Dropout) without
    gradients, leaving the network in the mode it was in: measuring must not change training."""
    was_training = network.training
    network.eval()
    try:
        return network(x)
    finally:
        network.train(was_training)


@torch.no_grad()
def evaluate_tasks(
    network: nn.Module, x: torch.Tensor, y: torch.Tensor, tasks: list[list[int]], seen: list[int]
) -> TaskEvaluation:
    """Evaluate ``network`` (in eval mode) on the test set.

    Every task is measured, future ones too (they fill the upper triangle of the accuracy
    matrix). The seen-class loss is plain cross-entropy, as the notebook's validation loss.
    """
    logits, hidden = eval_forward(network, x)
    num_classes = logits.shape[1]
    task_accuracy = []
    for classes in tasks:
        mask = class_mask(y, classes)
        task_accuracy.append(multiclass_accuracy(logits[mask], y[mask], num_classes, average="micro").item())
    mask = class_mask(y, seen)
    return TaskEvaluation(
        task_accuracy=task_accuracy,
        seen_accuracy=multiclass_accuracy(logits[mask], y[mask], num_classes, average="micro").item(),
        seen_loss=F.cross_entropy(logits[mask], y[mask]).item(),
        sparsity=population_sparsity(tuple(h[mask] for h in hidden)),
    )
