"""The base of every continual-learning method: what a method may contribute to training, the
state it keeps, and the task moments it hooks into.

The module owns the training step and combines what methods *return* (methods do not mutate
shared state):

* :meth:`Method.loss_terms` returns named loss terms, added to the loss and logged as
  ``train/loss_<name>``;
* :meth:`Method.current_loss_weight` scales the current batch's cross-entropy (ER weights it
  by ``1/t`` in task ``t``);
* :meth:`Method.predict` is a method's own prediction rule (iCaRL's nearest mean of
  exemplars): where a method overrides it, the recorder measures the test accuracy matrix, the
  seen-task accuracy and the validation accuracy with its scores instead of the network's
  logits. At most one method of a run may declare one (:func:`predicting_method`, checked at
  setup and by the CLI);
* a method that does not learn from the task's batches (GDumb, which trains on its memory
  only) sets ``trains_on_stream = False``: the training step then measures the batch in eval
  mode and computes no gradient, so the optimiser's step updates nothing;
* gradient methods (OGD, A-GEM, GPM) act in ``on_before_optimizer_step``, once per optimiser
  step on the final gradient, and set ``projects_gradients`` so that settings that would
  change that gradient behind their back (mixed precision) are refused; GPM and OGD's
  projection of the update also acts in ``on_train_batch_end``, after the step
  (:mod:`lightning_cl.methods.span_projection`).

What a method may rely on of the data, the module and the network is declared in
:mod:`lightning_cl.methods.contract` and checked in :meth:`Method.check_setup` (at setup, and by
the CLI before a run writes anything).

**Declared state.** A method lists in ``keeps`` the attributes it keeps across steps and tasks
(tensors, dicts and lists of them, plain data, or objects with ``state_dict`` /
``load_state_dict`` such as a memory or a ``torch.Generator``). The base saves them into the
checkpoint as CPU copies (a checkpoint made on a GPU loads anywhere), restores them on resume
and moves them to the module's device when training starts. A value the base cannot rebuild
by itself (a copy of the network) is rebuilt by :meth:`Method.restore`. Its ``state_key``
holds its settings, so two instances of one method with different settings keep apart.

**Task moments.** :meth:`Method.consolidate` runs at the end of every task but the last (no
later task would use what it keeps); ``on_task_start`` / ``on_task_end`` run at every task.
After each task the recorder asks every method for :meth:`Method.task_metrics`, numbers that
describe how the method acted on that task (GPM's and OGD's leak), and keeps them per task in
``results.json``'s ``method_metrics``.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.contract import ContractError, check_contract
from lightning_cl.task_callback import TaskCallback


class Method(TaskCallback):
    """Base of the continual-learning methods. ``name`` is what ``results.json`` records.

    A subclass keeps each ``__init__`` argument as an attribute of the same name (they make
    its ``state_key``), lists its kept attributes in ``keeps`` and the network members it needs
    beyond ``forward`` in ``requires_network`` (e.g. ``("linear_layers",)``).
    """

    name: ClassVar[str]
    projects_gradients: ClassVar[bool] = False
    # False: the network does not train on the task's batches (GDumb learns from its memory only).
    trains_on_stream: ClassVar[bool] = True
    keeps: ClassVar[tuple[str, ...]] = ()
    requires_network: ClassVar[tuple[str, ...]] = ()

    # ----------------------------------------------------------------- what a method returns
    def loss_terms(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: tuple[torch.Tensor, tuple[torch.Tensor, ...]]
    ) -> dict[str, torch.Tensor]:
        """Named loss terms to add; ``outputs`` are the module's ``(logits, hidden)`` of ``batch``."""
        return {}

    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        """The weight of the current batch's cross-entropy (default 1)."""
        return 1.0

    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        """Keep what ``task`` taught (a Fisher, a basis, a memory); called after every task but the last."""

    def task_metrics(self, trainer: Trainer, pl_module: LightningModule, task: int) -> dict[str, float | None]:
        """Diagnostics of ``task`` for ``results.json``'s ``method_metrics``, keyed ``<name>/<what>``
        (e.g. ``gpm/leak``): asked after ``on_task_end``, once per task; ``None`` where undefined."""
        return {}

    def predict(self, trainer: Trainer, pl_module: LightningModule, x: torch.Tensor,
                t: torch.Tensor) -> torch.Tensor | None:
        """The method's own prediction rule; a method declares one by overriding this.

        Returns scores ``(batch, num_outputs)`` of the inputs ``x`` (tasks ``t``), higher for the
        more likely unit, *unmasked*: the recorder masks them to each example's task in task-IL
        as it masks the logits, and the prediction is their argmax. Called under ``no_grad``
        after every task (and once before training, for the random-init accuracies); the
        method puts the network in eval mode itself (``pl_module.eval_logits`` does). ``None``:
        the network's logits for this call. The default declares no rule.

        The accuracy matrix, the seen-task accuracy and the validation accuracy use the scores;
        the seen-task loss stays the cross-entropy of the network's logits, the same quantity
        for every method (a rule's scores, e.g. negative squared distances, have no scale that
        a cross-entropy could read, and the loss is what flags a blown-up network).
        """
        return None

    def restore(self, attribute: str, value: Any, pl_module: LightningModule) -> Any:
        """The value of a declared ``attribute`` rebuilt from its checkpointed ``value`` (default: as saved)."""
        return value

    # ----------------------------------------------------------------- the contract
    @property
    def settings(self) -> dict[str, Any]:
        """The ``__init__`` arguments, as kept by the method."""
        params = inspect.signature(type(self).__init__).parameters
        return {n: getattr(self, n) for n, p in params.items() if n != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(**self.settings)

    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        """Raise :class:`~lightning_cl.methods.contract.ContractError` if this method cannot run with
        ``datamodule`` and ``pl_module``: the contract, and (in a subclass) settings that must fit the
        network. Called at setup, and by the CLI before the run writes anything."""
        check_contract(type(self).__name__, datamodule, pl_module, self.requires_network)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.check_setup(trainer.datamodule, pl_module)
        if declares_prediction(self):
            predicting_method(methods_of(trainer))

    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        if task + 1 < trainer.datamodule.num_tasks:
            self.consolidate(trainer, pl_module, task)

    # ----------------------------------------------------------------- declared state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {attribute: _saved(getattr(self, attribute)) for attribute in self.keeps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        lacking = [a for a in self.keeps if a not in state_dict]
        if lacking:
            raise ValueError(f"The checkpoint's state of {type(self).__name__} lacks {', '.join(lacking)}: it was "
                             "made by another version of this method. Start the run again without --ckpt_path.")
        self._restored = {a: state_dict[a] for a in self.keeps}

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("callbacks", {})
        if self.state_key not in states and (older := self._older_state_key(states)) is not None:
            states[self.state_key] = states.pop(older)

    def _older_state_key(self, states: dict[str, Any]) -> str | None:
        """The key of this method's state in a checkpoint made by an earlier version of it: under the
        class name (before methods had settings in their state_key), or under the settings it had then,
        where every setting added since keeps its default here (GPM's and OGD's ``project``)."""
        name = type(self).__qualname__
        if name in states:
            return name
        params = inspect.signature(type(self).__init__).parameters
        ours = self.settings
        for key in states:
            if not (isinstance(key, str) and key.startswith(name + "{")):
                continue
            try:
                theirs = ast.literal_eval(key[len(name):])
            except (ValueError, SyntaxError):
                continue
            if (isinstance(theirs, dict) and theirs.keys() < ours.keys()
                    and all(ours[k] == v for k, v in theirs.items())
                    and all(ours[k] == params[k].default for k in ours.keys() - theirs.keys())):
                return key
        return None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        restored = getattr(self, "_restored", None)
        for attribute in self.keeps:
            current = getattr(self, attribute)
            if restored is not None:
                current = self._load(attribute, current, restored[attribute], pl_module)
            setattr(self, attribute, _moved(current, pl_module.device))
        self._restored = None

    def _load(self, attribute: str, current: Any, value: Any, pl_module: LightningModule) -> Any:
        if isinstance(current, torch.Generator):
            current.set_state(value)
            return current
        if current is not None and value is not None and hasattr(current, "load_state_dict"):
            current.load_state_dict(value)
            return current
        return self.restore(attribute, value, pl_module)


def _saved(value: Any) -> Any:
    """``value`` as plain data with CPU tensors (copies: the live tensors change in place)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, torch.Generator):
        return value.get_state()
    if hasattr(value, "state_dict") and not isinstance(value, type):
        return _saved(value.state_dict())
    if isinstance(value, dict):
        return {k: _saved(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_saved(v) for v in value)
    return value


def _moved(value: Any, device: torch.device) -> Any:
    """``value`` with its tensors on ``device`` (objects with a ``to`` are moved in place)."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, torch.Generator):
        return value  # stays on the CPU: its state is plain data
    if hasattr(value, "to") and not isinstance(value, type):
        value.to(device)
        return value
    if isinstance(value, dict):
        return {k: _moved(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moved(v, device) for v in value)
    return value


def declares_prediction(method: Method | type) -> bool:
    """Whether a method (or its class) has a prediction rule of its own: overrides :meth:`Method.predict`."""
    cls = method if isinstance(method, type) else type(method)
    return cls.predict is not Method.predict


def predicting_method(methods: Iterable[Method]) -> Method | None:
    """The one method of ``methods`` that declares a prediction rule, or None.

    Raises:
        ContractError: if two or more declare one (a run's accuracy is measured by one rule).
    """
    rules = [m for m in methods if declares_prediction(m)]
    if len(rules) > 1:
        names = " and ".join(type(m).__name__ for m in rules)
        raise ContractError(f"trainer.callbacks: {names} each declare a prediction rule (Method.predict), and a run's "
                            "accuracy is measured by one: keep only one of them.")
    return rules[0] if rules else None


def methods_of(trainer: Trainer) -> list[Method]:
    return [cb for cb in trainer.callbacks if isinstance(cb, Method)]


def method_name(trainer: Trainer) -> str:
    """``none`` (naive fine-tuning), ``joint`` (``data.cumulative``), a method's name, or names joined by ``+``."""
    names = [m.name for m in methods_of(trainer)]
    if getattr(trainer.datamodule, "cumulative", False):
        names.insert(0, "joint")
    return "+".join(names) or "none"
