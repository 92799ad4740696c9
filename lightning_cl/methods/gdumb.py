"""GDumb (Prabhu, Torr & Dokania 2020, "GDumb: A Simple Approach that Questions Our Progress in
Continual Learning", ECCV): a Greedy class-balanced sampler fills a memory of ``buffer_size``
examples from the stream, and a Dumb learner is trained from scratch on that memory alone
whenever it must be evaluated. The network never trains on the stream itself.

References read (their code is not copied):

* the authors' code, github.com/drimpossible/GDumb at 74a5e81 (``src/main.py``: SGD with
  momentum 0.9 and weight decay ``--weight_decay`` 1e-6, a warm first pass at ``maxlr / 10``,
  then ``maxlr``, then ``CosineAnnealingWarmRestarts(T_0=1, T_mult=2, eta_min=minlr)`` stepped
  once per pass, gradient norm clipped at ``--clip`` 10, cutmix with probability 0.5 when
  ``--regularization cutmix``; ``src/opts.py``: ``maxlr`` 0.05, ``minlr`` 0.0005, batch 16;
  ``scripts/replicate.sh``: MNIST with ``--regularization none`` and 128 passes, cutmix for
  SVHN and CIFAR only). That code abstracts the sampler out (README: "this implementation
  abstracts the sampling process out"; ``src/dataloader.py`` keeps the first
  ``memory_size // classes`` examples of every class); the online rule is the paper's.
* Mammoth, github.com/aimagelab/mammoth (``models/gdumb.py`` at 361d4c0 and 0151ba0, and a
  later revision whose ``__init__`` sets ``n_epochs = 1``, "GDumb needs only 1 epoch to fill the
  buffer"): ``observe`` adds every stream batch to the memory and returns without a step;
  ``end_task`` builds a new backbone and fits it ``--fitting_epochs`` (256) epochs **only at the
  last task's end**; ``fit_buffer``: SGD with ``--optim_mom`` and ``--optim_wd`` (both 0 by
  default, ``utils/args.py``) at ``--maxlr`` 0.05, the same warm epoch and cosine restarts to
  ``--minlr`` 5e-4 (from 0151ba0 on, one optimiser and scheduler for the whole fit; 361d4c0
  built them anew every epoch, which kept the rate at ``maxlr``), the whole memory reshuffled
  every epoch and cut into batches of ``--batch_size`` (seq-mnist: 64, ``datasets/seq_mnist.py``),
  no clipping, cutmix with ``--cutmix_alpha`` (None at 361d4c0, 1.0 from 0151ba0 on, on every
  dataset).

What this implementation does, and where it departs from them:

* **The sampler** is the paper's greedy rule over a memory of ``buffer_size`` examples: an
  incoming example is stored while the memory has room; once it is full, it is stored only if
  its class holds fewer than ``buffer_size / classes seen`` examples, replacing a random
  example of the largest class (a random one of the largest when several tie). A class is a
  ``(task, label)`` pair, as in :mod:`lightning_cl.methods.memory`: in domain-IL labels repeat
  across tasks, and by label alone a full memory would never admit a later task's examples.
  Mammoth uses its reservoir buffer here instead (``utils/buffer.py``): not class-balanced, so
  not the paper's sampler; we follow the paper.
* **When the memory is filled.** The sampler runs over the task's training examples one at a
  time, in the order of one pass of the task's stream (``task_train_loader``; with
  ``task_loop.steps_per_task``, exactly the stream's first pass), at the task's end. Since the
  network does not learn from the stream and the memory is used only at the task's end, this
  keeps the same memory as offering the stream's first pass batch by batch (the same examples,
  the same order, the same random draws), and a task that lasts several passes offers each
  example once (Mammoth's one epoch per task).
* **The stream does not train the network** (``trains_on_stream = False``): the module's
  training step measures each batch in eval mode and computes no gradient, so its optimiser
  step updates nothing and keeps no state (not a step of zero: Adam's moments stay empty).
* **Retraining at every task's end**, not only at the last one as Mammoth does: every row of
  the accuracy matrix is then GDumb's model trained on the memory of the tasks seen so far
  (the paper: the learner is trained whenever it must be evaluated); Mammoth's earlier rows
  would be an untrained network. The last row is Mammoth's final model. Each retraining starts
  from the network's weights when training started (the run's seeded initialisation, kept as
  declared state), where Mammoth builds a new backbone; its shuffles and the network's own
  randomness (dropout) are drawn from seeds of the run's seed and the task, so a resumed run
  retrains exactly as an uninterrupted one.
* **The fit** follows Mammoth's ``fit_buffer`` (optimiser, warm epoch, schedule, batches), with
  the cross-entropy on each example's own task's units in task-IL (``scenario_forward``). No
  cutmix: examples are flat feature vectors in this toolkit (not images to cut patches from),
  and the authors do not use it on MNIST. ``clip_grad_norm`` (the authors' 10) is off by
  default, as in Mammoth. The L1 activation penalty of ``model.lambda_l1`` is not added
  (GDumb's loss is the cross-entropy alone).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.memory import run_seed, task_stream
from lightning_cl.methods.method import Method, methods_of
from lightning_cl.task_callback import setting

# Offsets of the seeds drawn from the run's seed: distinct streams for the sampler and each fit.
_SAMPLER_SEED, _FIT_SEED = 7_331, 104_729


class GreedyMemory:
    """GDumb's greedy class-balanced memory of ``(x, y, t)`` examples, at most ``budget`` of them.

    Classes are ``(task, label)`` pairs. ``seen`` lists the classes offered so far in the order
    they first came (the ``classes seen`` of the rule), plain data for a checkpoint.

    Pure tensors, no Lightning.
    """

    def __init__(self, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"budget={budget} must be at least 1.")
        self.budget = budget
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.t: torch.Tensor | None = None
        self.seen: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def counts(self) -> dict[tuple[int, int], int]:
        """Examples held per ``(task, label)`` class, in the order the classes were first seen."""
        held = {key: 0 for key in self.seen}
        if self.y is not None:
            for key in zip(self.t.tolist(), self.y.tolist()):
                held[key] += 1
        return held

    def add(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, generator: torch.Generator) -> None:
        """Offer the examples one at a time, in order; the replaced examples are drawn from
        ``generator`` (a CPU one)."""
        old = len(self)
        # entries[i]: what slot i holds, an index into (the current memory, then x).
        entries = list(range(old))
        slots: dict[tuple[int, int], list[int]] = {key: [] for key in self.seen}
        if old:
            for slot, key in enumerate(zip(self.t.tolist(), self.y.tolist())):
                slots[key].append(slot)
        seen = len(slots)
        for j, key in enumerate(zip(t.tolist(), y.tolist())):
            if key not in slots:
                slots[key] = []
                seen += 1
            if len(entries) < self.budget:
                slots[key].append(len(entries))
                entries.append(old + j)
            elif len(slots[key]) * seen < self.budget:  # fewer than budget / classes seen
                largest = max(len(s) for s in slots.values())
                tied = [k for k, s in slots.items() if len(s) == largest]
                victim = slots[tied[_draw(len(tied), generator)]] if len(tied) > 1 else slots[tied[0]]
                i = _draw(len(victim), generator)
                slot = victim[i]
                victim[i] = victim[-1]
                victim.pop()
                entries[slot] = old + j
                slots[key].append(slot)
        self.seen = list(slots)
        self._gather(entries, old, x, y, t)

    def _gather(self, entries: list[int], old: int, x, y, t) -> None:
        if not entries:
            return
        new = sorted({e - old for e in entries if e >= old})
        rank = {e: old + r for r, e in enumerate(new)}
        index = torch.tensor([e if e < old else rank[e - old] for e in entries], device=y.device)
        pick = torch.tensor(new, dtype=torch.long, device=y.device)
        pools = [(x[pick], y[pick], t[pick])] if old == 0 else [(self.x, self.y, self.t), (x[pick], y[pick], t[pick])]
        px, py, pt = (torch.cat(parts) for parts in zip(*pools))
        self.x, self.y, self.t = px[index], py[index], pt[index]

    def to(self, device: torch.device | str) -> GreedyMemory:
        if self.y is not None:
            self.x, self.y, self.t = self.x.to(device), self.y.to(device), self.t.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        cpu = (lambda v: None if v is None else v.cpu())
        return {"x": cpu(self.x), "y": cpu(self.y), "t": cpu(self.t), "seen": [list(k) for k in self.seen]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.x, self.y, self.t = state_dict["x"], state_dict["y"], state_dict["t"]
        self.seen = [tuple(k) for k in state_dict["seen"]]


def _draw(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (1,), generator=generator))


def warm_cosine_lrs(epochs: int, max_lr: float, min_lr: float) -> list[float]:
    """The learning rate of each fitting epoch: ``max_lr / 10`` for the first, ``max_lr`` for the
    second, then cosine annealing with warm restarts (periods 1, 2, 4, ... epochs) from
    ``max_lr`` to ``min_lr``, stepped once per epoch: the schedule of Mammoth's ``fit_buffer`` and
    the authors' ``experiment`` (``CosineAnnealingWarmRestarts(T_0=1, T_mult=2)``)."""
    lrs = [max_lr / 10, max_lr][:epochs]
    t_cur, t_i = 0, 1  # the scheduler's state after its construction
    for _ in range(2, epochs):
        t_cur += 1
        if t_cur >= t_i:
            t_cur, t_i = t_cur - t_i, t_i * 2
        lrs.append(min_lr + (max_lr - min_lr) * (1 + math.cos(math.pi * t_cur / t_i)) / 2)
    return lrs


class GDumb(Method):
    """Fill a greedy class-balanced memory from the stream; at every task's end train the
    network from its initial weights on the memory alone (the stream never trains it).

    Args:
        buffer_size: examples the memory holds in all (Mammoth's ``--buffer_size``).
        fitting_epochs: passes over the memory of each fit (Mammoth's ``--fitting_epochs``).
        batch_size: memory examples per fitting step (Mammoth: the dataset's ``--batch_size``).
        max_lr: the fit's SGD learning rate after its warm first epoch (``--maxlr``).
        min_lr: the lowest learning rate of the cosine restarts (``--minlr``).
        momentum: SGD momentum (Mammoth's ``--optim_mom``; the authors: 0.9).
        weight_decay: SGD weight decay (Mammoth's ``--optim_wd``; the authors: 1e-6).
        clip_grad_norm: clip each fitting step's gradient to this norm (the authors' ``--clip``
            10); None: no clipping (Mammoth).

    Raises:
        ValueError: for a ``buffer_size``, ``fitting_epochs`` or ``batch_size`` below 1, a
            ``max_lr`` that is not positive, a ``min_lr`` outside ``[0, max_lr]``, a negative
            ``momentum`` or ``weight_decay``, or a ``clip_grad_norm`` that is not positive; at
            setup, with another method, joint training, 16-bit mixed precision or several processes.
    """

    name = "gdumb"
    trains_on_stream = False
    keeps = ("memory", "generator", "initial")

    def __init__(self, buffer_size: int = 500, fitting_epochs: int = 256, batch_size: int = 64, max_lr: float = 0.05,
                 min_lr: float = 5e-4, momentum: float = 0.0, weight_decay: float = 0.0,
                 clip_grad_norm: float | None = None) -> None:
        for arg, value in (("buffer_size", buffer_size), ("fitting_epochs", fitting_epochs), ("batch_size", batch_size)):
            if value < 1:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 1.")
        if max_lr <= 0:
            raise ValueError(f"{setting(self, 'max_lr')}={max_lr} must be > 0.")
        if not 0 <= min_lr <= max_lr:
            raise ValueError(f"{setting(self, 'min_lr')}={min_lr} must be in [0, max_lr={max_lr}].")
        for arg, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"{setting(self, arg)}={value} must be >= 0.")
        if clip_grad_norm is not None and clip_grad_norm <= 0:
            raise ValueError(f"{setting(self, 'clip_grad_norm')}={clip_grad_norm} must be > 0 (null: no clipping).")
        self.buffer_size, self.fitting_epochs, self.batch_size = buffer_size, fitting_epochs, batch_size
        self.max_lr, self.min_lr, self.momentum, self.weight_decay = max_lr, min_lr, momentum, weight_decay
        self.clip_grad_norm = clip_grad_norm
        self.memory = GreedyMemory(buffer_size)
        # Draws the sampler's replacements: on the CPU, so that its state is plain checkpoint data.
        self.generator = torch.Generator()
        # The network's parameters and buffers when training started: every fit starts from them.
        self.initial: dict[str, torch.Tensor] | None = None
        self._fits: dict[int, dict[str, float]] = {}

    # ----------------------------------------------------------------- checks
    @override
    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        super().check_setup(datamodule, pl_module)
        if getattr(datamodule, "cumulative", False):
            raise ContractError("GDumb with data.cumulative=true (joint training): GDumb trains on its memory "
                                "alone, the stream's data would only refill it; set data.cumulative to false.")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        others = [type(m).__name__ for m in methods_of(trainer) if m is not self]
        if others:
            raise ValueError(f"GDumb with {', '.join(others)} (trainer.callbacks): GDumb does not train on the stream, "
                             "so another method's loss or gradient would be ignored; run GDumb alone.")
        if str(trainer.precision) in ("16", "16-mixed"):
            raise ValueError(f"trainer.precision={trainer.precision!r} with GDumb: the stream's steps have no gradient "
                             "for float16's loss scaler to check; use --trainer.precision 32 or bf16-mixed.")
        if trainer.world_size > 1:
            raise ValueError(f"GDumb on {trainer.world_size} processes: each would fill its memory from its share of "
                             "the stream and fit its own network; run it on one device (trainer.devices 1).")
        # Before a checkpoint is restored, which then overwrites all three.
        self.memory = GreedyMemory(self.buffer_size)
        self.generator.manual_seed(run_seed() * 1_000_003 + _SAMPLER_SEED)
        self.initial = {k: v.detach().clone() for k, v in pl_module.network.state_dict().items()}

    # ----------------------------------------------------------------- task moments
    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        # Every task, the last included: the recorder evaluates the model fitted here.
        self.memory.add(*task_stream(trainer.datamodule, task), self.generator)
        self._fits[task] = self.fit(pl_module, seed=self.fit_seed(task))

    @override
    def task_metrics(self, trainer: Trainer, pl_module: LightningModule, task: int) -> dict[str, float | None]:
        return dict(self._fits.get(task, {}))

    # ----------------------------------------------------------------- the dumb learner
    @staticmethod
    def fit_seed(task: int) -> int:
        """The seed of the fit at ``task``'s end: of the run's seed and the task alone."""
        return run_seed() * 1_000_003 + _FIT_SEED + task

    def fit(self, pl_module: LightningModule, seed: int) -> dict[str, float]:
        """Train ``pl_module.network`` from :attr:`initial` on the memory alone (Mammoth's
        ``fit_buffer``); return ``gdumb/memory`` (examples held) and ``gdumb/fit_accuracy`` (the
        fitted network's accuracy on them, in eval mode)."""
        network = pl_module.network
        network.load_state_dict(self.initial)
        if not len(self.memory):
            return {"gdumb/memory": 0.0, "gdumb/fit_accuracy": None}
        x, y, t = self.memory.x, self.memory.y, self.memory.t
        shuffle = torch.Generator().manual_seed(seed)
        devices = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        was_training = network.training
        with torch.random.fork_rng(devices=devices):  # dropout's draws: from the seed, the run's RNG untouched
            torch.manual_seed(seed)
            network.train()
            optimizer = torch.optim.SGD(network.parameters(), lr=self.max_lr, momentum=self.momentum,
                                        weight_decay=self.weight_decay)
            with torch.enable_grad():
                for lr in warm_cosine_lrs(self.fitting_epochs, self.max_lr, self.min_lr):
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    order = torch.randperm(len(y), generator=shuffle).to(y.device)
                    for start in range(0, len(y), self.batch_size):
                        batch = order[start : start + self.batch_size]
                        logits, _ = pl_module.scenario_forward(x[batch], t[batch])
                        optimizer.zero_grad()
                        F.cross_entropy(logits, y[batch]).backward()
                        if self.clip_grad_norm is not None:
                            torch.nn.utils.clip_grad_norm_(network.parameters(), self.clip_grad_norm)
                        optimizer.step()
            network.zero_grad(set_to_none=True)  # the stream's steps must find no gradient
        network.train(was_training)
        logits, _ = pl_module.eval_logits(x, t)
        return {"gdumb/memory": float(len(y)), "gdumb/fit_accuracy": (logits.argmax(1) == y).float().mean().item()}
