"""The LightningModule: the network with its loss (cross-entropy + L1 on hidden activations),
training/validation metrics and optimiser.

The network is a plain ``nn.Module``: the built-in MLP (``lightning_cl.models.mlp.MLP``) or
any other that keeps the contract described there (``model.network``); everything that is
about *training* it lives here.

Optimisation is manual (``zero_grad``, ``manual_backward``, ``step``): Lightning still calls
``on_before_backward``, ``on_after_backward`` and ``on_before_optimizer_step`` (after AMP
unscaling) on every step, so gradient methods such as OGD work unchanged, and Lightning
refuses gradient accumulation and clipping flags with a clear error instead of silently
mixing them with a projection. It also skips the automatic loop's closure machinery, which
costs ~0.13 ms of a ~1.5 ms step of this small MLP on a 2-core CPU (benchmarks/overhead.py).

Batches are ``(x, y, t)`` (``t``: each example's task). In task-IL the logits are masked to
the example's task (``lightning_cl.data.scenario``), in training and in evaluation.
Continual-learning methods (:class:`lightning_cl.methods.method.Method`) plug in by returning
loss terms and a weight of the current loss, which the training step combines (a method that
does not train on the stream, ``trains_on_stream = False``, makes it a measurement only); what they may
use of this module is declared in :mod:`lightning_cl.methods.contract`.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy
from typing_extensions import override

from lightning_cl.data.scenario import mask_logits
from lightning_cl.evaluation import eval_forward
from lightning_cl.methods.method import methods_of
from lightning_cl.models.mlp import MLP, Norm

OPTIMIZERS = ("adam", "sgd")
# The built-in MLP's settings and their defaults: with another network they must stay unset.
MLP_SETTINGS = {"norm": "none", "dropout": 0.0, "hidden": [120, 84]}


def l1_activation_penalty(hidden: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The notebook's L1 penalty: ``mean|h1| + mean|h2|`` (one term per hidden layer)."""
    return sum(h.abs().mean() for h in hidden)


def build_network(network: Callable[[int, int], nn.Module], input_size: int, num_outputs: int,
                  **mlp_settings) -> nn.Module:
    """``network(input_size, num_outputs)``, refusing MLP settings that it would silently ignore.

    Raises:
        ValueError: if an MLP setting differs from its default, the network's own settings
            are refused, or it does not build an ``nn.Module``.
    """
    for name, value in mlp_settings.items():
        if value != MLP_SETTINGS[name]:
            raise ValueError(f"model.{name}={value!r} applies to the built-in MLP, not to model.network; leave "
                             f"model.{name} out (or, after a -c file that sets it, give its default: "
                             f"--model.{name} '{MLP_SETTINGS[name]}') and configure the network by its own init_args.")
    try:
        built = network(input_size, num_outputs)
    except ValueError as err:
        raise ValueError(f"model.network: {err}") from None
    if not isinstance(built, nn.Module):
        raise ValueError(f"model.network built a {type(built).__name__}, not a torch.nn.Module.")
    return built


class ContinualClassifier(LightningModule):
    """A network trained with cross-entropy + ``lambda_l1 * (mean|h1| + mean|h2| + ...)``; by
    default the notebook's MLP (``hidden``, ``norm``, ``dropout``).

    Args:
        norm: ``"none"``, ``"batch"`` or ``"layer"`` (see ``MLP``).
        dropout: Dropout probability after each hidden ReLU.
        lambda_l1: weight of the L1 activation penalty; 0 disables it.
        optimizer: ``"adam"`` or ``"sgd"``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        hidden: the widths of the hidden layers (the notebook's MLP: ``[120, 84]``; the
            published Split-MNIST protocol: ``[400, 400]``).
        network: another network instead of the MLP (``norm``, ``dropout`` and ``hidden`` then
            stay unset): called as ``network(input_size, num_outputs)``. In a config, a
            ``class_path`` (and ``init_args``) of an ``nn.Module`` whose first two arguments
            are these sizes; it keeps the contract in ``lightning_cl.models.mlp``.
        input_size: the number of features of one example; the CLI links it to the
            DataModule's ``input_size``, so it is not set by hand there.
        num_outputs: the size of the output layer; the CLI links it to the DataModule's
            ``num_outputs`` (the scenario decides it), so it is not set by hand there.

    Raises:
        ValueError: for an unknown norm or optimiser, dropout outside [0, 1), a negative
            ``lambda_l1``, a non-positive ``lr``, an MLP setting together with ``network``,
            or a ``network`` that does not build an ``nn.Module``.
    """

    def __init__(
        self,
        norm: Norm = "none",
        dropout: float = 0.0,
        lambda_l1: float = 0.0,
        optimizer: Literal["adam", "sgd"] = "adam",
        lr: float = 1e-3,
        momentum: float = 0.0,
        hidden: list[int] = [120, 84],
        network: Callable[[int, int], nn.Module] | None = None,
        input_size: int = 784,
        num_outputs: int = 10,
    ) -> None:
        super().__init__()
        if lambda_l1 < 0:
            raise ValueError(f"model.lambda_l1={lambda_l1} must be >= 0 (0 switches the L1 penalty off).")
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"model.optimizer={optimizer!r} is not supported; use one of {', '.join(OPTIMIZERS)}.")
        if lr <= 0:
            raise ValueError(f"model.lr={lr} must be > 0.")
        # A callable is not plain data (a checkpoint must load with weights_only): the network's
        # settings are in the run's config, which every checkpoint holds (cli.py).
        self.save_hyperparameters(ignore=["network"])
        if network is None:
            try:
                self.network = MLP(norm=norm, dropout=dropout, in_features=input_size, hidden=tuple(hidden),
                                   num_classes=num_outputs)
            except ValueError as err:
                raise ValueError(f"model.{err}") from None
        else:
            self.network = build_network(network, input_size, num_outputs, norm=norm, dropout=dropout,
                                         hidden=list(hidden))
        # Epoch sums of (loss * n, correct) kept on the device, the count on the host: reading
        # them each step would sync the host, and a torchmetrics update costs ~13% of a step here.
        self.register_buffer("_train_sums", torch.zeros(2), persistent=False)
        self._train_count = 0
        # Task-IL: (tasks, outputs) bool, from the DataModule at setup; a buffer so that it follows the device.
        self.register_buffer("unit_mask", None, persistent=False)
        self.automatic_optimization = False

    @override
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        mask = datamodule.unit_mask() if hasattr(datamodule, "unit_mask") else None
        self.unit_mask = mask

    @override
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        return self.network(x)

    def scenario_forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``(logits, hidden)`` of ``x``, logits masked to each example's task in task-IL."""
        logits, hidden = self.network(x)
        return mask_logits(logits, t, self.unit_mask), hidden

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """:meth:`scenario_forward` in eval mode without gradients (every measurement uses it)."""
        logits, hidden = eval_forward(self.network, x)
        return mask_logits(logits, t, self.unit_mask), hidden

    def loss(self, logits: torch.Tensor, hidden: tuple[torch.Tensor, ...], y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, y)
        if self.hparams.lambda_l1 > 0:
            loss = loss + self.hparams.lambda_l1 * l1_activation_penalty(hidden)
        return loss

    @override
    def on_train_epoch_start(self) -> None:
        self._train_sums.zero_()
        self._train_count = 0

    @override
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, t = batch[:3]
        optimizer = self.optimizers()
        methods = methods_of(self.trainer)
        if not all(method.trains_on_stream for method in methods):
            return self._measured_step(optimizer, x, y, t)
        logits, hidden = self.scenario_forward(x, t)
        loss = self.loss(logits, hidden, y)
        terms: dict[str, torch.Tensor] = {}
        if methods:
            weight = 1.0
            for method in methods:
                weight *= method.current_loss_weight(self.trainer, self)
                terms |= method.loss_terms(self.trainer, self, batch, (logits, hidden))
            loss = weight * loss + sum(terms.values())
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        n = len(y)
        self._train_sums.add_(torch.stack([loss.detach() * n, (logits.argmax(1) == y).sum()]))
        self._train_count += n
        if self.global_step % self.trainer.log_every_n_steps == 0:
            # Logged only when the logger will write it: self.log has a per-call cost.
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
            for name, term in terms.items():
                self.log(f"train/loss_{name}", term, on_step=True, on_epoch=False)
        return loss

    def _measured_step(self, optimizer, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The step of a method that does not train on the stream (``Method.trains_on_stream``):
        the batch's loss and accuracy in eval mode (BatchNorm's statistics stay as they are),
        no backward. The optimiser's step still runs, so that Lightning counts it (``global_step``:
        checkpoints, logs, a task's steps), but no parameter has a gradient: torch's optimisers
        skip such parameters and keep no state for them, so nothing changes."""
        logits, hidden = self.eval_logits(x, t)
        loss = self.loss(logits, hidden, y)
        optimizer.zero_grad()  # set_to_none: no parameter has a gradient for the step below
        optimizer.step()
        n = len(y)
        self._train_sums.add_(torch.stack([loss * n, (logits.argmax(1) == y).sum()]))
        self._train_count += n
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self.log("train/loss_step", loss, on_step=True, on_epoch=False)
        return loss

    def train_epoch_metrics(self) -> dict[str, float]:
        """Mean training loss and accuracy of the epoch so far (one host sync)."""
        loss_sum, correct = self._train_sums.tolist()
        n = max(self._train_count, 1)
        return {"loss": loss_sum / n, "acc": correct / n}

    @override
    def on_train_epoch_end(self) -> None:
        metrics = self.train_epoch_metrics()
        self.log_dict({"train/loss": metrics["loss"], "train/acc": metrics["acc"]}, on_epoch=True)

    @override
    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, t = batch
        logits, hidden = self.scenario_forward(x, t)
        self.log("val/loss", self.loss(logits, hidden, y), prog_bar=True, batch_size=len(y))
        acc = multiclass_accuracy(logits, y, num_classes=logits.shape[1], average="micro")
        self.log("val/acc", acc, prog_bar=True, batch_size=len(y))

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.hparams.optimizer == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)
