"""The diagnostics: the numbers behind each picture, on small tensors and on a tiny synthetic
task sequence, and (marked ``mnist``) the forgetting curve of a real sequential run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.diagnostics import AccuracyMatrix, ForgettingCurve, LatentSpace, ProbabilityProfile, WeightUpdates
from lightning_cl.diagnostics.diagnostic import due
from lightning_cl.diagnostics.forgetting_curve import per_group_accuracy
from lightning_cl.diagnostics.latent_space import class_balanced_subsample
from lightning_cl.diagnostics.probability_profile import probability_profile
from lightning_cl.diagnostics.weight_updates import relative_update
from lightning_cl.evaluation import evaluate_tasks
from synthetic import SyntheticTasks
from lightning_cl.task_loop import TaskLoop

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------- pure functions
def test_probability_profile_rows_are_mean_softmax_and_sum_to_one():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [5.0, 1.0, -1.0]])
    y = torch.tensor([0, 0, 2, 2])
    profile = probability_profile(logits, y, [2, 0])
    assert profile.shape == (2, 3)
    torch.testing.assert_close(profile.sum(1), torch.ones(2))
    probs = torch.softmax(logits, 1)
    torch.testing.assert_close(profile[0], probs[2:].mean(0))  # row order follows `classes`
    torch.testing.assert_close(profile[1], probs[:2].mean(0))


def test_relative_update_of_a_known_change():
    before = [torch.full((3, 4), 2.0), torch.tensor([[3.0, 4.0]])]  # norms sqrt(48), 5
    after = [before[0] + 0.5, before[1] + torch.tensor([[0.0, 1.0]])]
    ratio = relative_update(before, after)
    torch.testing.assert_close(ratio, torch.tensor([math.sqrt(12 * 0.25) / math.sqrt(48), 1 / 5]))
    assert relative_update(before, [b.clone() for b in before]).eq(0).all()


def test_class_balanced_subsample_is_balanced_fixed_and_takes_all_of_a_small_class():
    y = torch.tensor([0] * 10 + [1] * 3 + [2] * 7)
    idx = class_balanced_subsample(y, [2, 0, 1], per_class=5, seed=1)
    assert y[idx].tolist() == [2] * 5 + [0] * 5 + [1] * 3
    assert len(set(idx.tolist())) == len(idx)
    assert torch.equal(idx, class_balanced_subsample(y, [2, 0, 1], per_class=5, seed=1))
    # a class's images do not depend on which other classes are drawn
    assert torch.equal(class_balanced_subsample(y, [0], 5, seed=1), idx[5:10])


def test_per_group_accuracy_on_device_and_nan_for_an_empty_group():
    logits = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    acc = per_group_accuracy(logits, y, torch.tensor([0, 0, 1, 1]), 3)
    assert acc[:2].tolist() == [0.5, 1.0] and math.isnan(acc[2])


def test_due_schedule_is_dense_then_sparse():
    picked = [b for b in range(1, 120) if due(b, 2, 50, 25)]
    assert picked[:5] == [2, 4, 6, 8, 10] and 50 in picked and 52 not in picked and picked[-2:] == [75, 100]


@pytest.mark.parametrize(
    "make, setting",
    [
        (lambda: ForgettingCurve(every_n_batches=0), "ForgettingCurve init_args.every_n_batches"),
        (lambda: ForgettingCurve(samples_per_task=-1), "ForgettingCurve init_args.samples_per_task"),
        (lambda: ForgettingCurve(dense_batches=-1), "ForgettingCurve init_args.dense_batches"),
        (lambda: WeightUpdates(parameters="biases"), "WeightUpdates init_args.parameters"),
        (lambda: WeightUpdates(every_n_batches=0), "WeightUpdates init_args.every_n_batches"),
        (lambda: LatentSpace(layers=["h3"]), "LatentSpace init_args.layers"),
        (lambda: LatentSpace(per_class=1), "LatentSpace init_args.per_class"),
    ],
)
def test_settings_are_validated_with_the_setting_named(make, setting):
    with pytest.raises(ValueError, match=setting.replace(".", r"\.")):
        make()


# ----------------------------------------------------------------- a tiny synthetic run
def tiny_split() -> SyntheticTasks:
    """Four separable synthetic classes in two tasks, in memory (no MNIST)."""
    return SyntheticTasks(tasks=[[0, 1], [2, 3]], batch_size=32)


class DirectAccuracy(Callback):
    """Measures the task accuracies directly (full test set) after each batch, for comparison."""

    def __init__(self) -> None:
        self.by_step: dict[int, list[float]] = {}
        self.network_left_in_train_mode = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dm = trainer.datamodule
        ev = evaluate_tasks(pl_module.eval_logits, dm.test_sets(), dm.current_task + 1)
        self.by_step[trainer.global_step] = ev.task_accuracy
        self.network_left_in_train_mode &= pl_module.network.training


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    callbacks = {
        "forgetting": ForgettingCurve(every_n_batches=1, dense_batches=3, sparse_every_n_batches=4,
                                      samples_per_task=1000),  # > a task's test images: all of them
        "direct": DirectAccuracy(),
        "updates": WeightUpdates(),
        "profile": ProbabilityProfile(),
        "latent": LatentSpace(layers=["h2", "h1"], per_class=10),
        "matrix": AccuracyMatrix(),
    }
    trainer = Trainer(
        default_root_dir=root, accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        callbacks=[TaskLoop(epochs_per_task=1), *callbacks.values()],
    )
    trainer.fit(ContinualClassifier(dropout=0.5), datamodule=tiny_split())  # dropout: eval mode matters
    return trainer, callbacks, Path(trainer.log_dir)


def test_forgetting_curve_equals_directly_computed_accuracies(tiny_run):
    _, cb, _ = tiny_run
    records = [r for r in cb["forgetting"].records if r[2] > 0]  # the task-start samples have no batch before them
    batches = len(cb["direct"].by_step) // 2
    assert [r[2] for r in records[:4]] == [1, 2, 3, 4] and len(records) > 4
    for step, task, _, accs in records:
        direct = cb["direct"].by_step[step]
        assert accs[: task + 1] == pytest.approx(direct[: task + 1], abs=1e-6)
        assert all(math.isnan(a) for a in accs[task + 1 :])  # tasks not trained yet
    assert cb["direct"].network_left_in_train_mode
    assert batches == 8  # 256 training images per task / 32


def test_weight_updates_one_ratio_per_batch_and_weight_matrix(tiny_run):
    _, cb, _ = tiny_run
    a = cb["updates"].arrays()
    assert cb["updates"].names == ["linears.0.weight", "linears.1.weight", "head.weight"]
    assert a["update"].shape == (16, 3) and (a["update"] > 0).all() and (a["update"] < 1).all()
    assert a["task"].tolist() == [0] * 8 + [1] * 8


def test_probability_profiles_have_a_row_per_seen_class_summing_to_one(tiny_run):
    _, cb, _ = tiny_run
    profiles = cb["profile"].profiles
    assert profiles[1].shape == (2, 10) and profiles[2].shape == (4, 10)
    for p in profiles.values():
        assert p.sum(1) == pytest.approx([1.0] * len(p), abs=1e-5)


def test_latent_space_embeds_a_balanced_sample_of_the_seen_classes(tiny_run):
    _, cb, _ = tiny_run
    points, labels = cb["latent"].embeddings[(2, "h2")]
    assert points.shape == (40, 2) and sorted(set(labels.tolist())) == [0, 1, 2, 3]
    assert (labels == 3).sum() == 10
    assert cb["latent"].embeddings[(1, "h1")][0].shape == (20, 2)


def test_accuracy_matrix_and_pictures_are_written_beside_results(tiny_run):
    _, cb, log_dir = tiny_run
    results = json.loads((log_dir / "results.json").read_text())
    assert cb["matrix"].matrix.tolist() == results["accuracy_matrix"]
    names = {p.name for p in log_dir.glob("*.png")}
    expected = {"forgetting_curve.png", "weight_updates.png", "accuracy_matrix.png"}
    expected |= {f"probability_profile_task{t}.png" for t in (1, 2)}
    expected |= {f"latent_{layer}_task{t}.png" for layer in ("h1", "h2") for t in (1, 2)}
    assert expected <= names
    assert (log_dir / "projector_config.pbtxt").exists()  # TensorBoard's embedding projector
    curve = json.loads((log_dir / "forgetting_curve.json").read_text())
    assert len(curve["records"]) == len(cb["forgetting"].records)


def test_forgetting_curve_state_survives_a_checkpoint(tiny_run):
    _, cb, _ = tiny_run
    restored = ForgettingCurve()
    restored.load_state_dict(cb["forgetting"].state_dict())
    assert len(restored.records) == len(cb["forgetting"].records)


# ----------------------------------------------------------------- config
def test_diagnostics_config_appends_to_callbacks_of_an_earlier_config(tmp_path):
    from lightning.pytorch.callbacks import LearningRateMonitor

    from lightning_cl.cli import TRAINER_DEFAULTS, ContinualCLI

    first = tmp_path / "first.yaml"
    first.write_text(
        "data:\n  tasks: [[1, 2], [3, 4]]\n"
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n"
    )
    cli = ContinualCLI(ContinualClassifier, TaskDataModule, subclass_mode_data=True, trainer_defaults=TRAINER_DEFAULTS, run=False,
                       args=["-c", str(first), "-c", str(REPO / "configs" / "diagnostics.yaml"),
                             "--trainer.default_root_dir", str(tmp_path)])
    kinds = {type(cb) for cb in cli.trainer.callbacks}
    assert {LearningRateMonitor, ForgettingCurve, WeightUpdates, ProbabilityProfile, LatentSpace,
            AccuracyMatrix, TaskLoop} <= kinds


# ----------------------------------------------------------------- real MNIST
@pytest.mark.mnist
def test_sequential_forgetting_curve_shows_task1_collapsing_within_20_batches(run_cli):
    results = run_cli("split_mnist/sequential.yaml", "-c", str(REPO / "configs" / "diagnostics.yaml"),
                      "--data.tasks", "[[1, 2], [3, 4]]", "--task_loop.epochs_per_task", "1",
                      "--trainer.limit_train_batches", "40")
    log_dir = Path(results["_dir"])
    records = json.loads((log_dir / "forgetting_curve.json").read_text())["records"]
    task1_during_task2 = {r["batch_in_task"]: r["accuracy"][0] for r in records if r["task"] == 1}
    print("task-1 accuracy by batch of task 2:", task1_during_task2)
    assert task1_during_task2[0] > 0.9  # learned before task 2
    assert min(a for b, a in task1_during_task2.items() if b <= 20) < 0.2  # collapsed within 20 batches
    assert results["accuracy_matrix"][1][0] < 0.2
    for name in ("forgetting_curve", "weight_updates", "accuracy_matrix", "probability_profile_task2",
                 "latent_h2_task2"):
        assert (log_dir / f"{name}.png").stat().st_size > 10_000
