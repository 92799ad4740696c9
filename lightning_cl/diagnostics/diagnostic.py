"""The base of the diagnostic callbacks: where a picture goes (a PNG beside ``results.json``
and TensorBoard's image tab) and when a sampled measurement is due."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure

from lightning_cl.plots import close_figure, read_png, save_figure
from lightning_cl.task_callback import TaskCallback


class Diagnostic(TaskCallback):
    """A :class:`TaskCallback` that publishes figures. Subclasses draw; this class files them.

    Only rank 0 writes. Without a TensorBoard logger the PNG is still written.
    """

    @staticmethod
    def output_dir(trainer: Trainer) -> Path | None:
        """``trainer.log_dir``, where ``results.json`` is written (None when there is none)."""
        return Path(trainer.log_dir) if trainer.log_dir is not None else None

    @staticmethod
    def tensorboard(trainer: Trainer):
        """The ``SummaryWriter`` of the first TensorBoard logger, or None."""
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                return logger.experiment
        return None

    def publish(self, trainer: Trainer, fig: Figure, name: str) -> Path | None:
        """Save ``fig`` as ``<log_dir>/<name>.png`` and log that image to TensorBoard as
        ``diagnostics/<name>`` (the PNG is drawn once and read back: drawing costs the most)."""
        out = self.output_dir(trainer)
        if not trainer.is_global_zero or out is None:
            close_figure(fig)
            return None
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{name}.png"
        save_figure(fig, path)
        writer = self.tensorboard(trainer)
        if writer is not None:
            image = read_png(path)[..., :3]
            writer.add_image(f"diagnostics/{name}", image, global_step=trainer.global_step, dataformats="HWC")
        return path


def due(batch_in_task: int, every_n_batches: int, dense_batches: int, sparse_every_n_batches: int) -> bool:
    """Whether a measurement is due after ``batch_in_task`` batches of the current task:
    every ``every_n_batches`` for the first ``dense_batches``, then every ``sparse_every_n_batches``.
    Pure integer arithmetic: deciding costs no host sync."""
    if batch_in_task <= dense_batches:
        return batch_in_task % every_n_batches == 0
    return batch_in_task % sparse_every_n_batches == 0


def check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


def to_host(pending: list[tuple]) -> list[tuple]:
    """``pending`` samples whose last field is a tensor on the training device, with that field
    as a list on the host: one sync for all of them, not one ``.item()`` per sample."""
    if not pending:
        return []
    values = torch.stack([sample[-1] for sample in pending]).cpu().tolist()
    return [(*sample[:-1], value) for sample, value in zip(pending, values)]
