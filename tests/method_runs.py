"""Short runs of a continual-learning method, shared by the method tests: a tiny Trainer fit on
synthetic tasks (no MNIST) in any scenario."""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import Trainer, seed_everything

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.task_loop import TaskLoop
from synthetic import SyntheticTasks

TASKS = [[0, 1], [2, 3], [4, 5]]


def fit_synthetic(root, callbacks, scenario="class", steps=8, ckpt_path=None, seed=0, **model):
    """Train ``TASKS`` for ``steps`` batches of 16 each; return the trainer and results.json."""
    seed_everything(seed, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False, default_root_dir=root,
        callbacks=[TaskLoop(steps_per_task=steps), *callbacks],
    )
    datamodule = SyntheticTasks(tasks=TASKS, batch_size=16, scenario=scenario)
    model = ContinualClassifier(num_outputs=datamodule.num_outputs, hidden=model.pop("hidden", [32, 16]), **model)
    trainer.fit(model, datamodule, ckpt_path=ckpt_path)
    return trainer, json.loads((Path(trainer.log_dir) / "results.json").read_text())


def fit_in_epochs(root, callbacks, scenario="task", epochs=2, batches=4, ckpt_path=None, seed=0):
    """Train ``TASKS`` for ``epochs`` epochs of ``batches`` batches of 16 each per task: a checkpoint
    made at an epoch end that is not a task's last (``epoch=2-step=12.ckpt``: the first epoch of
    task 2) resumes mid-task. Returns the trainer and results.json."""
    seed_everything(seed, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=batches, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=epochs), *callbacks],
    )
    datamodule = SyntheticTasks(tasks=TASKS, batch_size=16, scenario=scenario)
    model = ContinualClassifier(num_outputs=datamodule.num_outputs, hidden=[32, 16])
    trainer.fit(model, datamodule, ckpt_path=ckpt_path)
    return trainer, json.loads((Path(trainer.log_dir) / "results.json").read_text())
