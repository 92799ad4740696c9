"""GDumb: its settings; the greedy class-balanced memory (by hand, and balanced on unbalanced
streams); the stream never changes the network; the fit learns from the memory alone, from the
initial weights, masked to each example's task in task-IL, with Mammoth's schedule; runs in the
three scenarios with an exact resume; and forgets less than naive fine-tuning on shrunk
class-IL Split-MNIST."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import REPO
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.methods import ExperienceReplay, GDumb
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.gdumb import GreedyMemory, warm_cosine_lrs
from method_runs import TASKS, fit_synthetic
from synthetic import SyntheticTasks


def small(**kwargs) -> GDumb:
    return GDumb(**({"buffer_size": 40, "fitting_epochs": 20, "batch_size": 16} | kwargs))


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_size": 0}, "GDumb init_args.buffer_size=0 must be at least 1"),
    ({"fitting_epochs": 0}, "GDumb init_args.fitting_epochs=0 must be at least 1"),
    ({"batch_size": 0}, "GDumb init_args.batch_size=0 must be at least 1"),
    ({"max_lr": 0.0}, "GDumb init_args.max_lr=0.0 must be > 0"),
    ({"min_lr": 0.1}, r"GDumb init_args.min_lr=0.1 must be in \[0, max_lr=0.05\]"),
    ({"momentum": -0.1}, "GDumb init_args.momentum=-0.1 must be >= 0"),
    ({"weight_decay": -1.0}, "GDumb init_args.weight_decay=-1.0 must be >= 0"),
    ({"clip_grad_norm": 0.0}, "GDumb init_args.clip_grad_norm=0.0 must be > 0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GDumb(**kwargs)


# ----------------------------------------------------------------- the greedy sampler
def stream(labels, task=0, start=0):
    """Examples whose single feature is their position in the stream (from ``start``)."""
    y = torch.tensor(labels)
    return torch.arange(start, start + len(y)).float()[:, None], y, torch.full_like(y, task)


def ids(memory, label=None):
    keep = torch.ones_like(memory.y, dtype=torch.bool) if label is None else memory.y == label
    return sorted(memory.x[keep, 0].long().tolist())


def test_the_greedy_rule_by_hand():
    memory, generator = GreedyMemory(budget=4), torch.Generator().manual_seed(0)
    memory.add(*stream([0, 0, 0, 0]), generator)
    assert ids(memory) == [0, 1, 2, 3]
    # Class 1 holds 0, then 1, of budget / 2 classes = 2: each replaces a random class-0 example;
    # with 2 it holds its share, so the third is not stored.
    memory.add(*stream([1, 1, 1], start=4), generator)
    assert memory.counts() == {(0, 0): 2, (0, 1): 2}
    assert ids(memory, 1) == [4, 5] and len(set(ids(memory, 0)) & {0, 1, 2, 3}) == 2
    # A third class (in another task): 0 < 4 / 3, it replaces an example of one of the two tied
    # largest classes; a fourth: 0 < 4 / 4, it replaces one of the class left with 2.
    memory.add(*stream([2, 0], task=1, start=7), generator)
    assert memory.counts() == {(0, 0): 1, (0, 1): 1, (1, 2): 1, (1, 0): 1}
    assert ids(memory, 2) == [7] and memory.seen == [(0, 0), (0, 1), (1, 2), (1, 0)]


def test_a_class_not_yet_at_its_share_is_stored_and_a_full_one_is_not():
    memory, generator = GreedyMemory(budget=6), torch.Generator().manual_seed(0)
    memory.add(*stream([0, 1, 0, 1, 0, 1]), generator)  # fills it: 3 and 3
    memory.add(*stream([0, 1], start=6), generator)  # each at its share of 6 / 2: none stored
    assert ids(memory) == [0, 1, 2, 3, 4, 5]
    memory.add(*stream([2, 2, 2, 2], start=8), generator)  # shares of 6 / 3 = 2: two of class 2
    assert memory.counts() == {(0, 0): 2, (0, 1): 2, (0, 2): 2} and ids(memory, 2) == [8, 9]


@pytest.mark.parametrize("seed", range(8))
def test_the_memory_is_class_balanced_on_unbalanced_streams(seed):
    draw = torch.Generator().manual_seed(seed)
    budget = int(torch.randint(7, 50, (1,), generator=draw))
    memory, generator = GreedyMemory(budget), torch.Generator().manual_seed(seed)
    domain = seed % 2 == 1  # domain-IL: the labels repeat in every task, (task, label) is the class
    for task, classes in enumerate([[0, 1], [2, 3, 4], [5], [6, 7, 8, 9]]):
        labels = [c for c in classes for _ in range(int(torch.randint(budget, 6 * budget, (1,), generator=draw)))]
        x, y, t = stream(labels, task)
        order = torch.randperm(len(y), generator=draw)
        memory.add(x[order], (y - classes[0] * domain)[order], t[order], generator)
        counts = memory.counts()
        assert len(memory) == budget and sum(counts.values()) == budget
        assert len(counts) == sum(len(c) for c in [[0, 1], [2, 3, 4], [5], [6, 7, 8, 9]][: task + 1])
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_the_memory_never_exceeds_its_budget_and_keeps_examples_whole():
    memory, generator = GreedyMemory(budget=5), torch.Generator().manual_seed(1)
    for task in range(4):
        x, y, t = stream([task * 2, task * 2 + 1] * 7, task, start=100 * task)
        memory.add(x, y, t, generator)
        assert len(memory) <= 5
        # Every kept example is the one offered: its features, label and task belong together.
        position = memory.x[:, 0].long()
        assert torch.equal(memory.t, position // 100)
        assert torch.equal(memory.y, memory.t * 2 + (position % 100) % 2)


# ----------------------------------------------------------------- the stream does not train
class Snapshots(Callback):
    """The network's state (parameters and buffers) and the optimiser's state at each task's
    first batch start and last batch end."""

    def __init__(self):
        self.first, self.last, self.optimizer_state = {}, {}, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.first.setdefault(trainer.datamodule.current_task, _state(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last[trainer.datamodule.current_task] = _state(pl_module)
        self.optimizer_state.append(dict(trainer.optimizers[0].state))


def _state(pl_module):
    return {k: v.detach().clone() for k, v in pl_module.network.state_dict().items()}


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_the_stream_does_not_change_the_network_only_the_fit_does(tmp_path, optimizer):
    snapshots = Snapshots()
    gdumb = small()
    trainer, results = fit_synthetic(tmp_path, [gdumb, snapshots], norm="batch", dropout=0.2, optimizer=optimizer,
                                     momentum=0.9)
    assert results["complete"] and trainer.global_step == 3 * 8  # the stream's steps are counted
    for task in range(3):
        assert _equal(snapshots.first[task], snapshots.last[task])  # BatchNorm's statistics included
    # Between two tasks, only the fit changed the network.
    assert not _equal(snapshots.last[0], snapshots.first[1]) and not _equal(snapshots.last[1], snapshots.first[2])
    assert all(state == {} for state in snapshots.optimizer_state)  # no moment, no momentum buffer
    assert all(p.grad is None for p in trainer.lightning_module.parameters())
    # The same run without GDumb trains on the stream: the probe would see it.
    naive = Snapshots()
    fit_synthetic(tmp_path / "naive", [naive], norm="batch", optimizer=optimizer)
    assert not _equal(naive.first[0], naive.last[0])


# ----------------------------------------------------------------- the dumb learner
def _ready(gdumb, scenario="class", **model):
    """A module for the synthetic tasks and ``gdumb`` as at its setup, without a trainer."""
    data = SyntheticTasks(tasks=TASKS, scenario=scenario)
    module = ContinualClassifier(num_outputs=data.num_outputs, **({"hidden": [32]} | model))
    module.unit_mask = data.unit_mask()
    gdumb.initial = {k: v.detach().clone() for k, v in module.network.state_dict().items()}
    return data, module


def test_the_fit_learns_from_the_memory_alone():
    torch.manual_seed(0)
    gdumb = small(buffer_size=20)
    data, model = _ready(gdumb)
    gdumb.memory.add(*data.task_data("train", 0), torch.Generator().manual_seed(0))  # classes 0 and 1 only
    assert gdumb.fit(model, seed=0) == {"gdumb/memory": 20.0, "gdumb/fit_accuracy": 1.0}
    # Their test examples are told apart, and never taken for a class it did not store (2 to 5).
    x, y, t = data.task_data("test", 0)
    logits, _ = model.eval_logits(x, t)
    assert set(logits.argmax(1).tolist()) == {0, 1} and (logits.argmax(1) == y).float().mean() > 0.9


def test_the_model_a_run_ends_with_is_a_fit_on_the_memory_alone(tmp_path):
    gdumb = small()
    trainer, _ = fit_synthetic(tmp_path, [gdumb], dropout=0.2)
    final = _state(trainer.lightning_module)
    # A fresh network, fitted on the run's memory from the run's initial weights: the same network.
    torch.manual_seed(7)
    alone = ContinualClassifier(hidden=[32, 16], num_outputs=trainer.datamodule.num_outputs, dropout=0.2)
    assert not _equal(_state(alone), final)
    gdumb.fit(alone, seed=gdumb.fit_seed(2))
    assert _equal(_state(alone), final)


def test_every_fit_starts_again_from_the_initial_weights_and_depends_only_on_its_seed():
    torch.manual_seed(0)
    gdumb = small(buffer_size=30, fitting_epochs=3)
    data, model = _ready(gdumb, dropout=0.3)
    gdumb.memory.add(*data.task_data("train", 1), torch.Generator().manual_seed(0))
    gdumb.fit(model, seed=5)
    fitted = _state(model)
    with torch.no_grad():  # whatever the network has become since
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    torch.manual_seed(123)  # and whatever the global RNG (dropout draws from the seed)
    gdumb.fit(model, seed=5)
    assert _equal(_state(model), fitted)
    gdumb.fit(model, seed=6)
    assert not _equal(_state(model), fitted)


@pytest.mark.parametrize("scenario", ["task", "class"])
def test_in_task_il_the_fit_trains_only_each_examples_own_units(scenario):
    torch.manual_seed(0)
    gdumb = small(buffer_size=20, fitting_epochs=3)
    data, model = _ready(gdumb, scenario)
    head = model.network.head
    before = torch.cat([head.weight, head.bias[:, None]], 1).detach().clone()
    gdumb.memory.add(*data.task_data("train", 0), torch.Generator().manual_seed(0))  # task 1: units 0 and 1
    gdumb.fit(model, seed=0)
    after = torch.cat([head.weight, head.bias[:, None]], 1).detach()
    assert not torch.equal(after[:2], before[:2])
    # Task-IL: the other tasks' units are masked out of the loss, so they get no gradient at all.
    assert torch.equal(after[2:], before[2:]) == (scenario == "task")


def test_the_learning_rates_are_mammoths_warm_start_and_cosine_restarts():
    lrs = warm_cosine_lrs(12, max_lr=0.05, min_lr=5e-4)
    # Hand values: a warm epoch at max_lr / 10, max_lr, then periods of 1, 2, 4, 8 epochs.
    assert lrs[:4] == pytest.approx([0.005, 0.05, 0.05, (0.05 + 5e-4) / 2])
    assert lrs[4] == pytest.approx(0.05) and lrs[8] == pytest.approx(0.05)
    assert lrs[6] == pytest.approx((0.05 + 5e-4) / 2)  # half-way through the period of 4
    # The same as torch's scheduler driven as Mammoth's fit_buffer drives it.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=2, eta_min=5e-4)
    expected = []
    for epoch in range(12):
        if epoch == 0:
            optimizer.param_groups[0]["lr"] = 0.005
        elif epoch == 1:
            optimizer.param_groups[0]["lr"] = 0.05
        else:
            scheduler.step()
        expected.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx(expected)
    assert warm_cosine_lrs(1, 0.05, 5e-4) == [0.005]


# ----------------------------------------------------------------- runs
@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_gdumb_runs_in_every_scenario_and_fits_at_every_task_end(tmp_path, scenario):
    gdumb = small()
    trainer, results = fit_synthetic(tmp_path, [gdumb], scenario=scenario)
    assert results["complete"] and results["method"] == "gdumb" and results["scenario"] == scenario
    assert results["method_metrics"]["gdumb/memory"] == [40.0, 40.0, 40.0]
    counts = gdumb.memory.counts()  # six (task, label) classes in every scenario
    assert len(counts) == 6 and sorted(counts.values()) == [6, 6, 7, 7, 7, 7]
    labels = {"domain": {0, 1}}.get(scenario, {c for task in TASKS for c in task})
    assert set(gdumb.memory.y.tolist()) == labels and set(gdumb.memory.t.tolist()) == {0, 1, 2}
    # Every row is a fitted model: it knows the tasks seen so far, the first included.
    assert all(results["accuracy_matrix"][row][0] > 0.6 for row in range(3))


def test_gdumb_refuses_another_method_and_joint_training(tmp_path):
    with pytest.raises(ValueError, match=r"GDumb with ExperienceReplay \(trainer.callbacks\)"):
        fit_synthetic(tmp_path / "er", [small(), ExperienceReplay(per_class=5)])
    with pytest.raises(ContractError, match="GDumb with data.cumulative=true"):
        small().check_setup(SyntheticTasks(cumulative=True), ContinualClassifier())


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    gdumb = small()
    _, straight = fit_synthetic(tmp_path / "straight", [gdumb, checkpoints], dropout=0.2)
    ckpt = next((tmp_path / "straight").rglob("epoch=0-*.ckpt"))  # the end of task 1: memory and fit of task 1
    saved = torch.load(ckpt, weights_only=True)["callbacks"][gdumb.state_key]
    assert len(saved["memory"]["y"]) == 40 and sorted(saved["memory"]["seen"]) == [[0, 0], [0, 1]]
    resumed_gdumb = small()
    _, resumed = fit_synthetic(tmp_path / "resumed", [resumed_gdumb], ckpt_path=ckpt, dropout=0.2)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]
    assert torch.equal(resumed_gdumb.memory.x, gdumb.memory.x)


# ----------------------------------------------------------------- MNIST
@pytest.mark.mnist
def test_gdumb_forgets_less_than_naive_fine_tuning_on_class_il_split_mnist(run_cli):
    # Three tasks of 100 steps (the stream only fills the memory); a memory of 300, fitted 64 epochs.
    # Measured (seed 0): naive ACC 0.329; GDumb ACC 0.893, BWT -0.068 (256 epochs: 0.909, -0.054).
    shrink = ["--data.scenario", "class", "--data.tasks", "[[0,1],[2,3],[4,5]]", "--task_loop.steps_per_task", "100",
              "--trainer.enable_checkpointing", "false"]
    naive = run_cli("benchmarks/split_mnist.yaml", *shrink)
    gdumb = run_cli("benchmarks/split_mnist.yaml", "-c", str(REPO / "configs/methods/gdumb.yaml"), *shrink,
                    "--trainer.callbacks.buffer_size", "300", "--trainer.callbacks.fitting_epochs", "64")
    assert gdumb["method"] == "gdumb" and naive["method"] == "none"
    assert gdumb["method_metrics"]["gdumb/memory"] == [300.0, 300.0, 300.0]
    assert naive["acc"] < 0.4 and gdumb["acc"] > naive["acc"] + 0.3
    assert gdumb["bwt"] > naive["bwt"] + 0.4
