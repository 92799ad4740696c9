"""Experience Replay with a reservoir over the stream, as Mammoth runs it (Buzzega, Boschini,
Porrello, Abati and Calderara 2020, "Dark Experience for General Continual Learning: a Strong,
Simple Baseline", NeurIPS, where it is the ER baseline; after Chaudhry et al. 2019, "On Tiny
Episodic Memories in Continual Learning", arXiv:1902.10486).

The reference: aimagelab/mammoth ``models/er.py`` at 2de95235cbf0a6b728cc02f98695aeddd40df72e,
``Er.observe``, with ``utils/buffer.py`` at 032b8a04b997417d896d259a71c457e42dc2c9cf. Every
training step, from the first task on, once the buffer holds anything: draw
``minibatch_size`` buffer examples (without replacement), concatenate them with the current
batch, one cross-entropy over both, one optimiser step; then offer the current (not augmented)
batch to the buffer by reservoir sampling (a budget of ``buffer_size`` examples).

Differences from the reference, each deliberate:

* The module computes the current batch's cross-entropy; this method adds the replayed one.
  ``CE(concat) = B/(B+M) CE(current) + M/(B+M) CE(replay)`` for a current batch of ``B`` and a
  replayed one of ``M``: the current loss is weighted ``B/(B+M)`` and the term ``replay`` is
  ``M/(B+M) CE(replay)``, the same loss and gradient in two forward passes instead of one.
  With BatchNorm two passes normalise by other batch statistics than one: refused.
* The buffer keeps each example's task id too (Mammoth's ER keeps examples and labels): in
  task-IL a replayed example's logits are masked to its own task's units, as the module masks
  the current batch's (``pl_module.scenario_forward(x, t)``, as :class:`ExperienceReplay` does);
  in class- and domain-IL nothing is masked, as in Mammoth.
* The reservoir's and the replay's random draws come from a CPU ``torch.Generator`` seeded from
  the run's seed (Mammoth: NumPy's global generator); see
  :class:`~lightning_cl.methods.memory.StreamMemory`.
* No augmentation: Mammoth's MNIST datasets have none (``ToTensor`` only), so ``inputs`` and
  ``not_aug_inputs`` are one tensor there.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.memory_method import StreamMemoryMethod


class ReservoirER(StreamMemoryMethod):
    """Replay ``minibatch_size`` reservoir examples with every training batch: one cross-entropy over both.

    Args:
        buffer_size: the most examples kept, a uniform sample of the training stream so far
            (Mammoth's ``--buffer_size``).
        minibatch_size: replayed examples per step (Mammoth's ``--minibatch_size``).

    Raises:
        ValueError: if ``buffer_size`` or ``minibatch_size`` is below 1; at setup
            (:class:`~lightning_cl.methods.contract.ContractError`), for a network with BatchNorm.
    """

    name = "er_reservoir"

    def __init__(self, buffer_size: int = 200, minibatch_size: int = 10) -> None:
        super().__init__(buffer_size, minibatch_size)
        self._current = 0  # the step's batch size
        self._replayed = 0  # examples it replays (fewer than minibatch_size while the buffer holds fewer)

    @override
    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        super().check_setup(datamodule, pl_module)
        network = getattr(pl_module, "network", None)
        if isinstance(network, nn.Module) and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                  for m in network.modules()):
            raise ContractError(f"{type(self).__name__} is Mammoth's ER, one forward pass over the current and the "
                                "replayed batch; here they are two passes, which BatchNorm normalises by other "
                                "statistics. Use a network without BatchNorm (model.norm none or layer), or "
                                "lightning_cl.methods.ExperienceReplay.")

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._current = len(batch[1])
        self._replayed = min(self.minibatch_size, len(self.memory))

    @override
    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        if not self._replayed:
            return 1.0
        return self._current / (self._current + self._replayed)

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        replayed = self.replay()
        if replayed is None:
            return {}
        logits, _ = pl_module.scenario_forward(replayed["x"], replayed["t"])
        share = len(replayed["y"]) / (self._current + len(replayed["y"]))
        return {"replay": share * F.cross_entropy(logits, replayed["y"])}
