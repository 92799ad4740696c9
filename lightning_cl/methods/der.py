"""Dark Experience Replay, DER and DER++ (Buzzega, Boschini, Porrello, Abati and Calderara 2020,
"Dark Experience for General Continual Learning: a Strong, Simple Baseline", NeurIPS).

A reservoir buffer over the training stream keeps each example with the network's logits of
it at the time it was seen; every step replays buffer examples and pulls the network's logits
of them towards the kept ones:

* DER: ``CE(current) + alpha * MSE(net(buf_x), buf_logits)``;
* DER++: ``+ beta * CE(net(buf_x2), buf_y)`` on a second, independent draw from the buffer.

The reference: aimagelab/mammoth ``models/der.py`` at 16cebdb649660488c2d5becb9a000d620e5d0bb4
and ``models/derpp.py`` at 0151ba0b21e5189f5d67aa9c1428a322dac8ce66 (``observe``), with
``utils/buffer.py`` at 032b8a04b997417d896d259a71c457e42dc2c9cf. What is followed exactly:

* the kept logits are ``outputs.data``, the outputs of the step's own forward pass of the
  current batch, computed *before* the optimiser step (``self.buffer.add_data(...,
  logits=outputs.data)`` after ``self.opt.step()``, but ``outputs`` is from before it): here
  the module's logits of the batch (the ``outputs`` handed to :meth:`loss_terms`), detached,
  kept after the step;
* replay from the first task on, as soon as the buffer holds anything (``is_empty()``); each
  draw is ``minibatch_size`` examples without replacement (all of them if fewer);
* ``F.mse_loss`` is the mean over examples and output units; DER++'s two draws are
  independent and in that order (logits first, labels second).

Differences, each deliberate:

* Task-IL. Mammoth trains a task-IL run as a class-IL one (all outputs) and masks only in
  evaluation; here the module trains each example on its own task's units (masked logits), so
  the others are never trained or read for that example. The buffer keeps each example's task
  id (Mammoth's DER keeps examples and logits; DER++ also labels) and the stored logits as the
  module produced them (masked in task-IL); the MSE compares the units of each replayed
  example's own task only (mean over those), and DER++'s cross-entropy is masked to them, as
  the current batch's is. In class- and domain-IL nothing is masked: all logits, as in Mammoth.
* The reservoir's and the draws' randomness: a CPU ``torch.Generator`` seeded from the run's
  seed instead of NumPy's global one (:class:`~lightning_cl.methods.memory.StreamMemory`).
* Mammoth's DER++ calls ``backward`` on each of its three terms before one step; here they are
  summed and backpropagated once: the same gradient.
* No augmentation: Mammoth's MNIST datasets have none (``ToTensor`` only).

Both methods live in this one file: DER++ is DER with one more term (Mammoth has a file each,
with the shared code repeated).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.methods.memory_method import StreamMemoryMethod
from lightning_cl.task_callback import setting


def logit_mse(logits: torch.Tensor, kept: torch.Tensor, t: torch.Tensor, unit_mask: torch.Tensor | None) -> torch.Tensor:
    """``mean((logits - kept)^2)`` over examples and units; with a task-IL ``unit_mask``, over
    each example's own task's units only (the others are masked in both)."""
    if unit_mask is None:
        return F.mse_loss(logits, kept)
    own = unit_mask[t]
    return F.mse_loss(logits[own], kept[own])


class DER(StreamMemoryMethod):
    """Dark Experience Replay: match the logits kept with each buffer example.

    Args:
        buffer_size: the most examples kept, a uniform sample of the training stream so far
            (Mammoth's ``--buffer_size``).
        minibatch_size: buffer examples per draw (Mammoth's ``--minibatch_size``).
        alpha: the weight of the logit MSE (Mammoth's ``--alpha``).

    Raises:
        ValueError: if ``buffer_size`` or ``minibatch_size`` is below 1, or ``alpha`` is negative.
    """

    name = "der"
    stores = ("logits",)

    def __init__(self, buffer_size: int = 200, minibatch_size: int = 10, alpha: float = 0.2) -> None:
        super().__init__(buffer_size, minibatch_size)
        if alpha < 0:
            raise ValueError(f"{setting(self, 'alpha')}={alpha} must be >= 0.")
        self.alpha = alpha

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        logits = outputs[0]
        terms = {}
        if (replayed := self.replay()) is not None:
            replay_logits, _ = pl_module.scenario_forward(replayed["x"], replayed["t"])
            terms["logits"] = self.alpha * logit_mse(replay_logits, replayed["logits"], replayed["t"],
                                                     pl_module.unit_mask)
        terms |= self.more_terms(pl_module)
        self.store(logits=logits.detach())  # before the step, as Mammoth's outputs.data
        return terms

    def more_terms(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        """Terms after the logit MSE, with their own buffer draws (DER++'s labels)."""
        return {}


class DERpp(DER):
    """DER++: DER plus the cross-entropy of the kept labels on a second, independent buffer draw.

    Args:
        buffer_size: the most examples kept (Mammoth's ``--buffer_size``).
        minibatch_size: buffer examples per draw, each of the two (Mammoth's ``--minibatch_size``).
        alpha: the weight of the logit MSE (Mammoth's ``--alpha``).
        beta: the weight of the replayed labels' cross-entropy (Mammoth's ``--beta``).

    Raises:
        ValueError: if ``buffer_size`` or ``minibatch_size`` is below 1, or ``alpha`` or ``beta`` is negative.
    """

    name = "derpp"

    def __init__(self, buffer_size: int = 200, minibatch_size: int = 128, alpha: float = 0.2, beta: float = 1.0) -> None:
        super().__init__(buffer_size, minibatch_size, alpha)
        if beta < 0:
            raise ValueError(f"{setting(self, 'beta')}={beta} must be >= 0.")
        self.beta = beta

    @override
    def more_terms(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        if (replayed := self.replay()) is None:
            return {}
        logits, _ = pl_module.scenario_forward(replayed["x"], replayed["t"])
        return {"replay": self.beta * F.cross_entropy(logits, replayed["y"])}
