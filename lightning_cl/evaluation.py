"""Pure measurement functions: test accuracy per task, loss/accuracy on the tasks seen so far,
sparsity.

The notebook's measurements: population sparsity is the fraction of activations that
are exactly zero, over examples x neurons, on the test images of the tasks seen so far.
Each task is tested on its own test set with the scenario's labels (``forward`` applies the
task-IL mask), so the three scenarios share one evaluation.

A method with a prediction rule of its own (``Method.predict``: iCaRL's nearest mean of
exemplars) gives ``predict``: the accuracies are then those of its scores, while the seen
loss and the sparsity stay those of the network (its logits and hidden activations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

Forward = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t) -> scores, masked as the logits


@dataclass
class TaskEvaluation:
    """What is measured after a task. ``task_accuracy[j]`` is the test accuracy on task j."""

    task_accuracy: list[float]
    seen_accuracy: float
    seen_loss: float
    sparsity: dict[str, float]
    # ``task_il_accuracy[j]``: the same logits masked to task j's units (a class-IL run's task-IL
    # accuracy, Mammoth's); None unless asked for (``evaluate_tasks``'s ``task_units``)
    task_il_accuracy: list[float] | None = None


def population_sparsity(hidden: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Fraction of exact zeros per hidden layer (``h1``, ``h2``, ...) and over all of them (``overall``)."""
    zeros = [(h == 0).sum() for h in hidden]
    result = {f"h{i + 1}": (z / h.numel()).item() for i, (z, h) in enumerate(zip(zeros, hidden))}
    result["overall"] = (sum(zeros) / sum(h.numel() for h in hidden)).item()
    return result


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


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return multiclass_accuracy(logits, y, logits.shape[1], average="micro").item()


def task_il_accuracy(logits: torch.Tensor, y: torch.Tensor, units: Sequence[int]) -> float:
    """Accuracy of ``logits`` with every output outside ``units`` ruled out: the task-IL accuracy of
    a class-IL model on one task whose examples are labelled with ``units``. Mammoth's
    ``mask_classes`` (github.com/aimagelab/mammoth, ``utils/training.py`` at commit
    7ab9db97e3b5df6e1d9974468c7958f5c07696e1) sets the other outputs to ``-inf``; here to the dtype's
    lowest value, which gives the same argmax for finite logits."""
    keep = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
    keep[list(units)] = True
    return accuracy(logits.masked_fill(~keep, torch.finfo(logits.dtype).min), y)


@torch.no_grad()
def evaluate_tasks(forward: Forward, test_sets: Sequence[tuple[torch.Tensor, ...]], seen_tasks: int,
                   predict: Predict | None = None, task_units: Sequence[Sequence[int]] | None = None) -> TaskEvaluation:
    """Evaluate on every task's test set ``(x, y, t)``; "seen" pools tasks ``0..seen_tasks-1``.

    ``forward(x, t)`` returns ``(logits, hidden)`` in eval mode with the scenario's mask.
    Every task is measured, future ones too (they fill the upper triangle of the accuracy
    matrix and give FWT). The seen loss is plain cross-entropy, as the notebook's validation loss.
    ``predict(x, t)``, where given, returns the scores (masked as the logits) whose argmax is
    the prediction: the accuracies use them; the seen loss stays the network's cross-entropy
    (a prediction rule's scores have no scale a cross-entropy could read: see ``Method.predict``).
    With ``task_units`` (the units of each task), each task's scores are also measured masked to its
    own units (:func:`task_il_accuracy`), from the same forward pass.
    """
    outputs = [forward(x, t) for x, _, t in test_sets]
    scores = [o[0] for o in outputs] if predict is None else [predict(x, t) for x, _, t in test_sets]
    task_accuracy = [accuracy(s, y) for s, (_, y, _) in zip(scores, test_sets)]
    task_il = None if task_units is None else [
        task_il_accuracy(s, y, units) for s, (_, y, _), units in zip(scores, test_sets, task_units)]
    logits = torch.cat([o[0] for o in outputs[:seen_tasks]])
    y = torch.cat([s[1] for s in test_sets[:seen_tasks]])
    hidden = tuple(torch.cat(layer) for layer in zip(*(o[1] for o in outputs[:seen_tasks])))
    return TaskEvaluation(
        task_accuracy=task_accuracy,
        seen_accuracy=accuracy(logits if predict is None else torch.cat(scores[:seen_tasks]), y),
        seen_loss=F.cross_entropy(logits, y).item(),
        sparsity=population_sparsity(hidden),
        task_il_accuracy=task_il,
    )


@torch.no_grad()
def pooled_accuracy(forward: Forward, data: tuple[torch.Tensor, ...], predict: Predict | None = None) -> float | None:
    """Accuracy of ``forward`` (or of ``predict``'s scores, where given) on one pooled ``(x, y, t)`` set
    (the validation examples of the tasks seen so far); None for an empty set (``data.val_fraction`` 0)."""
    x, y, t = data
    if not len(y):
        return None
    scores = forward(x, t)[0] if predict is None else predict(x, t)
    return accuracy(scores, y)
