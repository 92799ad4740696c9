"""Callbacks for tests that run lightning-cl in a subprocess (tests/ is put on its PYTHONPATH)."""

import os
import signal

import torch
from lightning.pytorch import Callback

from lightning_cl.methods.ogd import OrthogonalGradientDescent


class SaveBasisPerRank(Callback):
    """Each DDP process saves its OGD basis to $OGD_BASIS_DIR, for tests/test_ogd_ddp.py."""

    def on_train_end(self, trainer, pl_module):
        (ogd,) = [cb for cb in trainer.callbacks if isinstance(cb, OrthogonalGradientDescent)]
        out = os.environ["OGD_BASIS_DIR"]
        torch.save({"basis": ogd.orthonormal_basis().cpu(), "vectors_per_task": ogd.vectors_per_task},
                   os.path.join(out, f"basis_rank{trainer.global_rank}.pt"))


class KillAt(Callback):
    """SIGKILLs its own process at batch ``batch`` of the ``epoch``-th epoch (from 0) of task
    ``task`` (from 0), when $KILL_AT is set: a crash with no chance to clean up."""

    def __init__(self, task: int = 0, epoch: int = 0, batch: int = 0):
        self.task, self.epoch, self.batch = task, epoch, batch
        self._task_start_epoch = 0
        self._task = -1

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.datamodule.current_task != self._task:
            self._task, self._task_start_epoch = trainer.datamodule.current_task, trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if (os.environ.get("KILL_AT") and self._task == self.task
                and trainer.current_epoch - self._task_start_epoch == self.epoch and batch_idx == self.batch):
            os.kill(os.getpid(), signal.SIGKILL)


class FailAt(Callback):
    """Fails the run at the first batch of task ``task`` (from 0): with an exception raised in
    this callback (``how="exception"``), as if Ctrl-C were pressed (``how="sigint"``), or as if
    a scheduler ended the job (``how="sigterm"``: Lightning stops at the end of the batch)."""

    def __init__(self, task: int = 1, how: str = "exception"):
        self.task, self.how = task, how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.datamodule.current_task == self.task:
            # raise_signal delivers to this thread before it returns. Python ignores SIGINT in a
            # process started in the background (nohup, `cmd &` in a script): give it Ctrl-C's handler.
            if self.how == "sigint":
                signal.signal(signal.SIGINT, signal.default_int_handler)
                signal.raise_signal(signal.SIGINT)
            if self.how == "sigterm":
                signal.raise_signal(signal.SIGTERM)
                return
            raise RuntimeError(f"a callback failed in task {self.task + 1}")
