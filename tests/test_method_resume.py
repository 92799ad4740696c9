"""Every method's state survives a checkpoint: a run resumed mid-task (SI's path integral half
accumulated, a Fisher, importance, frozen copy or exemplars from the first task) gives the uninterrupted
run's results exactly, on synthetic task-IL tasks (no MNIST). GDumb: its memory of task 1 kept,
task 2's stream half seen, its fits redone from the same seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from synthetic import SyntheticTasks

from lightning_cl.methods import EWC, MAS, SI, GDumb, ICaRL, LwF, OnlineEWC
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.task_loop import TaskLoop

METHODS = {
    "ewc": lambda: EWC(lam=100.0, fisher_examples=32),
    "online_ewc": lambda: OnlineEWC(lam=100.0, gamma=0.9, fisher_examples=32),
    "si": lambda: SI(c=1.0),
    "mas": lambda: MAS(lam=1.0, examples=32),
    "lwf": lambda: LwF(temperature=2.0),
    "icarl": lambda: ICaRL(buffer_size=24),
    "gdumb": lambda: GDumb(buffer_size=40, fitting_epochs=5, batch_size=16),
}


def fit(root: Path, method: str, callbacks=(), ckpt_path=None) -> dict:
    seed_everything(0, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=4, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=2), METHODS[method](), *callbacks],
    )
    datamodule = SyntheticTasks(scenario="task", batch_size=16, separation=2.0)
    trainer.fit(ContinualClassifier(hidden=[16], num_outputs=datamodule.num_outputs), datamodule, ckpt_path=ckpt_path)
    return json.loads((Path(trainer.log_dir) / "results.json").read_text())


@pytest.mark.parametrize("method", list(METHODS))
def test_a_run_resumed_mid_task_gives_the_uninterrupted_results(method, tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight = fit(tmp_path / "straight", method, [checkpoints])
    assert straight["method"] == method and straight["complete"]
    # Epoch 3 is the first of task 2's two epochs: task 1's state is set, task 2's half done.
    resumed = fit(tmp_path / "resumed", method, ckpt_path=Path(checkpoints.dirpath) / "epoch=2-step=12.ckpt")
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]
