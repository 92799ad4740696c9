"""Orthogonal Gradient Descent and the callbacks of its runs: the hooks on small models, a
checkpoint round trip on shrunk MNIST, and the notebook's results on the real MNIST."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cl.callbacks import AccuracyThreshold, TaskLearningRate
from lightning_cl.methods import OrthogonalGradientDescent
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.data.split_mnist import SplitMNIST
from lightning_cl.maths.gradients import flatten_grads, orthonormality_error
from lightning_cl.task_loop import TaskLoop

N_PARAMS = 784 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10 + 2 * (120 + 84)  # MLP with BatchNorm


def stub_trainer(x: torch.Tensor, y: torch.Tensor, batch: int = 16) -> SimpleNamespace:
    t = torch.zeros_like(y)
    batches = [(x[i : i + batch], y[i : i + batch], t[i : i + batch]) for i in range(0, len(y), batch)]
    datamodule = SimpleNamespace(task_train_loader=lambda task: iter(batches), num_tasks=2)
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: t)
    return SimpleNamespace(datamodule=datamodule, world_size=1, strategy=strategy, global_step=0)


@pytest.fixture()
def model_and_data():
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch")
    x, y = torch.randn(64, 784), torch.randint(0, 4, (64,))
    return model, x, y


# ----------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "gem"}, "OrthogonalGradientDescent init_args.variant='gem'"),
    ({"examples_per_task": 0}, "OrthogonalGradientDescent init_args.examples_per_task=0"),
    ({"eps": 0.0}, "OrthogonalGradientDescent init_args.eps=0.0"),
    ({"chunk_size": 0}, "OrthogonalGradientDescent init_args.chunk_size=0"),
    ({"project": "step"}, "OrthogonalGradientDescent init_args.project='step'"),
])
def test_ogd_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        OrthogonalGradientDescent(**kwargs)


def test_threshold_and_lr_factor_are_validated():
    with pytest.raises(ValueError, match="AccuracyThreshold init_args.threshold=1.5"):
        AccuracyThreshold(1.5)
    with pytest.raises(ValueError, match="TaskLearningRate init_args.factor=0"):
        TaskLearningRate(0)


# ----------------------------------------------------------------- hooks on a small model
@pytest.mark.parametrize("in_place", [True, False], ids=["grads-in-flat-buffer", "grads-replaced"])
def test_the_step_gradient_is_projected_off_the_basis(model_and_data, in_place):
    model, x, y = model_and_data
    ogd = OrthogonalGradientDescent()
    trainer = stub_trainer(x, y)
    ogd.on_train_start(trainer, model)
    ogd.on_task_end(trainer, model, task=0)  # one mean-loss gradient
    assert ogd.basis.shape == (1, N_PARAMS) and ogd.vectors_per_task == [1]
    ogd.on_train_epoch_start(trainer, model)
    model.zero_grad()
    logits, hidden = model(x[:8])
    loss = model.loss(logits, hidden, y[:8])
    if in_place:  # as Lightning calls it: backward then fills OGD's flat buffer
        ogd.on_before_backward(trainer, model, loss)
    loss.backward()
    assert all(p.grad is view for p, view in zip(ogd._params, ogd._grad.views)) == in_place
    g = flatten_grads(ogd._params)
    ogd.on_before_optimizer_step(trainer, model, optimizer=None)
    projected = flatten_grads(ogd._params)
    assert (ogd.basis @ projected).abs().max() < 1e-6 * g.norm()
    assert torch.allclose(projected, g - ogd.basis.T @ (ogd.basis @ g), atol=1e-6)
    assert 0 < ogd._removed_sum.item() < 1 and ogd._steps == 1


def test_mean_loss_gradient_is_the_batch_average_and_leaves_batchnorm_statistics_alone(model_and_data):
    model, x, y = model_and_data
    ogd = OrthogonalGradientDescent()
    trainer = stub_trainer(x, y)
    ogd.on_train_start(trainer, model)
    model.eval()
    stats = [b.clone() for b in model.buffers()]
    vector = ogd._mean_loss_gradient(trainer, model, 0)
    assert not model.training  # mode restored
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers()))
    model.train()
    expected = 0
    for xb, yb, _ in trainer.datamodule.task_train_loader(0):
        model.zero_grad()
        F.cross_entropy(model(xb)[0], yb).backward()
        expected = expected + flatten_grads(ogd._params) / 4
    assert torch.allclose(vector, expected, atol=1e-6)


@pytest.mark.parametrize("variant, per_example", [("gtl", 1), ("ave", 1), ("all", 10)])
def test_per_example_variants_store_the_gradients_of_logits_and_project_off_their_span(model_and_data, variant, per_example):
    model, x, y = model_and_data
    ogd = OrthogonalGradientDescent(variant=variant, examples_per_task=20, chunk_size=8)
    trainer = stub_trainer(x, y)
    ogd.on_train_start(trainer, model)
    ogd.on_task_end(trainer, model, task=0)
    stored = ogd.factors.dense_gradients()  # the factors, multiplied out
    assert stored.shape == (20 * per_example, N_PARAMS)
    model.eval()  # per-example gradients are taken with the running statistics
    for i in (0, 19):
        model.zero_grad()
        logits = model(x[i : i + 1])[0][0]
        {"gtl": logits[y[i]], "ave": logits.mean(), "all": logits[0]}[variant].backward()
        assert torch.allclose(stored[i * per_example], flatten_grads(ogd._params), atol=1e-5)
    assert 0 < ogd.basis_size <= 20 * per_example and ogd.vectors_per_task == [ogd.basis_size]
    basis = ogd.orthonormal_basis()
    assert orthonormality_error(basis) < 1e-4
    # A step's gradient loses exactly its component in the span of the stored gradients.
    model.train()
    ogd.on_train_epoch_start(trainer, model)
    model.zero_grad()
    F.cross_entropy(model(x[:8])[0], y[:8]).backward()
    g = flatten_grads(ogd._params)
    ogd.on_before_optimizer_step(trainer, model, optimizer=None)
    projected = flatten_grads(ogd._params)
    assert (stored @ projected).abs().max() < 1e-4 * stored.norm(dim=1).max() * g.norm()
    assert torch.allclose(projected, g - basis.T @ (basis @ g), atol=1e-5 * g.norm().item())
    removed = (g - projected).norm() / g.norm()
    assert ogd._removed_sum.item() == pytest.approx(removed.item(), rel=1e-3) and 0 < removed < 1


def test_state_dict_round_trip_keeps_the_basis(model_and_data):
    model, x, y = model_and_data
    ogd = OrthogonalGradientDescent(variant="gtl", examples_per_task=5)
    trainer = stub_trainer(x, y)
    ogd.on_train_start(trainer, model)
    ogd.on_task_end(trainer, model, task=0)
    state = ogd.state_dict()
    restored = OrthogonalGradientDescent(variant="gtl", examples_per_task=5)
    restored.load_state_dict(state)
    restored.on_train_start(trainer, model)
    assert all(torch.equal(a, b) for a, b in zip(restored.factors.inputs, ogd.factors.inputs))
    assert torch.equal(restored.orthonormal_basis(), ogd.orthonormal_basis())
    assert restored.vectors_per_task == ogd.vectors_per_task == [5]


def test_learning_rate_is_base_times_factor_from_the_second_task_without_compounding():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    trainer = SimpleNamespace(optimizers=[opt])
    schedule = TaskLearningRate(0.2)
    lrs = []
    for task in range(4):
        schedule.on_task_start(trainer, None, task)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1e-4, 2e-5, 2e-5, 2e-5])


def test_threshold_ends_the_task_when_the_epoch_accuracy_reaches_it():
    strategy = SimpleNamespace(reduce=lambda t, reduce_op: t)
    trainer = SimpleNamespace(strategy=strategy)
    for acc, ends in [(0.97, False), (0.98, True), (0.99, True)]:
        module = SimpleNamespace(train_epoch_metrics=lambda acc=acc: {"loss": 0.1, "acc": acc}, device="cpu")
        assert AccuracyThreshold(0.98).task_should_end(trainer, module, 0) is ends


# ----------------------------------------------------------------- checkpoint round trip on shrunk MNIST
TASKS = [[1, 2], [3, 4], [5, 6]]


def fit(mnist_dir, root, callbacks=(), ckpt_path=None):
    seed_everything(0, verbose=False)
    # GTL on 8 examples: registration takes no time, unlike a pass over the task's training set.
    ogd, lr = OrthogonalGradientDescent(variant="gtl", examples_per_task=8), TaskLearningRate(0.2)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=5, limit_val_batches=0, log_every_n_steps=1, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=1), ogd, lr, *callbacks],
    )
    trainer.fit(ContinualClassifier(norm="batch"), SplitMNIST(tasks=TASKS, data_dir=mnist_dir), ckpt_path=ckpt_path)
    return trainer, ogd, json.loads((Path(trainer.log_dir) / "results.json").read_text())


@pytest.mark.mnist
def test_checkpoint_carries_the_basis_and_resuming_gives_the_uninterrupted_run(mnist_dir, tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    trainer, straight, results = fit(mnist_dir, tmp_path / "straight", [checkpoints])
    assert straight.vectors_per_task == [8, 8]  # the last task's gradients are not needed
    assert orthonormality_error(straight.orthonormal_basis()) < 1e-4  # float32 dot products over ~10^5 entries
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.2)
    assert set(trainer.logged_metrics) >= {"ogd/basis_size", "ogd/removed_frac"}

    ckpt_path = Path(checkpoints.dirpath) / "epoch=0-step=5.ckpt"  # end of task 1
    state = torch.load(ckpt_path, weights_only=False)["callbacks"][straight.state_key]
    assert state["factors"]["dense"].shape == (8, 2 * (120 + 84)) and state["vectors_per_task"] == [8]  # BatchNorm's

    trainer2, resumed, results2 = fit(mnist_dir, tmp_path / "resumed", ckpt_path=ckpt_path)
    assert torch.allclose(resumed.orthonormal_basis(), straight.orthonormal_basis(), atol=1e-6)
    assert results2["accuracy_matrix"] == results["accuracy_matrix"]
    assert trainer2.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.2)


# ----------------------------------------------------------------- the notebook's results on MNIST
@pytest.fixture(scope="module")
def naive_bn(run_cli):
    # Naive fine-tuning ends at ~0.20 (only the last task's classes) however long each task trains.
    return run_cli("split_mnist/sequential_bn.yaml", "--task_loop.epochs_per_task", "1")


@pytest.mark.mnist
def test_ogd_batchnorm_at_098_keeps_old_tasks_far_above_naive_fine_tuning(run_cli, naive_bn):
    ogd = run_cli("split_mnist/ogd_bn.yaml")
    assert ogd["seen_accuracy"][0] > 0.98
    assert ogd["final_seen_accuracy"] > naive_bn["final_seen_accuracy"] + 0.05  # notebook 0.292 vs 0.199
    assert ogd["seen_accuracy"][1] > 0.55  # notebook 0.660
    assert all(1 <= e <= 30 for e in ogd["epochs_per_task"])
    # Old classes keep probability mass: the seen-class loss stays far below naive fine-tuning's.
    assert ogd["seen_loss"][-1] < 0.6 * naive_bn["seen_loss"][-1]


@pytest.mark.mnist
def test_ogd_batchnorm_at_095_with_l1_forgets_least(run_cli, naive_bn):
    plain = run_cli("split_mnist/ogd_bn_t95.yaml")
    l1 = run_cli("split_mnist/ogd_bn_t95_l1.yaml")
    assert plain["final_seen_accuracy"] > naive_bn["final_seen_accuracy"] + 0.08  # notebook 0.369
    assert l1["final_seen_accuracy"] > naive_bn["final_seen_accuracy"] + 0.12  # notebook 0.39-0.47
    assert l1["seen_accuracy"][1] > 0.75  # notebook 0.866
