"""Mammoth's ER (ReservoirER): its settings, its loss is one cross-entropy over the current and the
replayed batch, its buffer is a reservoir of the whole stream from the first task on, a resumed run
keeps the same buffer and random stream, and it forgets less than naive training on shrunk Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

import stubs
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.methods import ReservoirER
from lightning_cl.methods.contract import ContractError
from method_runs import TASKS, fit_in_epochs, fit_synthetic
from shrunk_mnist import STREAM, shrunk_run


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_size": 0}, "ReservoirER init_args.buffer_size=0"),
    ({"minibatch_size": 0}, "ReservoirER init_args.minibatch_size=0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReservoirER(**kwargs)


def test_a_network_with_batchnorm_is_refused_before_training():
    datamodule = stubs.task_data()
    ReservoirER().check_setup(datamodule, ContinualClassifier(hidden=[16], norm="layer"))  # LayerNorm: per example
    with pytest.raises(ContractError, match="ReservoirER is Mammoth's ER, one forward pass .* without BatchNorm"):
        ReservoirER().check_setup(datamodule, ContinualClassifier(hidden=[16], norm="batch"))


def step_batch(x, y, t, i, n):
    return x[i : i + n], y[i : i + n], t[i : i + n]


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_the_loss_is_one_cross_entropy_over_the_current_and_the_replayed_batch(scenario):
    torch.manual_seed(0)
    model = ContinualClassifier(hidden=[16], num_outputs=4)
    model.unit_mask = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 1]], dtype=torch.bool) if scenario == "task" else None
    x, y = torch.randn(40, 784), torch.arange(4).repeat(10)
    t = y // 2
    trainer = SimpleNamespace(datamodule=stubs.task_data(num_tasks=2))
    er = ReservoirER(buffer_size=30, minibatch_size=12)
    er.setup(trainer, model, "fit")
    # The first step replays nothing (the buffer is empty); then it holds that batch.
    first = step_batch(x, y, t, 0, 8)
    er.on_train_batch_start(trainer, model, first, 0)
    assert er.current_loss_weight(trainer, model) == 1.0 and er.loss_terms(trainer, model, first, None) == {}
    er.on_train_batch_end(trainer, model, None, first, 0)
    assert len(er.memory) == 8
    # The second step: 8 kept, 6 current -> weights 6/14 and 8/14.
    batch = step_batch(x, y, t, 8, 6)
    er.on_train_batch_start(trainer, model, batch, 1)
    state = er.generator.get_state()
    logits, _ = model.scenario_forward(batch[0], batch[2])
    weight = er.current_loss_weight(trainer, model)
    terms = er.loss_terms(trainer, model, batch, (logits, ()))
    assert weight == pytest.approx(6 / 14)
    loss = weight * F.cross_entropy(logits, batch[1]) + terms["replay"]
    replayed = er.memory.sample(12, torch.Generator().set_state(state))  # the batch it replayed: all 8
    assert len(replayed["y"]) == 8
    xs, ys, ts = (torch.cat([c, replayed[k]]) for c, k in zip(batch, "xyt"))
    concat = F.cross_entropy(model.scenario_forward(xs, ts)[0], ys)  # Mammoth: one loss over the concatenation
    assert loss.item() == pytest.approx(concat.item(), rel=1e-6)
    grad = torch.autograd.grad(loss, model.network.parameters())
    grad_concat = torch.autograd.grad(concat, model.network.parameters())
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(grad, grad_concat))
    # After the step the current batch is offered to the buffer.
    er.on_train_batch_end(trainer, model, None, batch, 1)
    assert len(er.memory) == 14 and er.memory.seen == 14


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_the_buffer_is_a_reservoir_of_the_whole_stream_in_every_scenario(tmp_path, scenario):
    er = ReservoirER(buffer_size=50, minibatch_size=8)
    trainer, results = fit_synthetic(tmp_path, [er], scenario=scenario)
    assert results["complete"] and results["method"] == "er_reservoir" and results["scenario"] == scenario
    assert "train/loss_replay" in trainer.logged_metrics
    # Three tasks of 8 steps of 16: every example offered, 50 kept, from every task (the last one too).
    assert er.memory.seen == 3 * 8 * 16 and len(er.memory) == 50
    assert set(er.memory.t.tolist()) == {0, 1, 2}
    labels = {"domain": {0, 1}}.get(scenario, {c for task in TASKS for c in task})
    assert set(er.memory.y.tolist()) <= labels


def test_a_run_resumed_mid_task_keeps_the_same_buffer_and_random_stream(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight_er = ReservoirER(buffer_size=40, minibatch_size=8)
    _, straight = fit_in_epochs(tmp_path / "straight", [straight_er, checkpoints])
    # The first of task 2's two epochs: 12 steps of 16 seen, the 40 slots full and being replaced.
    ckpt = next((tmp_path / "straight").rglob("epoch=2-step=12.ckpt"))
    saved = torch.load(ckpt, weights_only=True)["callbacks"][straight_er.state_key]
    assert saved["memory"]["seen"] == 12 * 16 and len(saved["memory"]["fields"]["y"]) == 40
    resumed_er = ReservoirER(buffer_size=40, minibatch_size=8)
    _, resumed = fit_in_epochs(tmp_path / "resumed", [resumed_er], ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"] and resumed["seen_loss"] == straight["seen_loss"]
    assert resumed_er.memory.seen == straight_er.memory.seen == 3 * 2 * 4 * 16
    for k, v in straight_er.memory.fields.items():
        assert torch.equal(resumed_er.memory.fields[k], v), k
    assert torch.equal(resumed_er.generator.get_state(), straight_er.generator.get_state())


@pytest.mark.mnist
def test_er_reservoir_forgets_less_than_naive_training_on_shrunk_class_il_split_mnist(run_cli):
    naive = shrunk_run(run_cli, None, *STREAM)
    er = shrunk_run(run_cli, "er_reservoir", *STREAM)
    assert er["method"] == "er_reservoir" and naive["method"] == "none"
    # Measured (seed 0): naive ACC 0.326, BWT -0.945; ER ACC 0.893, BWT -0.088.
    assert naive["acc"] < 0.4 and er["acc"] > naive["acc"] + 0.3
    assert er["bwt"] > naive["bwt"] + 0.4
