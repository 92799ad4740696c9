"""iCaRL (Rebuffi, Kolesnikov, Sperl and Lampert 2017, "iCaRL: Incremental Classifier and
Representation Learning", CVPR; arXiv:1611.07725), as Mammoth runs it.

A memory of ``buffer_size`` exemplars split evenly over the classes seen, chosen by herding on
the feature extractor's L2-normalised features; the network is trained with a binary
cross-entropy whose targets on the earlier classes are the previous model's sigmoid outputs
(distillation); it classifies by the nearest mean of exemplars (NME).

This follows aimagelab/mammoth, ``models/icarl.py`` at commit
16cebdb649660488c2d5becb9a000d620e5d0bb4 (the version with ``normalize_features=True``; the
earlier one, at 0d727a7235cf836698418ca33a973431d1d671f0, herded and averaged unnormalised
features and took the loss over the seen units only), and the ``fill_buffer(..., use_herding,
normalize_features)`` of ``utils/buffer.py`` that it calls (read in a stored version of that
file whose commit the index does not name):

* ``begin_task``: ``icarl_replay`` merges the buffer into the task's training set, so every
  exemplar is one more training example, seen once per pass over the task's data;
* ``observe`` / ``get_loss``: ``logits = torch.sigmoid(self.old_net(inputs))`` on the whole
  batch (exemplars included), targets ``comb_targets = torch.cat((logits[:, :n_past_classes],
  eye[labels][:, n_past_classes:]), dim=1)`` over every output unit, and
  ``F.binary_cross_entropy_with_logits(outputs, comb_targets)`` (mean over examples and units);
  plus ``wd() * opt_wd``, ``wd`` the sum of the squared parameters;
* ``end_task``: ``self.old_net = deepcopy(self.net)`` in eval mode, then ``fill_buffer(...,
  use_herding=True, normalize_features=True)``: ``samples_per_class = buffer_size //
  n_seen_classes``; the old classes keep their first ``samples_per_class`` exemplars (their
  herding order); each new class is herded on its training examples' normalised features
  (``feats / feats.norm(dim=1, keepdim=True)``): the ``i``-th exemplar minimises
  ``||mean - (feats + running_sum) / (i + 1)||`` over those not chosen yet;
* ``compute_class_means`` / ``forward``: the class mean is the mean of the exemplars'
  normalised features, normalised again; a test example's score for class ``c`` is
  ``-||normalised feature - mean_c||^2``, over the classes seen.

Mammoth's ``utils/best_args.py`` (commit 0d727a7235cf836698418ca33a973431d1d671f0), ``seq-mnist``,
``icarl``, buffer 200: ``lr 0.1, batch_size 10, n_epochs 1, optim_wd 0`` (SGD): the benchmark's
settings, not this method's. The authors' code (srebuffi/iCaRL, ``iCaRL-TheanoLasagne/
main_cifar_100_theano.py`` and ``utils_cifar100.py`` at commit
b3d36864009536223aff5f886de3a3131dd8c69c) agrees on the loss (sigmoid targets of the stored
network on the old classes, one-hot elsewhere, mean over all 100 units), the normalised herding
(written there as ``w_t = w_t + mu - D[:, ind_max]``, ``argmax(w_t . D)``) and the NME
(``cdist(..., 'sqeuclidean')`` between normalised features and normalised means).

Where this class differs, and why:

* **Features**: the network's last hidden activations (``pl_module.network(x)[1][-1]``, the
  penultimate layer of the contract's ``(logits, hidden)``), as Mammoth's ``returnt='features'``
  of its MNIST MLP is the activation before the classifier.
* **Replay of the exemplars**: our task data cannot be extended, so instead of merging the
  exemplars into the training set each exemplar is appended to one training batch per pass
  over the task's data (at a step drawn uniformly within that pass, reproducibly from the
  run's seed and the epoch). Each exemplar is thus seen as often as with Mammoth's merge; the
  batches are a little larger (by ``buffer_size / steps per pass`` on average) instead of
  Mammoth's slightly more numerous batches.
* **No flipped copies** in the class means: Mammoth averages the features of ``TF.hflip``-ped
  exemplars too (the authors' CIFAR augmentation), on MNIST as well; our inputs are flat vectors
  without an image layout, and a mirrored digit is another shape.
* **Units, not class ranges**: the old classes are ``seen_units(task - 1)`` and the new ones the
  task's units, so any task order (Permuted MNIST's blocks too) works, where Mammoth slices
  ``[:n_past_classes]``.
* **Classes without exemplars** (those of tasks not trained yet) score ``UNKNOWN_SCORE`` (-5),
  below every real score (a squared distance of unit vectors is at most 4) but above the
  task-IL mask: on a task not trained yet NME has no class to choose and guesses the task's
  first unit, before training as after (so FWT is 0). Mammoth scores only the classes seen and
  tests only the tasks seen; our accuracy matrix has an upper triangle and a random-init row.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from typing_extensions import override

from lightning_cl.methods.lwf import frozen_copy
from lightning_cl.methods.memory import run_seed, task_stream
from lightning_cl.methods.method import Method
from lightning_cl.task_callback import setting

UNKNOWN_SCORE = -5.0  # a unit without exemplars: below -4, the lowest score of a unit with a mean
FEATURE_CHUNK = 4096  # examples per forward pass when the features of a whole task are computed
_SCHEDULE_SALT = 104_729  # keeps the exemplar schedule's seed apart from the loader's shuffles


def herding(features: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of ``count`` rows of ``features`` (one class's, already normalised) in herding
    order: the ``i``-th minimises ``||mean - (chosen_sum + f) / i||`` over the rows not chosen yet
    (iCaRL's ConstructExemplarSet, as Mammoth's ``fill_buffer``). The first is the row
    closest to the class mean; all rows if ``count`` exceeds them."""
    count = min(count, len(features))
    mean = features.mean(0)
    running = torch.zeros_like(mean)
    free = torch.ones(len(features), dtype=torch.bool, device=features.device)
    chosen = []
    for i in range(1, count + 1):
        cost = (mean - (features + running) / i).pow(2).sum(1).masked_fill(~free, math.inf)
        best = int(cost.argmin())
        chosen.append(best)
        free[best] = False
        running = running + features[best]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


def class_means(features: torch.Tensor, y: torch.Tensor, num_outputs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output unit the normalised mean of the normalised ``features`` of its examples
    ``(num_outputs, width)``, and which units have examples ``(num_outputs,)`` bool."""
    features = F.normalize(features, dim=1)
    sums = torch.zeros(num_outputs, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, y, features)
    known = torch.zeros(num_outputs, dtype=torch.bool, device=features.device)
    known[y] = True
    return F.normalize(sums, dim=1), known


def nearest_mean_scores(features: torch.Tensor, means: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """NME scores ``(batch, units)``: ``-||normalised feature - mean_u||^2`` for the units with a
    mean, :data:`UNKNOWN_SCORE` for the others; the prediction is the argmax."""
    distances = torch.cdist(F.normalize(features, dim=1), means).pow(2)
    return (-distances).masked_fill(~known, UNKNOWN_SCORE)


def exemplar_schedule(num_exemplars: int, pass_steps: int, steps: int, generator: torch.Generator) -> list[list[int]]:
    """The exemplars appended to each of ``steps`` training steps: in every block of
    ``pass_steps`` steps (one pass over the task's data) each exemplar once, at a step drawn
    uniformly within the block (those drawn past the last step are not replayed)."""
    blocks = math.ceil(steps / pass_steps)
    slot = torch.randint(pass_steps, (blocks, num_exemplars), generator=generator)
    slot = (slot + pass_steps * torch.arange(blocks).unsqueeze(1)).flatten()
    index = torch.arange(num_exemplars).repeat(blocks)
    kept = slot < steps
    slot, index = slot[kept], index[kept]
    order = torch.argsort(slot, stable=True)
    slot, index = slot[order], index[order]
    ends = torch.bincount(slot, minlength=steps).cumsum(0).tolist()
    index = index.tolist()
    return [index[(ends[s - 1] if s else 0):ends[s]] for s in range(steps)]


class ICaRL(Method):
    """Herded exemplars, binary cross-entropy with distillation, nearest-mean-of-exemplars prediction.

    At the end of every task (the last too: the NME needs its exemplars) the memory keeps
    ``buffer_size // classes seen`` exemplars of each class seen: the first ones (in herding
    order) of the earlier classes, and those herded from the task's training examples for its own
    classes. After every task but the last a frozen copy of the network is kept. Training
    replaces the cross-entropy (``current_loss_weight`` 0, the L1 penalty of ``model.lambda_l1``
    with it) by the loss term ``bce``: binary cross-entropy over every output unit of the batch
    and the exemplars replayed in that step (see the module docstring), with the previous
    network's sigmoid outputs as the targets of the earlier tasks' units; ``weight_decay > 0``
    adds ``weight_decay * sum of the squared parameters`` as ``weight_decay``. A step with
    replayed exemplars (or any step in task-IL) runs a second forward pass for the loss, so a
    BatchNorm network then updates its running statistics twice in that step.

    Prediction (:meth:`predict`, the contract's prediction rule): the nearest mean of exemplars,
    from the current network's normalised features. In task-IL the scores are masked to the
    task's units by the recorder (as Mammoth's task-IL accuracy of iCaRL masks them); the
    training is that of class-IL (the loss uses the unmasked outputs: iCaRL has no use for the
    task identity). Domain-IL is refused: its tasks share their output units, so a unit is not a
    class with exemplars and a mean of its own (Mammoth's iCaRL is class-IL and task-IL only).

    Args:
        buffer_size: the exemplars kept in all, split evenly over the classes seen (Mammoth's
            ``--buffer_size``); at least the number of classes of the sequence.
        weight_decay: the weight of the sum of the squared network parameters in the loss
            (Mammoth's ``--opt_wd``); 0 switches it off.

    Raises:
        ValueError: for ``buffer_size`` < 1 or a negative ``weight_decay``; at setup, in
            domain-IL, or for a ``buffer_size`` below the number of classes of the sequence.
    """

    name = "icarl"
    keeps = ("exemplars", "old_network")

    def __init__(self, buffer_size: int = 200, weight_decay: float = 0.0) -> None:
        if buffer_size < 1:
            raise ValueError(f"{setting(self, 'buffer_size')}={buffer_size} must be at least 1.")
        if weight_decay < 0:
            raise ValueError(f"{setting(self, 'weight_decay')}={weight_decay} must be >= 0 (0 switches it off).")
        self.buffer_size, self.weight_decay = buffer_size, weight_decay
        self.exemplars: dict[str, torch.Tensor] | None = None  # x, y, t; each class's rows in herding order
        self.old_network: nn.Module | None = None
        self._schedule: list[list[int]] | None = None  # per step of the epoch, the exemplars replayed
        self._step = 0
        self._old_units: tuple[int, torch.Tensor] | None = None  # (task, units of the earlier tasks)
        self._means: tuple[torch.Tensor, torch.Tensor] | None = None  # cached while the network stays

    # ----------------------------------------------------------------- the contract
    @override
    def check_setup(self, datamodule: Any, pl_module: LightningModule) -> None:
        super().check_setup(datamodule, pl_module)
        if datamodule.scenario == "domain":
            raise ValueError("ICaRL is class-incremental: each class needs an output unit of its own for its exemplars "
                             "and mean, and in data.scenario=domain the tasks share their units; use data.scenario "
                             "class (or task).")
        classes = len(datamodule.seen_units(datamodule.num_tasks - 1))
        if self.buffer_size < classes:
            raise ValueError(f"{setting(self, 'buffer_size')}={self.buffer_size} keeps no exemplar of some classes "
                             f"after the last task ({classes} classes share it); give at least {classes}.")

    @override
    def restore(self, attribute: str, value: Any, pl_module: LightningModule) -> Any:
        if attribute != "old_network" or value is None:
            return value
        old = frozen_copy(pl_module.network)
        old.load_state_dict(value)
        return old

    # ----------------------------------------------------------------- task moments
    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.update_exemplars(trainer, pl_module, task)
        super().on_task_end(trainer, pl_module, task)  # consolidate: the frozen copy (not after the last task)

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self.old_network = frozen_copy(pl_module.network)

    def update_exemplars(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        """Shrink the earlier classes' exemplars to the new share and herd those of ``task``'s classes."""
        datamodule = trainer.datamodule
        per_class = self.buffer_size // len(datamodule.seen_units(task))
        kept: list[tuple[torch.Tensor, ...]] = []
        if self.exemplars is not None:
            x, y, t = self.exemplars["x"], self.exemplars["y"], self.exemplars["t"]
            for unit in datamodule.seen_units(task - 1):
                rows = (y == unit).nonzero().squeeze(1)[:per_class]
                kept.append((x[rows], y[rows], t[rows]))
        x, y, t = task_stream(datamodule, task)
        own = t == task  # data.cumulative: the stream holds the earlier tasks too
        x, y, t = x[own], y[own], t[own]
        features = F.normalize(self.features(pl_module, x, t), dim=1)
        for unit in datamodule.task_units(task):
            rows = (y == unit).nonzero().squeeze(1)
            rows = rows[herding(features[rows], per_class)]
            kept.append((x[rows], y[rows], t[rows]))
        self.exemplars = {k: torch.cat(parts) for k, parts in zip("xyt", zip(*kept))}
        self._means = None

    @staticmethod
    @torch.no_grad()
    def features(pl_module: LightningModule, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The last hidden activations of ``x`` in eval mode, in chunks."""
        return torch.cat([pl_module.eval_logits(x[i:i + FEATURE_CHUNK], t[i:i + FEATURE_CHUNK])[1][-1]
                          for i in range(0, len(x), FEATURE_CHUNK)])

    # ----------------------------------------------------------------- training
    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._schedule = None
        if self.exemplars is None:
            return
        datamodule = trainer.datamodule
        pass_steps = len(datamodule.task_train_loader(datamodule.current_task))
        generator = torch.Generator().manual_seed(run_seed() * 1_000_003 + trainer.current_epoch + _SCHEDULE_SALT)
        self._schedule = exemplar_schedule(len(self.exemplars["y"]), pass_steps, int(trainer.num_training_batches),
                                           generator)

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._step = batch_idx
        self._means = None  # the network is about to change

    @override
    def current_loss_weight(self, trainer: Trainer, pl_module: LightningModule) -> float:
        return 0.0  # the binary cross-entropy of loss_terms replaces it

    def replayed(self) -> list[int]:
        """The exemplars appended to this step's batch."""
        if self._schedule is None or self._step >= len(self._schedule):
            return []
        return self._schedule[self._step]

    def old_units(self, trainer: Trainer, pl_module: LightningModule) -> torch.Tensor:
        """The output units of the tasks before the current one (the distilled targets)."""
        task = trainer.datamodule.current_task
        if self._old_units is None or self._old_units[0] != task:
            units = trainer.datamodule.seen_units(task - 1)
            self._old_units = (task, torch.tensor(units, dtype=torch.long, device=pl_module.device))
        return self._old_units[1]

    @override
    def loss_terms(self, trainer: Trainer, pl_module: LightningModule, batch: Any, outputs: Any) -> dict[str, torch.Tensor]:
        x, y = batch[0], batch[1]
        replayed = self.replayed()
        if replayed:
            index = torch.tensor(replayed, device=x.device)
            x = torch.cat([x, self.exemplars["x"][index]])
            y = torch.cat([y, self.exemplars["y"][index]])
        if replayed or pl_module.unit_mask is not None:  # task-IL: the step's logits are masked
            logits = pl_module.network(x)[0]
        else:
            logits = outputs[0]
        targets = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        if self.old_network is not None and trainer.datamodule.current_task > 0:
            units = self.old_units(trainer, pl_module)
            with torch.no_grad():
                old = torch.sigmoid(self.old_network(x)[0])
            targets[:, units] = old[:, units]
        terms = {"bce": F.binary_cross_entropy_with_logits(logits, targets)}
        if self.weight_decay > 0:
            terms["weight_decay"] = self.weight_decay * sum(p.pow(2).sum() for p in pl_module.network.parameters())
        return terms

    # ----------------------------------------------------------------- prediction
    @override
    def predict(self, trainer: Trainer, pl_module: LightningModule, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The nearest mean of exemplars; every unit :data:`UNKNOWN_SCORE` before the first exemplars."""
        features = self.features(pl_module, x, t)
        num_outputs = trainer.datamodule.num_outputs
        if self.exemplars is None:
            return features.new_full((len(x), num_outputs), UNKNOWN_SCORE)
        if self._means is None:
            ex = self.exemplars
            self._means = class_means(self.features(pl_module, ex["x"], ex["t"]), ex["y"], num_outputs)
        return nearest_mean_scores(features, *self._means)
