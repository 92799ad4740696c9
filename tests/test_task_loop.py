"""The task loop on real MNIST, shrunk to a few batches per epoch."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.data.split_mnist import SplitMNIST
from lightning_cl.task_callback import TaskCallback
from lightning_cl.task_loop import TaskLoop

TASKS = [[1, 2], [3, 4], [5, 6]]
BATCHES = 5


class Recorder(TaskCallback):
    """Records task moments and the training data each task saw; ends task index 1 after one epoch."""

    def __init__(self):
        self.events, self.classes_seen = [], {}

    def on_task_start(self, trainer, pl_module, task):
        self.events.append(("start", task, trainer.global_step))

    def on_task_end(self, trainer, pl_module, task):
        self.events.append(("end", task, trainer.global_step))

    def task_should_end(self, trainer, pl_module, task):
        return task == 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.classes_seen.setdefault(trainer.datamodule.current_task, set()).update(batch[1].tolist())


def fit(mnist_dir, root, callbacks=(), ckpt_path=None, epochs=2):
    seed_everything(0, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=BATCHES, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=epochs), *callbacks],
    )
    trainer.fit(ContinualClassifier(), SplitMNIST(tasks=TASKS, data_dir=mnist_dir), ckpt_path=ckpt_path)
    return trainer, json.loads((Path(trainer.log_dir) / "results.json").read_text())


@pytest.fixture(scope="module")
def recorded(mnist_dir, tmp_path_factory):
    recorder = Recorder()
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    trainer, results = fit(mnist_dir, tmp_path_factory.mktemp("loop"), [recorder, checkpoints])
    return trainer, results, recorder, checkpoints


def test_tasks_run_in_order_on_their_own_classes(recorded):
    trainer, results, recorder, _ = recorded
    assert recorder.classes_seen == {0: {1, 2}, 1: {3, 4}, 2: {5, 6}}
    steps = [2 * BATCHES, 3 * BATCHES, 5 * BATCHES]  # task 1 was ended after one epoch
    assert recorder.events == [
        ("start", 0, 0), ("end", 0, steps[0]), ("start", 1, steps[0]), ("end", 1, steps[1]),
        ("start", 2, steps[1]), ("end", 2, steps[2]),
    ]
    assert trainer.global_step == steps[2]


def test_results_json_has_one_row_per_task(recorded):
    _, results, _, _ = recorded
    assert results["complete"] is True and results["tasks"] == TASKS
    assert results["epochs_per_task"] == [2, 1, 2]
    matrix = results["accuracy_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert matrix[0][0] > 0.9 and matrix[0][2] == 0.0  # learnt task 1; never predicts unseen task 3
    assert len(results["seen_accuracy"]) == len(results["seen_loss"]) == len(results["sparsity"]) == 3
    assert results["final_seen_accuracy"] == results["seen_accuracy"][-1]
    assert set(results["sparsity"][0]) == {"h1", "h2", "overall"}
    assert results["seed"] is None  # only the CLI knows the seed; see test_cli for the CLI run


def test_tensorboard_has_one_continuous_step_axis(recorded):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, _, _, _ = recorded
    events = EventAccumulator(trainer.log_dir)
    events.Reload()
    assert [e.step for e in events.Scalars("test/acc_seen")] == [10, 15, 25]
    train_steps = [e.step for e in events.Scalars("train/acc")]
    assert len(train_steps) == 5 and train_steps == sorted(train_steps) and train_steps[-1] >= 20
    assert len(events.Scalars("val/acc")) == 5


def test_checkpoint_at_a_task_end_carries_the_task_position(recorded):
    _, _, _, checkpoints = recorded
    ckpt = torch.load(Path(checkpoints.dirpath) / "epoch=1-step=10.ckpt", weights_only=False)
    assert ckpt["SplitMNIST"]["current_task"] == 1  # the next task
    state = ckpt["callbacks"]["TaskLoop"]
    assert state["epochs_in_task"] == 0 and state["epochs_used"] == [2] and len(state["evaluations"]) == 1


def test_resuming_mid_sequence_gives_the_uninterrupted_results(recorded, mnist_dir, tmp_path):
    _, _, _, checkpoints = recorded
    # Without the Recorder (which ends task 1 early), from the end of task 0 ...
    _, straight = fit(mnist_dir, tmp_path / "straight")
    _, resumed = fit(mnist_dir, tmp_path / "resumed", ckpt_path=Path(checkpoints.dirpath) / "epoch=1-step=10.ckpt")
    assert resumed["epochs_per_task"] == straight["epochs_per_task"] == [2, 2, 2]
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]


def test_task_loop_refuses_zero_epochs():
    with pytest.raises(ValueError, match="task_loop.epochs_per_task=0"):
        TaskLoop(epochs_per_task=0)
