"""iCaRL: herding, the nearest mean of exemplars, its loss on a small model, the exemplars kept
per class, the prediction rule in the evaluation (and the refusal of two), runs in class- and
task-IL with an exact resume, the refusal of domain-IL, and less forgetting than naive
fine-tuning on shrunk class-IL Split-MNIST."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

import stubs
from conftest import REPO
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.methods import ICaRL
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.icarl import (UNKNOWN_SCORE, class_means, exemplar_schedule, herding,
                                        nearest_mean_scores)
from lightning_cl.methods.lwf import frozen_copy
from method_runs import fit_synthetic
from synthetic import SIZES, SyntheticTasks


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_size": 0}, "ICaRL init_args.buffer_size=0"),
    ({"weight_decay": -1.0}, "ICaRL init_args.weight_decay=-1.0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ICaRL(**kwargs)


def test_herding_picks_the_example_closest_to_the_mean_first_then_keeps_the_running_mean_close():
    features = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 1.0], [2.0, 1.5]])
    # mean (1.5, 1.375): row 3 is the closest (0.27), then row 2 brings the mean of the two to
    # (1.5, 1.25), 0.016 away; then row 1 ((1, 1.83): 0.46) beats row 0 ((2, 0.83): 0.54), though
    # row 0 is the nearer one to the mean (4.14 against 4.89): herding is not a sort by distance.
    assert herding(features, 4).tolist() == [3, 2, 1, 0]
    assert herding(features, 2).tolist() == [3, 2]
    assert herding(features, 10).tolist() == [3, 2, 1, 0]  # all of them, each once


def test_the_nearest_mean_of_exemplars_predicts_the_class_whose_normalised_mean_is_nearest():
    exemplars = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0], [0.0, 5.0]])
    means, known = class_means(exemplars, torch.tensor([0, 0, 2, 2]), num_outputs=4)
    assert known.tolist() == [True, False, True, False]
    assert torch.allclose(means[[0, 2]], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    scores = nearest_mean_scores(torch.tensor([[5.0, 1.0], [1.0, 4.0]]), means, known)
    cos = 5 / math.sqrt(26)  # ||f/|f| - m||^2 = 2 - 2 cos(f, m) for unit means
    expected = torch.tensor([[-(2 - 2 * cos), UNKNOWN_SCORE, -(2 - 2 * math.sqrt(1 - cos**2)), UNKNOWN_SCORE],
                             [-(2 - 2 / math.sqrt(17)), UNKNOWN_SCORE, -(2 - 2 * 4 / math.sqrt(17)), UNKNOWN_SCORE]])
    assert torch.allclose(scores, expected, atol=1e-6)
    assert scores.argmax(1).tolist() == [0, 2]


def test_each_exemplar_is_replayed_once_per_pass_over_the_task():
    schedule = exemplar_schedule(num_exemplars=7, pass_steps=5, steps=12, generator=torch.Generator().manual_seed(0))
    assert len(schedule) == 12
    for start in (0, 5):  # the two whole passes
        assert sorted(i for step in schedule[start:start + 5] for i in step) == list(range(7))
    last = [i for step in schedule[10:] for i in step]  # a third pass cut after 2 of its 5 steps
    assert len(last) == len(set(last)) < 7


def _trainer(datamodule, *methods):
    return SimpleNamespace(datamodule=datamodule, callbacks=list(methods), current_epoch=0)


def test_the_exemplars_are_split_evenly_over_the_classes_seen_and_the_old_ones_shrink_to_their_first():
    torch.manual_seed(0)
    datamodule = SyntheticTasks(batch_size=32)
    model = ContinualClassifier(hidden=[16], num_outputs=datamodule.num_outputs)
    icarl = ICaRL(buffer_size=21)
    trainer = _trainer(datamodule, icarl)
    icarl.setup(trainer, model, "fit")
    icarl.on_task_end(trainer, model, 0)
    first = icarl.exemplars
    assert torch.bincount(first["y"]).tolist() == [10, 10]  # 21 // 2 classes
    assert icarl.old_network is not None and first["t"].eq(0).all()
    assert {tuple(r) for r in first["x"].tolist()} <= {tuple(r) for r in datamodule.task_data("train", 0)[0].tolist()}
    datamodule.current_task = 1
    icarl.on_task_end(trainer, model, 1)
    second = icarl.exemplars
    assert torch.bincount(second["y"]).tolist() == [5, 5, 5, 5]  # 21 // 4
    for unit in (0, 1):  # the earlier classes keep the first five of their herding order
        assert torch.equal(second["x"][second["y"] == unit], first["x"][first["y"] == unit][:5])
    assert second["t"].tolist() == [0] * 10 + [1] * 10


def test_the_loss_is_binary_cross_entropy_with_the_old_networks_sigmoids_on_the_earlier_units():
    torch.manual_seed(0)
    datamodule = SyntheticTasks(batch_size=32)
    model = ContinualClassifier(hidden=[16], num_outputs=datamodule.num_outputs)
    icarl = ICaRL(buffer_size=20)
    trainer = _trainer(datamodule, icarl)
    icarl.setup(trainer, model, "fit")
    x, y, t = (v[:6] for v in datamodule.task_data("train", 1))
    # Task 1 alone: one-hot targets over all ten units, the current weight 0.
    outputs = model(x)
    assert icarl.current_loss_weight(trainer, model) == 0.0
    term = icarl.loss_terms(trainer, model, (x, y, t), outputs)["bce"]
    assert term.item() == pytest.approx(F.binary_cross_entropy_with_logits(outputs[0], F.one_hot(y, 10).float()).item())
    # Task 2 after task 1: the old network's sigmoids on units 0, 1 (seen_units(0)), exemplar 3 replayed.
    icarl.on_task_end(trainer, model, 0)
    icarl.old_network = frozen_copy(ContinualClassifier(hidden=[16], num_outputs=10).network)  # another network
    datamodule.current_task = 1
    icarl._schedule, icarl._step = [[3]], 0
    term = icarl.loss_terms(trainer, model, (x, y, t), model(x))["bce"]
    xs, ys = torch.cat([x, icarl.exemplars["x"][3:4]]), torch.cat([y, icarl.exemplars["y"][3:4]])
    targets = F.one_hot(ys, 10).float()
    targets[:, :2] = torch.sigmoid(icarl.old_network(xs)[0])[:, :2]
    assert ys[-1].item() in (0, 1) and targets[-1].max() < 1  # the exemplar is distilled, not one-hot
    assert term.item() == pytest.approx(F.binary_cross_entropy_with_logits(model(xs)[0], targets).item(), rel=1e-6)
    term.backward()
    assert model.network.head.weight.grad.abs().sum() > 0
    decayed = ICaRL(buffer_size=20, weight_decay=0.5).loss_terms(trainer, model, (x, y, t), model(x))
    squares = sum(p.pow(2).sum() for p in model.network.parameters())
    assert decayed["weight_decay"].item() == pytest.approx(0.5 * squares.item())


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_the_evaluation_measures_the_prediction_rule_and_keeps_the_networks_loss(tmp_path, scenario):
    _, naive = fit_synthetic(tmp_path / "naive", [], scenario=scenario, steps=4)
    _, ruled = fit_synthetic(tmp_path / "ruled", [stubs.PredictsUnitZero()], scenario=scenario, steps=4)
    if scenario == "class":  # always unit 0: half of task 1's test set (40 of each class), none of the others
        rows, seen, val = [[0.5, 0.0, 0.0]] * 3, [1 / 2, 1 / 4, 1 / 6], [1 / 2, 1 / 4, 1 / 6]
    else:  # masked to the task's pair the tie picks its first unit: half of every task
        rows, seen, val = [[0.5, 0.5, 0.5]] * 3, [0.5] * 3, [0.5] * 3
    assert SIZES["test"] == 40 and ruled["accuracy_matrix"] == rows and ruled["random_init_accuracy"] == rows[0]
    assert ruled["seen_accuracy"] == pytest.approx(seen) and ruled["val_seen_accuracy"] == pytest.approx(val)
    # The rule changed no training: the loss and the sparsity are the network's, as without it.
    assert ruled["seen_loss"] == naive["seen_loss"] and ruled["sparsity"] == naive["sparsity"]
    assert naive["accuracy_matrix"] != rows


def test_two_prediction_rules_are_refused_at_setup(tmp_path):
    with pytest.raises(ContractError, match=r"PredictsUnitZero and AlsoPredicts each declare a prediction rule"):
        fit_synthetic(tmp_path / "a", [stubs.PredictsUnitZero(), stubs.AlsoPredicts()], steps=2)
    with pytest.raises(ContractError, match=r"PredictsUnitZero and ICaRL each declare a prediction rule"):
        fit_synthetic(tmp_path / "b", [stubs.PredictsUnitZero(), ICaRL(buffer_size=20)], steps=2)


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_icarl_runs_and_its_accuracies_are_those_of_the_nearest_mean_of_exemplars(tmp_path, scenario):
    icarl = ICaRL(buffer_size=30)
    trainer, results = fit_synthetic(tmp_path, [icarl], scenario=scenario)
    assert results["complete"] and results["method"] == "icarl" and results["scenario"] == scenario
    assert "train/loss_bce" in trainer.logged_metrics
    assert sum(map(len, icarl._schedule)) > 0  # the last task replayed exemplars
    assert torch.bincount(icarl.exemplars["y"]).tolist() == [5] * 6  # the last task's exemplars too
    datamodule, model = trainer.datamodule, trainer.lightning_module
    x, y, t = datamodule.task_data("test", 0)
    scores = icarl.predict(trainer, model, x, t)
    if scenario == "task":
        scores = scores.masked_fill(~model.unit_mask[t], torch.finfo(scores.dtype).min)
    assert results["accuracy_matrix"][-1][0] == pytest.approx((scores.argmax(1) == y).float().mean().item())
    # Before training no class has exemplars: every unit ties, the guess is the first allowed unit.
    first = [0.5, 0.0, 0.0] if scenario == "class" else [0.5, 0.5, 0.5]
    assert results["random_init_accuracy"] == first


def test_domain_il_and_a_buffer_smaller_than_the_classes_are_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"ICaRL is class-incremental.*data.scenario=domain"):
        fit_synthetic(tmp_path / "domain", [ICaRL(buffer_size=20)], scenario="domain", steps=2)
    with pytest.raises(ValueError, match=r"buffer_size=5 keeps no exemplar of some classes .*give at least 6"):
        fit_synthetic(tmp_path / "small", [ICaRL(buffer_size=5)], steps=2)


def test_a_resumed_run_keeps_the_exemplars_and_gives_the_uninterrupted_results(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    _, straight = fit_synthetic(tmp_path / "straight", [ICaRL(buffer_size=30), checkpoints])
    ckpt = next((tmp_path / "straight").rglob("epoch=0-*.ckpt"))  # the end of task 1
    state = torch.load(ckpt, weights_only=True)["callbacks"][ICaRL(buffer_size=30).state_key]
    assert state["exemplars"]["y"].tolist() == [0] * 15 + [1] * 15 and state["old_network"] is not None
    resumed_icarl = ICaRL(buffer_size=30)
    _, resumed = fit_synthetic(tmp_path / "resumed", [resumed_icarl], ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["seen_loss"] == straight["seen_loss"]


@pytest.mark.mnist
def test_icarl_forgets_less_than_naive_fine_tuning_on_class_il_split_mnist(run_cli):
    shrink = ["--data.scenario", "class", "--data.tasks", "[[0,1],[2,3],[4,5]]", "--task_loop.steps_per_task", "150"]
    naive = run_cli("benchmarks/split_mnist.yaml", *shrink)
    icarl = run_cli("benchmarks/split_mnist.yaml", "-c", str(REPO / "configs/methods/icarl.yaml"), *shrink)
    assert icarl["method"] == "icarl" and naive["method"] == "none"
    assert naive["acc"] < 0.4 and icarl["acc"] > naive["acc"] + 0.3
    assert icarl["bwt"] > naive["bwt"] + 0.4
