"""ER-ACE (ERACE): its settings and refusals, Mammoth's asymmetric mask (hand-computed), the loss
(the incoming batch's cross-entropy over the allowed units only, the replayed batch's over all),
its buffer is the stream's reservoir, a resumed run keeps it and the classes seen, and it forgets
less than naive training on shrunk class-IL Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

import stubs
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.methods import ERACE, ReservoirER
from lightning_cl.methods.contract import ContractError
from lightning_cl.methods.er_ace import asymmetric_units, stream_ranks
from lightning_cl.methods.memory import StreamMemory, run_seed
from method_runs import TASKS, fit_in_epochs, fit_synthetic
from shrunk_mnist import STREAM, shrunk_run

UNITS = [[0, 1], [2, 3], [4, 5]]  # the stub's tasks: six units, in task order


def stub_trainer(scenario="class", units=UNITS, num_outputs=6, callbacks=()):
    datamodule = stubs.task_data(num_tasks=len(units), num_outputs=num_outputs, scenario=scenario,
                                 seen_units=lambda task: [u for t in units[: task + 1] for u in t])
    return SimpleNamespace(datamodule=datamodule, callbacks=list(callbacks))


@pytest.mark.parametrize("kwargs, message", [
    ({"buffer_size": 0}, "ERACE init_args.buffer_size=0"),
    ({"minibatch_size": 0}, "ERACE init_args.minibatch_size=0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ERACE(**kwargs)


def test_domain_il_is_refused_before_training():
    model = ContinualClassifier(hidden=[16], num_outputs=2)
    ERACE().check_setup(stubs.task_data(scenario="task"), model)
    with pytest.raises(ContractError, match=r"ERACE masks the classes absent .* data.scenario=domain .* class-il and "
                                            r"task-il only"):
        ERACE().check_setup(stubs.task_data(scenario="domain"), model)


def test_a_method_that_weights_the_current_batch_is_refused_next_to_it():
    er = ERACE()
    model = ContinualClassifier(hidden=[16], num_outputs=6)
    with pytest.raises(ContractError, match="ERACE replaces the current batch's cross-entropy .* ReservoirER weights"):
        er.setup(stub_trainer(callbacks=[er, ReservoirER()]), model, "fit")


def test_units_are_ranked_in_the_order_the_tasks_bring_them():
    trainer = stub_trainer(units=[[5, 3], [1, 0]], num_outputs=8)
    # 5, 3, 1, 0 by task; then the units no task uses (2, 4, 6, 7) by index.
    assert stream_ranks(trainer.datamodule).tolist() == [3, 2, 4, 1, 5, 0, 6, 7]


@pytest.mark.parametrize("labels, highest, allowed", [
    ([2, 2], 2, [2, 3, 4, 5]),  # task 1's first class: 0 and 1 (seen, absent) masked, the unseen 3..5 not
    ([3, 3], 3, [3, 4, 5]),  # 2 seen, absent: masked
    ([2, 2], 3, [2, 3, 4, 5]),  # Mammoth's seen_so_far.max(): 3 absent but the highest seen: not masked
    ([2, 3], 3, [2, 3, 4, 5]),
    ([0, 4], 4, [0, 4, 5]),  # a replayed-looking mix: present classes and from the highest on
    ([4, 4], 5, [4]),  # the last class seen: only the present ones (Mammoth's `< num_classes - 1`)
    ([4, 5], 5, [4, 5]),
])
def test_the_mask_is_mammoths(labels, highest, allowed):
    rank = torch.arange(6)
    y = torch.tensor(labels)
    assert asymmetric_units(y, torch.tensor(highest), rank).nonzero().flatten().tolist() == allowed
    # Mammoth's construction, literally (models/er_ace.py @ 361d4c0), on the same seen classes.
    mask = torch.zeros(2, 6)
    mask[:, y.unique()] = 1
    if highest < 6 - 1:
        mask[:, highest:] = 1
    assert mask[0].nonzero().flatten().tolist() == allowed


def step_batch(x, y, t, i, n):
    return x[i : i + n], y[i : i + n], t[i : i + n]


def test_the_first_task_is_plain_cross_entropy_and_its_stream_fills_a_reservoir():
    torch.manual_seed(0)
    model = ContinualClassifier(hidden=[16], num_outputs=6)
    er = ERACE(buffer_size=10, minibatch_size=4)
    trainer = stub_trainer(callbacks=[er])
    er.setup(trainer, model, "fit")
    reservoir, generator = StreamMemory(10), torch.Generator().manual_seed(run_seed())
    x, y = torch.randn(24, 784), torch.tensor([0, 1]).repeat(12)
    t = torch.zeros(24, dtype=torch.long)
    for step in range(4):  # four batches of 6: the buffer fills (10) and then replaces
        batch = step_batch(x, y, t, 6 * step, 6)
        er.on_train_batch_start(trainer, model, batch, step)
        logits, _ = model.scenario_forward(batch[0], batch[2])
        # Mammoth's self.task == 0: the module's cross-entropy, no replay, even with a filled buffer.
        assert er.current_loss_weight(trainer, model) == 1.0 and er.loss_terms(trainer, model, batch, (logits, ())) == {}
        er.on_train_batch_end(trainer, model, None, batch, step)
        reservoir.add(*batch, generator)
    assert er.highest.item() == 1 and er.memory.seen == 24 and len(er.memory) == 10
    for k, v in reservoir.fields.items():  # no replay drew from the generator: the same slots
        assert torch.equal(er.memory.fields[k], v), k


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_the_incoming_batch_competes_only_with_its_classes_and_the_replay_with_all(scenario):
    torch.manual_seed(0)
    model = ContinualClassifier(hidden=[16], num_outputs=6)
    model.unit_mask = (torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
                       if scenario == "task" else None)
    er = ERACE(buffer_size=30, minibatch_size=5)
    trainer = stub_trainer(scenario=scenario, callbacks=[er])
    er.setup(trainer, model, "fit")
    # Task 0: eight examples of 0 and 1 enter the buffer.
    first = (torch.randn(8, 784), torch.tensor([0, 1]).repeat(4), torch.zeros(8, dtype=torch.long))
    er.on_train_batch_start(trainer, model, first, 0)
    er.on_train_batch_end(trainer, model, None, first, 0)
    # Task 1: a batch of class 2 only, 3 never seen.
    trainer.datamodule.current_task = 1
    batch = (torch.randn(4, 784), torch.full((4,), 2), torch.ones(4, dtype=torch.long))
    er.on_train_batch_start(trainer, model, batch, 1)
    assert er.highest.item() == 2 and er.current_loss_weight(trainer, model) == 0.0
    masked_logits, _ = model.scenario_forward(batch[0], batch[2])
    logits = masked_logits.detach().requires_grad_()
    state = er.generator.get_state()
    terms = er.loss_terms(trainer, model, batch, (logits, ()))
    assert set(terms) == {"current", "replay"}
    # By hand: class-IL, the units 2..5 (present, and from the highest seen on); task-IL: the task's 2 and 3 of them.
    allowed = [2, 3, 4, 5] if scenario == "class" else [2, 3]
    z = logits.detach()[:, allowed]
    expected = (torch.logsumexp(z, 1) - z[:, 0]).mean()
    assert terms["current"].item() == pytest.approx(expected.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(terms["current"], logits)
    assert torch.all(grad[:, [0, 1]] == 0)  # the old classes, absent from the batch: no gradient from it
    expected_grad = (torch.softmax(z, 1) - F.one_hot(torch.zeros(4, dtype=torch.long), len(allowed))) / 4
    assert torch.allclose(grad[:, allowed], expected_grad, atol=1e-7)
    # The replay: the plain cross-entropy of the drawn buffer examples (every unit in class-IL, their task's in task-IL).
    replayed = er.memory.sample(5, torch.Generator().set_state(state))
    replay_logits, _ = model.scenario_forward(replayed["x"], replayed["t"])
    assert terms["replay"].item() == pytest.approx(F.cross_entropy(replay_logits, replayed["y"]).item(), rel=1e-6)
    if scenario == "class":  # no unit masked: the replay's gradient reaches the unseen units too
        (replay_grad,) = torch.autograd.grad(terms["replay"], model.network.parameters())[-1:]
        assert torch.all(replay_grad[[4, 5]] != 0)
    # Mammoth's loss: CE(masked current) + CE(replay), the module's cross-entropy weighted 0.
    mammoth = F.cross_entropy(logits.detach().masked_fill(~torch.isin(torch.arange(6), torch.tensor(allowed)),
                                                          torch.finfo(logits.dtype).min), batch[1])
    assert terms["current"].item() == pytest.approx(mammoth.item(), rel=1e-6)


def test_a_batch_without_its_tasks_other_class_is_one_unit_in_task_il():
    """Task-IL with 3 seen: a batch of 3 only leaves the task's unit 3 alone (2 is masked), so its term is 0."""
    model = ContinualClassifier(hidden=[16], num_outputs=6)
    model.unit_mask = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=torch.bool)
    er = ERACE(buffer_size=30, minibatch_size=5)
    trainer = stub_trainer(scenario="task", callbacks=[er])
    er.setup(trainer, model, "fit")
    trainer.datamodule.current_task = 1
    both = (torch.randn(2, 784), torch.tensor([2, 3]), torch.ones(2, dtype=torch.long))
    er.on_train_batch_start(trainer, model, both, 0)
    er.on_train_batch_end(trainer, model, None, both, 0)
    batch = (torch.randn(3, 784), torch.full((3,), 3), torch.ones(3, dtype=torch.long))
    er.on_train_batch_start(trainer, model, batch, 1)
    logits, _ = model.scenario_forward(batch[0], batch[2])
    assert er.loss_terms(trainer, model, batch, (logits, ()))["current"].item() == 0.0


@pytest.mark.parametrize("scenario", ["class", "task"])
def test_the_buffer_is_a_reservoir_of_the_whole_stream(tmp_path, scenario):
    er = ERACE(buffer_size=50, minibatch_size=8)
    trainer, results = fit_synthetic(tmp_path, [er], scenario=scenario)
    assert results["complete"] and results["method"] == "er_ace" and results["scenario"] == scenario
    assert {"train/loss_current", "train/loss_replay"} <= set(trainer.logged_metrics)
    # Three tasks of 8 steps of 16: every example offered, 50 kept, from every task (the last one too).
    assert er.memory.seen == 3 * 8 * 16 and len(er.memory) == 50
    assert set(er.memory.t.tolist()) == {0, 1, 2}
    assert set(er.memory.y.tolist()) <= {c for task in TASKS for c in task}
    assert er.highest.item() == 5  # the last task's second class, in stream order


def test_a_run_resumed_mid_task_keeps_the_same_buffer_classes_and_random_stream(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight_er = ERACE(buffer_size=40, minibatch_size=8)
    _, straight = fit_in_epochs(tmp_path / "straight", [straight_er, checkpoints], scenario="class")
    # The first of task 2's two epochs: 12 steps of 16 seen, the 40 slots full and being replaced.
    ckpt = next((tmp_path / "straight").rglob("epoch=2-step=12.ckpt"))
    saved = torch.load(ckpt, weights_only=True)["callbacks"][straight_er.state_key]
    assert saved["memory"]["seen"] == 12 * 16 and len(saved["memory"]["fields"]["y"]) == 40
    assert saved["highest"].item() == 3  # task 2's classes (2, 3) seen, task 3's not yet
    resumed_er = ERACE(buffer_size=40, minibatch_size=8)
    _, resumed = fit_in_epochs(tmp_path / "resumed", [resumed_er], scenario="class", ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"] and resumed["seen_loss"] == straight["seen_loss"]
    assert resumed_er.memory.seen == straight_er.memory.seen == 3 * 2 * 4 * 16
    for k, v in straight_er.memory.fields.items():
        assert torch.equal(resumed_er.memory.fields[k], v), k
    assert torch.equal(resumed_er.generator.get_state(), straight_er.generator.get_state())
    assert resumed_er.highest.item() == straight_er.highest.item() == 5


@pytest.mark.mnist
def test_er_ace_forgets_less_than_naive_training_on_shrunk_class_il_split_mnist(run_cli):
    naive = shrunk_run(run_cli, None, *STREAM)
    ace = shrunk_run(run_cli, "er_ace", *STREAM)
    assert ace["method"] == "er_ace" and naive["method"] == "none"
    # Measured (seed 0): naive ACC 0.326, BWT -0.945; ER-ACE ACC 0.895, BWT -0.024 (~12 s of CPU).
    assert naive["acc"] < 0.4 and ace["acc"] > naive["acc"] + 0.4
    assert ace["bwt"] > naive["bwt"] + 0.6
