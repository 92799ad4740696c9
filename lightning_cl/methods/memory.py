"""An episodic memory of ``(x, y, t)`` training examples for replay methods (ER, A-GEM).

Chaudhry et al. 2019, "On Tiny Episodic Memories in Continual Learning" (arXiv:1902.10486):
a small memory of past examples, filled either class-balanced (a fixed number per class; the
Split-MNIST protocol of van de Ven et al. 2022 keeps 100 per class), by reservoir sampling (a uniform sample of everything
offered so far, in a fixed total budget), or with a fixed number of each task's examples drawn
at random whatever their class (Mammoth's A-GEM: ``buffer_size // tasks`` of each task).

:class:`Memory` is filled with a whole task at its end; :class:`StreamMemory` is the reservoir
that fills as the training stream passes, batch by batch (Mammoth's ``Buffer``, used by its ER,
DER and DER++), and keeps with each example whatever else a method needs (DER: its logits).
Both draw Algorithm R's slots with :func:`reservoir_slots`.

Pure tensors, no Lightning: tested in tests/test_memory.py.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import torch

Sampling = Literal["balanced", "reservoir", "task"]
SAMPLINGS = ("balanced", "reservoir", "task")


class Memory:
    """Examples kept from earlier tasks, on the device they were added from.

    Args:
        per_class: ``"balanced"``: examples kept per ``(task, label)`` pair (labels repeat
            across tasks in domain-IL, so the pair is what names a class of a task).
        sampling: ``"balanced"``, ``"reservoir"`` or ``"task"``.
        capacity: ``"reservoir"``: the total number of examples kept (ignored by the others).
        per_task: ``"task"``: examples kept of each task, drawn uniformly without replacement
            (all of a task's if it has fewer).

    Raises:
        ValueError: for an unknown ``sampling``, ``per_class`` < 1, reservoir sampling
            without a ``capacity`` >= 1, or ``"task"`` sampling without a ``per_task`` >= 1.
    """

    def __init__(self, per_class: int = 100, sampling: Sampling = "balanced", capacity: int | None = None,
                 per_task: int | None = None) -> None:
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling={sampling!r} is not supported; use one of {', '.join(SAMPLINGS)}.")
        if per_class < 1:
            raise ValueError(f"per_class={per_class} must be at least 1.")
        if sampling == "reservoir" and (capacity is None or capacity < 1):
            raise ValueError(f"reservoir sampling needs a capacity >= 1, got {capacity}.")
        if sampling == "task" and (per_task is None or per_task < 1):
            raise ValueError(f"task sampling needs per_task >= 1 (examples kept of each task), got {per_task}.")
        self.per_class, self.sampling, self.capacity, self.per_task = per_class, sampling, capacity, per_task
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.t: torch.Tensor | None = None
        self.seen = 0  # examples offered so far (reservoir sampling's stream position)

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> None:
        """Offer a task's examples; which ones are kept is drawn from ``generator`` (a CPU one)."""
        if self.sampling == "balanced":
            self._add_balanced(x, y, t, generator)
        elif self.sampling == "task":
            keep = torch.randperm(len(y), generator=generator)[: self.per_task].to(y.device)
            self._append(x[keep], y[keep], t[keep])
            self.seen += len(y)
        else:
            self._add_reservoir(x, y, t, generator)

    def _add_balanced(self, x, y, t, generator) -> None:
        keys = t.cpu() * (int(y.max()) + 1) + y.cpu()
        keep = []
        for key in keys.unique().tolist():  # one loop per class of the task, not per example
            members = (keys == key).nonzero().squeeze(1)
            keep.append(members[torch.randperm(len(members), generator=generator)[: self.per_class]])
        keep = torch.cat(keep).to(y.device)
        self._append(x[keep], y[keep], t[keep])
        self.seen += len(y)

    def _add_reservoir(self, x, y, t, generator) -> None:
        free, slot, source = reservoir_slots(self.seen, len(self), len(y), self.capacity, generator)
        if free:
            self._append(x[:free], y[:free], t[:free])
        slot, source = slot.to(y.device), source.to(y.device)
        self.x[slot], self.y[slot], self.t[slot] = x[source], y[source], t[source]
        self.seen += len(y)

    def _append(self, x, y, t) -> None:
        if self.y is None:
            self.x, self.y, self.t = x.clone(), y.clone(), t.clone()
        else:
            self.x, self.y, self.t = torch.cat([self.x, x]), torch.cat([self.y, y]), torch.cat([self.t, t])

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` examples drawn without replacement (all of them if fewer), on the memory's device.

        ``generator`` is a CPU generator: its state is plain data for a checkpoint, and drawing
        the indices on the host costs no device synchronisation.
        """
        index = torch.randperm(len(self), generator=generator)[:n].to(self.y.device, non_blocking=True)
        return self.x[index], self.y[index], self.t[index]

    @classmethod
    def for_sequence(cls, datamodule, per_class: int, sampling: Sampling, per_task: int | None = None) -> Memory:
        """A memory for a task DataModule's sequence (the reservoir's budget: per_class x its classes)."""
        classes = sum(len(c) for c in datamodule.task_classes())
        return cls(per_class, sampling, capacity=per_class * classes, per_task=per_task)

    def to(self, device: torch.device | str) -> Memory:
        if self.y is not None:
            self.x, self.y, self.t = self.x.to(device), self.y.to(device), self.t.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        # CPU tensors: a checkpoint made on a GPU loads anywhere.
        cpu = (lambda v: None if v is None else v.cpu())
        return {"x": cpu(self.x), "y": cpu(self.y), "t": cpu(self.t), "seen": self.seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.x, self.y, self.t, self.seen = state_dict["x"], state_dict["y"], state_dict["t"], state_dict["seen"]


def task_stream(datamodule, task: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A task's training examples ``(x, y, t)`` in a shuffled order: one pass of the task
    DataModule's ``task_train_loader`` (seeded by the run's seed and epoch)."""
    return tuple(torch.cat(parts) for parts in zip(*datamodule.task_train_loader(task)))


def run_seed() -> int:
    """The run's seed (``seed_everything``), as the task DataModule's shuffles use it."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def reservoir_slots(seen: int, filled: int, n: int, capacity: int,
                    generator: torch.Generator) -> tuple[int, torch.Tensor, torch.Tensor]:
    """Algorithm R (Vitter 1985) for ``n`` examples at stream positions ``seen .. seen + n - 1``,
    offered to a memory of ``capacity`` slots of which ``filled`` hold an example, vectorised.

    The example at stream position ``i`` (0-based) takes a free slot while there is one, else
    replaces slot ``j ~ U{0..i}`` when ``j < capacity`` (``j = floor(u * (i + 1))``, ``u`` a
    float64 uniform from ``generator``, one per example past the free slots, none before).

    Returns:
        ``(free, slot, source)``: the first ``free`` examples are appended; then example
        ``source[k]`` (an index into the ``n``) replaces ``slot[k]``, each slot at most once
        (where several examples draw one slot, the last one, as in the sequential algorithm).
        CPU long tensors.
    """
    free = max(0, min(capacity - filled, n))
    position = torch.arange(seen + free, seen + n)
    slot = (torch.rand(len(position), generator=generator, dtype=torch.float64) * (position + 1)).long()
    chosen = slot < capacity
    slot, source = slot[chosen], position[chosen] - seen
    # Several examples may draw the same slot: in the sequential algorithm the last one wins.
    order = torch.argsort(slot * n + source)
    slot, source = slot[order], source[order]
    last = torch.ones_like(slot, dtype=torch.bool)
    last[:-1] = slot[1:] != slot[:-1]
    return free, slot[last], source[last]


class StreamMemory:
    """A reservoir over the training stream: each example that passes, batch by batch, is kept
    with probability ``buffer_size / seen`` (all of them until the budget is full), replacing a
    uniformly chosen kept one: at any time a uniform sample of everything seen so far.

    Mammoth's ``Buffer.add_data`` with ``reservoir()`` (aimagelab/mammoth ``utils/buffer.py`` at
    032b8a0): per example, ``rand = np.random.randint(0, num_seen_examples + 1)`` once the buffer
    is full, kept at ``rand`` if ``rand < buffer_size``. Here the same choice per example, drawn
    from the method's CPU ``torch.Generator`` (seeded from the run's seed, its state in the
    checkpoint) instead of NumPy's global generator, and vectorised over a batch
    (:func:`reservoir_slots`): the same distribution, another random stream.

    Each example is kept with its input ``x``, label ``y``, task ``t`` and the extra per-example
    tensors a method gives (``add(..., logits=...)``); every call gives the same extras. The
    memory stays on the device its examples came from (Mammoth's ``Buffer`` is on the model's
    device too); it grows to ``buffer_size`` instead of being allocated at that size.

    Args:
        buffer_size: the most examples kept (the papers' "buffer size", e.g. 200).

    Raises:
        ValueError: if ``buffer_size`` < 1.
    """

    def __init__(self, buffer_size: int) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size={buffer_size} must be at least 1.")
        self.buffer_size = buffer_size
        self.fields: dict[str, torch.Tensor] = {}  # "x", "y", "t", then the extras, each (kept, ...)
        self.seen = 0  # examples offered so far (the stream position)

    def __len__(self) -> int:
        return len(self.fields["y"]) if self.fields else 0

    @property
    def x(self) -> torch.Tensor | None:
        return self.fields.get("x")

    @property
    def y(self) -> torch.Tensor | None:
        return self.fields.get("y")

    @property
    def t(self) -> torch.Tensor | None:
        return self.fields.get("t")

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, generator: torch.Generator,
            **extras: torch.Tensor) -> None:
        """Offer a batch, in its order, to the reservoir; the slots are drawn from ``generator`` (a CPU one).

        Raises:
            ValueError: if the extras differ from those of earlier calls, or a tensor's length
                is not the batch's.
        """
        batch = {"x": x, "y": y, "t": t, **extras}
        if self.fields and batch.keys() != self.fields.keys():
            raise ValueError(f"This memory keeps {', '.join(self.fields)} with each example; it was offered "
                             f"{', '.join(batch)}.")
        n = len(y)
        if any(len(v) != n for v in batch.values()):
            raise ValueError(f"Every tensor offered to the memory needs one row per example ({n}); got "
                             + ", ".join(f"{k}: {len(v)}" for k, v in batch.items()) + ".")
        batch = {k: v.detach() for k, v in batch.items()}
        free, slot, source = reservoir_slots(self.seen, len(self), n, self.buffer_size, generator)
        if free:
            self.fields = ({k: v[:free].clone() for k, v in batch.items()} if not self.fields
                           else {k: torch.cat([self.fields[k], v[:free]]) for k, v in batch.items()})
        if len(slot):
            slot, source = slot.to(y.device), source.to(y.device)
            for k, v in batch.items():
                self.fields[k][slot] = v[source]
        self.seen += n

    def sample(self, n: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``n`` kept examples drawn without replacement (all of them if fewer), every field of
        each (``"x"``, ``"y"``, ``"t"`` and the extras), on the memory's device.

        Mammoth's ``Buffer.get_data``: ``np.random.choice(len, size=min(n, len), replace=False)``;
        here from the CPU ``generator``.
        """
        index = torch.randperm(len(self), generator=generator)[:n].to(self.y.device, non_blocking=True)
        return {k: v[index] for k, v in self.fields.items()}

    def to(self, device: torch.device | str) -> StreamMemory:
        self.fields = {k: v.to(device) for k, v in self.fields.items()}
        return self

    def state_dict(self) -> dict[str, Any]:
        # CPU tensors: a checkpoint made on a GPU loads anywhere.
        return {"fields": {k: v.cpu() for k, v in self.fields.items()}, "seen": self.seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.fields, self.seen = dict(state_dict["fields"]), state_dict["seen"]
