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



class FillDiskAt(Callback):
    """When $FILL_DISK is set: fills the filesystem of the run's directory with a file ``filler``
    until ``leave`` bytes are free, at the start of task ``task`` (from 0), or as the ``save``-th
    checkpoint (from 1) is about to be written. The next larger write then meets a full disk."""

    def __init__(self, task: int | None = None, save: int | None = None, leave: int = 0):
        self.task, self.save, self.leave = task, save, leave
        self._saves = 0
        self._filled = False

    def on_train_epoch_start(self, trainer, pl_module):
        if self.task is not None and trainer.datamodule.current_task == self.task:
            self._fill(trainer.log_dir)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self._saves += 1
        if self._saves == self.save:
            self._fill(trainer.log_dir)

    def _fill(self, directory):
        if self._filled or not os.environ.get("FILL_DISK"):
            return
        self._filled = True
        stat = os.statvfs(directory)
        size = max(stat.f_bavail * stat.f_frsize - self.leave, 0)
        with open(os.path.join(directory, "filler"), "wb") as filler:
            try:
                filler.write(b"\0" * size)
                filler.flush()
            except OSError:
                pass  # as full as it gets



class NoSpaceAt(Callback):
    """When $NO_SPACE is set: the ``nth`` write (from 1) of a file named ``file`` by
    :func:`lightning_cl.atomic_write.write_atomic`, and every write after it, writes half its
    bytes and fails with ENOSPC, as on a disk that fills up there."""

    def __init__(self, file: str = "last.ckpt", nth: int = 1):
        self.file, self.nth = file, nth

    def setup(self, trainer, pl_module, stage):
        if os.environ.get("NO_SPACE"):
            from lightning_cl import atomic_write

            atomic_write._write_all = no_space_writer(atomic_write._write_all, self.file, self.nth)


def no_space_writer(write_all, file: str, nth: int = 1):
    """``write_all`` (:func:`lightning_cl.atomic_write._write_all`) as :class:`NoSpaceAt` says. Its
    ``written`` lists the files it was asked to write (the temporary files), in order."""
    import errno

    def _write_all(out, data):
        _write_all.written.append(out.name)
        if sum(os.path.basename(name).startswith(f".{file}.tmp-") for name in _write_all.written) < nth:
            return write_all(out, data)
        view = memoryview(data).cast("B")
        write_all(out, view[: len(view) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    _write_all.written = []
    return _write_all
