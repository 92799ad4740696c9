"""Experience Replay: its settings, its loss on a small model, runs in the three scenarios with
an exact resume, and less forgetting than naive fine-tuning on shrunk class-IL Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

import stubs
from lightning_cl.methods import ExperienceReplay
from lightning_cl.classifier import ContinualClassifier
from conftest import REPO
from method_runs import TASKS, fit_synthetic


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": "ring"}, "ExperienceReplay init_args.sampling='ring'"),
    ({"per_class": 0}, "ExperienceReplay init_args.per_class=0"),
    ({"batch_size": 0}, "ExperienceReplay init_args.batch_size=0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExperienceReplay(**kwargs)


def test_replay_term_and_current_weight_follow_one_over_t():
    torch.manual_seed(0)
    model = ContinualClassifier(hidden=[16])
    x, y = torch.randn(40, 784), torch.arange(4).repeat(10)
    t = y // 2
    batches = [(x[i : i + 8], y[i : i + 8], t[i : i + 8]) for i in range(0, 40, 8)]
    datamodule = stubs.task_data(task_classes=lambda: [[0, 1], [2, 3], [4, 5]], num_tasks=3, current_task=0,
                                 task_train_loader=lambda task: iter(batches))
    trainer = SimpleNamespace(datamodule=datamodule)
    er = ExperienceReplay(per_class=3, batch_size=5)
    er.setup(trainer, model, "fit")
    assert er.current_loss_weight(trainer, model) == 1.0 and er.loss_terms(trainer, model, None, None) == {}
    er.on_task_end(trainer, model, 0)
    assert len(er.memory) == 12  # 3 of each (task, label) pair offered
    datamodule.current_task = 2  # the third task: 1/3 current, 2/3 replay
    assert er.current_loss_weight(trainer, model) == pytest.approx(1 / 3)
    state = er.generator.get_state()
    term = er.loss_terms(trainer, model, None, None)["replay"]
    xr, yr, tr = er.memory.sample(5, torch.Generator().set_state(state))  # the batch it replayed
    assert term.item() == pytest.approx(2 / 3 * F.cross_entropy(model(xr)[0], yr).item(), rel=1e-6)
    term.backward()
    assert model.network.head.weight.grad.abs().sum() > 0  # the replay term trains the network


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
@pytest.mark.parametrize("sampling", ["balanced", "reservoir"])
def test_er_runs_in_every_scenario(tmp_path, scenario, sampling):
    er = ExperienceReplay(per_class=10, batch_size=8, sampling=sampling)
    trainer, results = fit_synthetic(tmp_path, [er], scenario=scenario)
    assert results["complete"] and results["method"] == "er" and results["scenario"] == scenario
    assert "train/loss_replay" in trainer.logged_metrics
    # Tasks 1 and 2 (not the last) are in memory, with their task ids and scenario labels.
    assert set(er.memory.t.tolist()) == {0, 1} and len(er.memory) == (40 if sampling == "balanced" else 60)
    labels = {"domain": {0, 1}}.get(scenario, {c for task in TASKS[:2] for c in task})
    assert set(er.memory.y.tolist()) == labels


def test_a_resumed_run_replays_the_same_batches_as_an_uninterrupted_one(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    er = ExperienceReplay(per_class=10, batch_size=8)
    _, straight = fit_synthetic(tmp_path / "straight", [er, checkpoints])
    # End of task 1: the memory holds task 1; tasks 2 and 3 replay after the resume.
    ckpt = next((tmp_path / "straight").rglob("epoch=0-*.ckpt"))
    assert len(torch.load(ckpt, weights_only=True)["callbacks"][er.state_key]["memory"]["y"]) == 20
    _, resumed = fit_synthetic(tmp_path / "resumed", [ExperienceReplay(per_class=10, batch_size=8)], ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]


@pytest.mark.mnist
def test_er_forgets_less_than_naive_fine_tuning_on_class_il_split_mnist(run_cli):
    # Three tasks of 150 steps: naive fine-tuning keeps only the last task in class-IL.
    shrink = ["--data.scenario", "class", "--data.tasks", "[[0,1],[2,3],[4,5]]", "--task_loop.steps_per_task", "150"]
    naive = run_cli("benchmarks/split_mnist.yaml", *shrink)
    er = run_cli("benchmarks/split_mnist.yaml", "-c", str(REPO / "configs/methods/er.yaml"), *shrink)
    assert er["method"] == "er" and naive["method"] == "none"
    assert naive["acc"] < 0.4 and er["acc"] > naive["acc"] + 0.3
    assert er["bwt"] > naive["bwt"] + 0.4
