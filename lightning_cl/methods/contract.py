"""What a continual-learning method may rely on: the one place that says it.

A method sees three things, each declared here as a typed interface:

* :class:`TaskData`: ``trainer.datamodule``, the task sequence (every
  :class:`~lightning_cl.data.TaskDataModule` offers it);
* :class:`ContinualModule`: ``pl_module``, the LightningModule that owns the training step
  (:class:`~lightning_cl.classifier.ContinualClassifier` offers it);
* :class:`LayeredNetwork`: ``pl_module.network``, the plain ``nn.Module`` being trained.
  Every network returns ``(logits, hidden)``; a method that works layer by layer (GPM, OGD's
  per-example variants) also needs ``linear_layers()`` and says so in ``Method.requires_network``.

Anything else (a DataModule's private fields, a network's attribute names) is not part of
the contract and may change. :func:`check_contract` runs at setup, before any training, and
names what is missing, as Lightning's ``BackboneFinetuning`` checks for its ``backbone``.

Batches are ``(x, y, t)``: inputs, the scenario's labels (output units), and each example's
task (0-based). Tasks are numbered from 0.

The other way round, what the evaluation relies on of a method: by default nothing, the
accuracies are those of the network's logits (``pl_module.eval_logits``). A method with a
prediction rule of its own declares it by overriding ``Method.predict(trainer, pl_module, x, t)
-> scores | None`` (``lightning_cl.methods.method``): unmasked scores ``(batch, num_outputs)``
whose argmax is the prediction (the recorder masks them in task-IL as it masks the logits).
They give the accuracy matrix, the seen-task and the validation accuracy; the seen-task loss
stays the cross-entropy of the network's logits. At most one method of a run declares one:
``predicting_method`` refuses two, at setup and in the CLI before a run writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, scenario label, task id
Forward = tuple[torch.Tensor, tuple[torch.Tensor, ...]]  # logits, hidden activations


class ContractError(ValueError):
    """A method was given a DataModule, module or network without something it needs."""


@runtime_checkable
class TaskData(Protocol):
    """What a method may use of ``trainer.datamodule``."""

    current_task: int  # the task being trained; the task loop moves it on
    scenario: str  # "class", "task" or "domain"
    cumulative: bool  # joint training: task t trains on the data of tasks 0..t

    @property
    def num_tasks(self) -> int: ...

    @property
    def num_outputs(self) -> int: ...

    def task_classes(self) -> list[list[int]]:
        """The benchmark's classes of each task, in training order."""

    def task_names(self) -> list[str]: ...

    def task_units(self, task: int) -> list[int]:
        """The output units that ``task``'s examples are labelled with (its head in task-IL)."""

    def seen_units(self, task: int | None = None) -> list[int]:
        """The output units of tasks ``0..task`` (default: the current task), each once."""

    def task_train_loader(self, task: int | None = None, num_batches: int | None = None) -> Iterable[Batch]:
        """Shuffled training batches of ``task``: one pass (or ``num_batches``), reproducible per run and epoch."""

    def task_data(self, split: str, task: int) -> Batch:
        """All of ``task``'s examples in ``split`` ("train", "val", "test") as one batch."""

    def seen_data(self, split: str, task: int | None = None) -> Batch: ...

    def test_sets(self) -> list[Batch]: ...


@runtime_checkable
class ContinualModule(Protocol):
    """What a method may use of ``pl_module``."""

    network: nn.Module  # a LayeredNetwork
    unit_mask: torch.Tensor | None  # task-IL: (tasks, outputs) bool, the units each task may choose among

    @property
    def device(self) -> torch.device: ...

    def scenario_forward(self, x: torch.Tensor, t: torch.Tensor) -> Forward:
        """``(logits, hidden)``, logits masked to each example's task in task-IL; with gradients."""

    def eval_logits(self, x: torch.Tensor, t: torch.Tensor) -> Forward:
        """The same in eval mode, without gradients."""

    def train_epoch_metrics(self) -> dict[str, float]:
        """Mean training ``loss`` and ``acc`` of the epoch so far."""

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None: ...


@runtime_checkable
class LayeredNetwork(Protocol):
    """What a method may use of ``pl_module.network``: its forward pass and, where a method
    declares it, its Linear layers."""

    def __call__(self, x: torch.Tensor) -> Forward:
        """``(logits, hidden)``: unmasked logits and the hidden activations, input side first."""

    def linear_layers(self) -> list[nn.Linear]:
        """The Linear layers in the order the input passes them, head last."""


def _members(protocol: type) -> list[str]:
    names = [n for n in vars(protocol) if not n.startswith("_")]
    return sorted(set(names) | set(getattr(protocol, "__annotations__", {})))


TASK_DATA = _members(TaskData)
MODULE = _members(ContinualModule)


def missing(obj: object, names: Sequence[str]) -> list[str]:
    return [name for name in names if not hasattr(obj, name)]


def check_contract(who: str, datamodule: object, module: object, network_needs: Sequence[str] = ()) -> None:
    """Raise :class:`ContractError` naming what ``datamodule``, ``module`` or ``module.network``
    lacks of what ``who`` (a method's class name) relies on.

    Raises:
        ContractError: with every missing member, and where the contract is documented.
    """
    problems = []
    if lacks := missing(datamodule, TASK_DATA):
        problems.append(f"the DataModule ({type(datamodule).__name__}) offers no {', '.join(lacks)} "
                        "(a benchmark subclasses lightning_cl.data.TaskDataModule)")
    if lacks := missing(module, MODULE):
        problems.append(f"the module ({type(module).__name__}) offers no {', '.join(lacks)} "
                        "(as lightning_cl.classifier.ContinualClassifier does)")
    network = getattr(module, "network", None)
    if network is not None and (lacks := missing(network, network_needs)):
        problems.append(f"the network ({type(network).__name__}) offers no {', '.join(f'{n}()' for n in lacks)} "
                        "(its Linear layers, input layer first, head last, as lightning_cl.models.mlp.MLP has)")
    if problems:
        raise ContractError(f"{who} cannot run: {'; '.join(problems)}. What a method may rely on is declared in "
                            "lightning_cl.methods.contract.")
