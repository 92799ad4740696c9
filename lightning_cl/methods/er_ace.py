"""ER-ACE, Experience Replay with the asymmetric cross-entropy (Caccia, Aljundi, Asadi, Tuytelaars,
Pineau and Belilovsky 2022, "New Insights on Reducing Abrupt Representation Change in Online
Continual Learning", ICLR; arXiv:2104.05025), as Mammoth runs it.

The reference: aimagelab/mammoth ``models/er_ace.py`` at 361d4c0f04440d0a3214e0dec4da2000861f4cb9
(``ErACE.observe``; ``COMPATIBILITY = ['class-il', 'task-il']``), with the buffer of
``utils/buffer.py`` at 032b8a04b997417d896d259a71c457e42dc2c9cf; checked against the authors'
code, pclucas14/AML ``methods/er_ace.py`` at 3d7bde7839fc3ba0ead062df69d332186f81d152 and
``methods/er.py`` at 01fdccf748c17e12b0dc7ca06d60ca1e5d07a3eb (the same rule). Every step:

* the labels of the batch are added to the classes seen so far (``seen_so_far``);
* from the second task on, the current batch's cross-entropy is computed over the units of the
  classes *present in the batch* and those from the highest seen class on
  (``mask[:, present] = 1``; ``mask[:, seen_so_far.max():] = 1`` unless the highest seen class is
  the last one), every other logit set to the dtype's lowest value: classes seen before but absent
  from the batch get no gradient from it (the asymmetric, "incoming" term);
* from the second task on, ``minibatch_size`` buffer examples are replayed with the ordinary
  cross-entropy over every unit; the two are summed (``loss += loss_re``), one optimiser step;
* in the first task, the ordinary cross-entropy of the batch and no replay (``self.task > 0``
  gates both);
* then the (not augmented) batch is offered to the reservoir (a budget of ``buffer_size``).

Note the reference's off-by-one, kept: ``seen_so_far.max():`` unmasks the highest class seen so
far too, also in a batch that lacks it (in Split-MNIST that is the current task's second class,
once seen); once the last class is seen, only the present classes remain.

Differences from the reference, each deliberate:

* The module computes the current batch's cross-entropy over all units; from the second task on
  this method weights it 0 and returns the asymmetric one as the term ``current`` (computed from
  the module's logits of the batch, no second forward pass), the replayed one as ``replay``. The
  L1 activation penalty of ``model.lambda_l1``, part of the module's loss, goes with it from the
  second task on (as with :class:`~lightning_cl.methods.icarl.ICaRL`). A method whose own weight
  of the current batch would be overridden (ER, ReservoirER, iCaRL) is refused next to this one.
* "Unseen classes" by position: Mammoth's labels are numbered in task order, so
  ``seen_so_far.max():`` are the classes not seen yet (and the highest seen). Here the same rule
  runs on each unit's position in the task order (``seen_units`` of the last task, then any unit
  no task uses, by index): for Split-MNIST's tasks ``[[0, 1], [2, 3], ...]`` exactly Mammoth's.
* Task-IL. Mammoth trains a task-IL run as a class-IL one and masks only in evaluation. Here the
  module masks each example's logits to its task's units (the replayed ones too, as in
  :class:`~lightning_cl.methods.er_reservoir.ReservoirER`) and the asymmetric mask is applied on
  top: the current task's units absent from the batch are masked too (with the off-by-one above).
  With batches of 10 and two classes per task, a batch almost always holds both, so in task-IL
  ER-ACE is nearly ER with the current and the replayed cross-entropies summed.
* Domain-IL is refused: Mammoth's COMPATIBILITY leaves it out, and there the tasks share their
  output units, so after the first task every unit is seen and "the classes of the incoming batch"
  are no longer new classes (the mask would only hide a unit absent from a batch by chance).
* Two forward passes (current batch, then the replayed one), in Mammoth's order: BatchNorm
  networks normalise as in Mammoth and are not refused (unlike ReservoirER's single pass).
* The reservoir's and the replay's random draws come from a CPU ``torch.Generator`` seeded from
  the run's seed (Mammoth: NumPy's global generator); see
  :class:`~lightning_cl.methods.memory.StreamMemory`. No augmentation (Mammoth's MNIST has none).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.memory_method import StreamMemoryMethod
from lightning_cl.methods.method import Method, methods_of


def stream_ranks(datamodule: Any) -> torch.Tensor:
    """Each output unit's position in the order the stream introduces them: the units of the tasks
    in task order, then the units no task uses, by index. ``(num_outputs,)`` long."""
    order = list(datamodule.seen_units(datamodule.num_tasks - 1))
    used = set(order)
    order += [u for u in range(datamodule.num_outputs) if u not in used]
    rank = torch.empty(len(order), dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(len(order))
    return rank


def asymmetric_units(y: torch.Tensor, highest: torch.Tensor, rank: torch.Tensor) -> torch.Tensor:
    """Mammoth's ER-ACE mask: the units of the labels ``y`` of the batch, and those ranked from the
    ``highest`` seen rank on while that is not the last unit (``mask[:, seen_so_far.max():]``).
    ``(num_outputs,)`` bool, without a host sync."""
    allowed = torch.zeros(len(rank), dtype=torch.bool, device=y.device).index_fill_(0, y, True)
    return allowed | ((rank >= highest) & (highest < len(rank) - 1))


class ERACE(StreamMemoryMethod):
    """ER with the asymmetric cross-entropy: the incoming batch only competes with its own (and new) classes.

    Args:
        buffer_size: the most examples kept, a uniform sample of the training stream so far
            (Mammoth's ``--buffer_size``).
        minibatch_size: replayed examples per step, from the second task on (Mammoth's ``--minibatch_size``).

    Raises:
        ValueError: if ``buffer_size`` or ``minibatch_size`` is below 1; at setup
            (:class:`~lightning_cl.methods.contract.ContractError`), in domain-IL, or next to
            another method that weights the current batch's cross-entropy.
    """

    name = "er_ace"
    keeps = ("memory", "generator", "highest")

    def __init__(self, buffer_size: int = 200, minibatch_size: int = 10) -> None:
        super().__init__(buffer_size, minibatch_size)
        # The stream rank of the highest unit seen in a batch so far (Mammoth's seen_so_far.max()); -1: none.
        self.highest = torch.tensor(-1)
        self._rank: torch.Tensor | None = None  # per unit, its stream rank (stream_ranks)

    @override
    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        super().check_setup(datamodule, pl_module)
        if datamodule.scenario == "domain":
            raise ContractError(f"{type(self).__name__} masks the classes absent from the incoming batch, and in "
                                "data.scenario=domain the tasks share their output units (Mammoth's ER-ACE is "
                                "class-il and task-il only); use data.scenario class or task, or ReservoirER.")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        weighting = [type(m).__name__ for m in methods_of(trainer)
                     if m is not self and type(m).current_loss_weight is not Method.current_loss_weight]
        if weighting:
            raise ContractError(f"trainer.callbacks: {type(self).__name__} replaces the current batch's cross-entropy "
                                f"by its asymmetric one, and {', '.join(weighting)} weights that cross-entropy too: "
                                "run them apart.")
        # Before a checkpoint is restored, which then overwrites it.
        self.highest = torch.tensor(-1)
        self._rank = stream_ranks(trainer.datamodule)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._rank = self._rank.to(pl_module.device)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        # Mammoth: seen_so_far grows with every batch, the first task's too.
        self.highest = torch.maximum(self.highest, self._rank[batch[1]].max())

    @override
    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        # From the second task on, the term "current" replaces it.
        return 1.0 if trainer.datamodule.current_task == 0 else 0.0

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        if trainer.datamodule.current_task == 0:
            return {}  # Mammoth: the plain cross-entropy and no replay in the first task
        logits, y = outputs[0], batch[1]
        allowed = asymmetric_units(y, self.highest, self._rank)
        terms = {"current": F.cross_entropy(logits.masked_fill(~allowed, torch.finfo(logits.dtype).min), y)}
        replayed = self.replay()
        if replayed is not None:
            replay_logits, _ = pl_module.scenario_forward(replayed["x"], replayed["t"])
            terms["replay"] = F.cross_entropy(replay_logits, replayed["y"])
        return terms
