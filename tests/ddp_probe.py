"""A callback for tests/test_ogd_ddp.py, importable by the DDP worker processes (on PYTHONPATH):
each process saves its OGD basis, so the test can compare them."""

import os

import torch
from lightning.pytorch import Callback

from lightning_cl.callbacks.ogd import OrthogonalGradientDescent


class SaveBasisPerRank(Callback):
    def on_train_end(self, trainer, pl_module):
        (ogd,) = [cb for cb in trainer.callbacks if isinstance(cb, OrthogonalGradientDescent)]
        out = os.environ["OGD_BASIS_DIR"]
        torch.save({"basis": ogd.basis.cpu(), "vectors_per_task": ogd.vectors_per_task},
                   os.path.join(out, f"basis_rank{trainer.global_rank}.pt"))
