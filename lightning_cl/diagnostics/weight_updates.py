"""Relative weight updates per layer and batch: ``||W_after - W_before|| / ||W_before||``.

The notebook's diagnostics, 2. The weights are copied before the training step of a sampled
batch (``on_train_batch_start``) and compared after it (``on_train_batch_end``); the
ratios stay on the device and reach the host (and the loggers) once per task.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic, check_positive, to_host
from lightning_cl.task_callback import setting
from lightning_cl.plots import weight_updates_figure

PARAMETER_SETS = ("weights", "all")


def relative_update(before: list[torch.Tensor], after: list[torch.Tensor]) -> torch.Tensor:
    """``||after_i - before_i|| / ||before_i||`` (Frobenius norms) for each pair, as one device tensor."""
    diffs = torch._foreach_sub(after, before)
    return torch.stack(torch._foreach_norm(diffs)) / torch.stack(torch._foreach_norm(before))


class WeightUpdates(Diagnostic):
    """Records the relative update of each layer's weights on every ``every_n_batches``-th batch.

    Writes ``weight_updates.png`` beside ``results.json`` at the end of the run and logs
    ``weight_update/<parameter>`` at every task end.

    Args:
        every_n_batches: sample one batch in this many (1: every batch).
        parameters: ``"weights"`` (the weight matrices of the linear layers) or ``"all"``
            (biases and norm parameters too).

    Raises:
        ValueError: if ``every_n_batches`` is not a positive integer or ``parameters`` is unknown.
    """

    def __init__(self, every_n_batches: int = 1, parameters: Literal["weights", "all"] = "weights") -> None:
        check_positive(setting(WeightUpdates, "every_n_batches"), every_n_batches)
        if parameters not in PARAMETER_SETS:
            raise ValueError(f"{setting(WeightUpdates, 'parameters')}={parameters!r}; use one of {', '.join(PARAMETER_SETS)}.")
        self.every_n_batches, self.parameters = every_n_batches, parameters
        self.names: list[str] = []
        self._params: list[torch.Tensor] = []
        self._before: list[torch.Tensor] | None = None
        self._batches = 0
        self._pending: list[tuple[int, int, torch.Tensor]] = []
        self.records: list[tuple[int, int, list[float]]] = []  # (step, task, ratio per parameter)

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        named = [(n, p) for n, p in pl_module.network.named_parameters()
                 if self.parameters == "all" or (p.ndim >= 2)]
        self.names = [n for n, _ in named]
        self._params = [p for _, p in named]

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batches += 1
        if self._batches % self.every_n_batches == 0:
            self._before = [p.detach().clone() for p in self._params]

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._before is not None:
            ratio = relative_update(self._before, [p.detach() for p in self._params])
            self._pending.append((trainer.global_step, trainer.datamodule.current_task, ratio))
            self._before = None

    def _flush(self, trainer: Trainer) -> None:
        new, self._pending = to_host(self._pending), []
        self.records.extend(new)
        for step, _, ratios in new:
            metrics = {f"weight_update/{n}": r for n, r in zip(self.names, ratios)}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)

    def arrays(self) -> dict[str, np.ndarray]:
        """``step``, ``task`` and ``update`` (records x parameters)."""
        return {
            "step": np.array([r[0] for r in self.records]),
            "task": np.array([r[1] for r in self.records]),
            "update": np.array([r[2] for r in self.records], dtype=float),
        }

    @override
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        self._flush(trainer)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)
        if self.records:
            a = self.arrays()
            fig = weight_updates_figure(a["step"], a["task"], a["update"], self.names, trainer.datamodule.task_names())
            self.publish(trainer, fig, "weight_updates")

    @override
    def state_dict(self) -> dict[str, Any]:
        records = self.records + to_host(self._pending)
        return {"batches": self._batches, "records": [list(r) for r in records]}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._batches = state_dict["batches"]
        self.records = [tuple(r) for r in state_dict["records"]]
