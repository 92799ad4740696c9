"""The task loop on synthetic tasks (no MNIST): order, results, TensorBoard, checkpoints, resume,
training length in epochs or steps, and the interface it checks at setup."""

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.task_callback import TaskCallback
from lightning_cl.task_loop import TaskLoop, run_results
from synthetic import SyntheticTasks

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


def fit(root, callbacks=(), ckpt_path=None, epochs=2, steps=None, limit=BATCHES, **data):
    seed_everything(0, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=limit, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=None if steps else epochs, steps_per_task=steps),
                                          *callbacks],
    )
    datamodule = SyntheticTasks(tasks=data.pop("tasks", TASKS), batch_size=16, **data)
    trainer.fit(ContinualClassifier(num_outputs=datamodule.num_outputs), datamodule, ckpt_path=ckpt_path)
    return trainer, json.loads((Path(trainer.log_dir) / "results.json").read_text())


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    recorder = Recorder()
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    trainer, results = fit(tmp_path_factory.mktemp("loop"), [recorder, checkpoints])
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
    assert results["format_version"] == 2
    assert (results["benchmark"], results["scenario"], results["method"]) == ("synthetic", "class", "none")
    assert results["epochs_per_task"] == [2, 1, 2] and results["steps_per_task"] == [10, 5, 10]
    matrix = results["accuracy_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert matrix[0][0] > 0.9 and matrix[0][2] == 0.0  # learnt task 1; never predicts unseen task 3
    assert len(results["seen_accuracy"]) == len(results["seen_loss"]) == len(results["sparsity"]) == 3
    assert results["final_seen_accuracy"] == results["seen_accuracy"][-1]
    assert set(results["sparsity"][0]) == {"h1", "h2", "overall"}
    assert results["seed"] is None  # only the CLI knows the seed; see test_cli for the CLI run
    # The CL metrics are the accuracy matrix's (tests/test_metrics.py checks the formulas).
    assert results["acc"] == pytest.approx(sum(matrix[2]) / 3)
    assert results["bwt"] == pytest.approx(((matrix[2][0] - matrix[0][0]) + (matrix[2][1] - matrix[1][1])) / 2)
    assert len(results["random_init_accuracy"]) == 3 and results["fwt"] is not None


def test_callbacks_read_the_run_s_record_as_results_json_has_it(recorded):
    trainer, results, _, _ = recorded
    record, results = run_results(trainer).to_dict(), dict(results)
    assert record.pop("wall_time_s") >= results.pop("wall_time_s")  # measured again, later
    assert record == results
    assert run_results(Trainer(callbacks=[], logger=False)) is None  # no task loop, no record


def test_tensorboard_has_one_continuous_step_axis_and_the_cl_metrics(recorded):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, results, _, _ = recorded
    events = EventAccumulator(trainer.log_dir)
    events.Reload()
    assert [e.step for e in events.Scalars("test/acc_seen")] == [10, 15, 25]
    train_steps = [e.step for e in events.Scalars("train/acc")]
    assert len(train_steps) == 5 and train_steps == sorted(train_steps) and train_steps[-1] >= 20
    assert len(events.Scalars("val/acc")) == 5
    assert events.Scalars("cl/acc")[-1].value == pytest.approx(results["acc"])
    assert [e.step for e in events.Scalars("cl/bwt")] == [15, 25]  # BWT needs two tasks


def test_checkpoint_at_a_task_end_carries_the_task_position(recorded):
    _, _, _, checkpoints = recorded
    ckpt = torch.load(Path(checkpoints.dirpath) / "epoch=1-step=10.ckpt", weights_only=False)
    assert ckpt["SyntheticTasks"]["current_task"] == 1  # the next task
    state = ckpt["callbacks"]["TaskLoop"]
    assert state["epochs_in_task"] == 0 and state["epochs_used"] == [2] and len(state["evaluations"]) == 1


def test_resuming_mid_sequence_gives_the_uninterrupted_results(recorded, tmp_path):
    _, _, _, checkpoints = recorded
    # Without the Recorder (which ends task 1 early), from the end of task 0 ...
    _, straight = fit(tmp_path / "straight")
    _, resumed = fit(tmp_path / "resumed", ckpt_path=Path(checkpoints.dirpath) / "epoch=1-step=10.ckpt")
    assert resumed["epochs_per_task"] == straight["epochs_per_task"] == [2, 2, 2]
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]
    assert resumed["random_init_accuracy"] == straight["random_init_accuracy"]


def test_steps_per_task_trains_each_task_for_that_many_steps_over_several_passes(tmp_path):
    # 256 training examples per task at batch 16 are 16 batches a pass: 40 steps take 3 passes.
    trainer, results = fit(tmp_path, steps=40, limit=None)
    assert results["steps_per_task"] == [40, 40, 40] and results["epochs_per_task"] == [1, 1, 1]
    assert trainer.global_step == 120 and results["complete"]


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs_per_task": 0}, "task_loop.epochs_per_task=0"),
    ({"steps_per_task": 0}, "task_loop.steps_per_task=0"),
    ({"epochs_per_task": 5, "steps_per_task": 2000}, "are both set"),
])
def test_task_loop_refuses_bad_lengths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskLoop(**kwargs)


def test_task_loop_checks_the_interfaces_at_setup(tmp_path):
    class NotATaskDataModule(LightningDataModule):
        def train_dataloader(self):
            return [(torch.zeros(2, 784), torch.zeros(2, dtype=torch.long))]

    def trainer(**kwargs):
        return Trainer(accelerator="cpu", max_epochs=1, enable_progress_bar=False, default_root_dir=tmp_path,
                       callbacks=[TaskLoop()], logger=False, enable_checkpointing=False, **kwargs)

    with pytest.raises(ValueError, match="needs a lightning_cl.data.TaskDataModule"):
        trainer(reload_dataloaders_every_n_epochs=1).fit(ContinualClassifier(), NotATaskDataModule())
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=0.*set it to 1"):
        trainer().fit(ContinualClassifier(), SyntheticTasks())


def test_results_json_records_the_validation_accuracy_of_the_tasks_seen(recorded):
    trainer, results, _, _ = recorded
    datamodule, module = trainer.datamodule, trainer.lightning_module
    assert len(results["val_seen_accuracy"]) == 3 and results["final_val_accuracy"] == results["val_seen_accuracy"][-1]
    # the last entry is the trained model's accuracy on the held-out examples of all three tasks, by hand
    x, y, t = datamodule.seen_data("val", 2)
    assert len(y) and not set(y.tolist()) <= set(datamodule.seen_data("val", 0)[1].tolist())
    logits, _ = module.eval_logits(x, t)
    assert results["final_val_accuracy"] == pytest.approx((logits.argmax(1) == y).float().mean().item())
