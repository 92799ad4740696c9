"""GPM: layer inputs, the basis update and the projection on small tensors, the hooks on a small
model, runs in the three scenarios, and less forgetting than naive fine-tuning on shrunk
task-IL Split-MNIST."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from conftest import REPO
from lightning_cl.methods import GPM
from lightning_cl.maths.gradients import gpm_extend, gpm_project_
from lightning_cl.models.mlp import MLP
from lightning_cl.maths.passes import layer_inputs
from method_runs import fit_synthetic


def test_layer_inputs_are_what_each_linear_layer_receives():
    torch.manual_seed(0)
    net = MLP(hidden=(8, 6), in_features=5, num_classes=3)
    x = torch.randn(4, 5)
    inputs = layer_inputs(net, [*net.linears, net.head], x)
    _, (h1, h2) = net(x)
    assert [tuple(i.shape) for i in inputs] == [(4, 5), (4, 8), (4, 6)]
    assert torch.equal(inputs[0], x) and torch.equal(inputs[1], h1) and torch.equal(inputs[2], h2)
    assert not net.linears[0]._forward_pre_hooks  # the hooks are removed


def low_rank(d, n, ranks, generator):
    """``(d, n)`` with singular values ``ranks`` (energy shares known in advance)."""
    u = torch.linalg.qr(torch.randn(d, len(ranks), generator=generator))[0]
    v = torch.linalg.qr(torch.randn(n, len(ranks), generator=generator))[0]
    return u @ torch.diag(torch.tensor(ranks)) @ v.T, u


def test_basis_keeps_the_fewest_directions_that_reach_the_energy_threshold():
    generator = torch.Generator().manual_seed(0)
    r, u = low_rank(20, 30, [3.0, 2.0, 1.0, 0.1], generator)  # energy shares 9, 4, 1, 0.01 of 14.01
    empty = torch.empty(20, 0)
    assert gpm_extend(empty, r, 0.6).shape == (20, 1)  # 9/14 = 0.64
    assert gpm_extend(empty, r, 0.9).shape == (20, 2)  # 13/14 = 0.93
    basis = gpm_extend(empty, r, 0.99)
    assert basis.shape == (20, 3)
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-5)
    assert torch.allclose((basis @ basis.T) @ u[:, :3], u[:, :3], atol=1e-5)  # it spans the top directions


def test_the_first_tasks_basis_keeps_one_direction_fewer_as_the_reference_code_does():
    generator = torch.Generator().manual_seed(0)
    r, _ = low_rank(20, 30, [3.0, 2.0, 1.0, 0.1], generator)  # cumulative energy 0.642, 0.928, 0.9993, 1
    empty = torch.empty(20, 0)
    # main_pmnist.py: r = np.sum(np.cumsum(sval_ratio) < threshold), the directions that stay below it.
    assert [gpm_extend(empty, r, th, first=True).shape[1] for th in (0.6, 0.9, 0.99)] == [0, 1, 2]
    # Eq. 5: the fewest that reach it.
    assert [gpm_extend(empty, r, th).shape[1] for th in (0.6, 0.9, 0.99)] == [1, 2, 3]
    basis = gpm_extend(empty, r, 0.9, first=True)
    assert gpm_extend(basis, r, 0.99, first=True).shape[1] == 3  # a later task: eq. 9, as the reference code


def test_a_later_task_adds_only_directions_for_the_energy_the_basis_misses():
    generator = torch.Generator().manual_seed(1)
    old, u = low_rank(20, 30, [3.0, 2.0], generator)
    basis = gpm_extend(torch.empty(20, 0), old, 0.99)
    assert basis.shape == (20, 2)
    assert gpm_extend(basis, old * 5, 0.99).shape == (20, 2)  # the same inputs again: nothing new
    # New inputs: 90% of their energy in the old span, 10% in one new direction.
    new_dir = torch.randn(20, generator=generator)
    new_dir -= basis @ (basis.T @ new_dir)
    new_dir /= new_dir.norm()
    coeffs = torch.randn(30, generator=generator)
    new = 3.0 * torch.outer(u[:, 0], coeffs) + 1.0 * torch.outer(new_dir, torch.randn(30, generator=generator))
    assert gpm_extend(basis, new, 0.5).shape == (20, 2)  # already captured
    grown = gpm_extend(basis, new, 0.99)
    assert grown.shape == (20, 3) and torch.equal(grown[:, :2], basis)
    assert torch.allclose(grown.T @ grown, torch.eye(3), atol=1e-5)
    assert abs(abs(torch.dot(grown[:, 2], new_dir).item()) - 1) < 1e-4


@pytest.mark.parametrize("bias", [True, False])
def test_projected_gradient_is_orthogonal_to_the_stored_inputs(bias):
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(10, 4, bias=bias)
    inputs = torch.randn(6, 10, generator=generator)  # six old inputs span 6 of 10 dimensions
    rep = torch.cat([inputs, torch.ones(6, 1)], 1) if bias else inputs
    basis = gpm_extend(torch.empty(rep.shape[1], 0), rep.T, 1.0)
    assert basis.shape[1] == 6
    before = layer(inputs).detach()
    loss = layer(torch.randn(8, 10, generator=generator)).square().sum()
    loss.backward()
    gpm_project_(layer.weight.grad, layer.bias.grad if bias else None, basis)
    grad = torch.cat([layer.weight.grad, layer.bias.grad[:, None]], 1) if bias else layer.weight.grad
    assert (grad @ basis).abs().max() < 1e-5 * grad.norm()
    assert grad.norm() > 0.1  # something is left to learn
    with torch.no_grad():  # a step along the projected gradient leaves the old outputs alone
        layer.weight -= layer.weight.grad
        if bias:
            layer.bias -= layer.bias.grad
    assert torch.allclose(layer(inputs), before, atol=1e-4)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": [0.9, 1.5]}, r"GPM init_args.threshold=\[0.9, 1.5\]"),
    ({"threshold": []}, r"GPM init_args.threshold=\[\]"),
    ({"examples": 0}, "GPM init_args.examples=0"),
    ({"project": "weights"}, "GPM init_args.project='weights'"),
    ({"leak_every": 0}, "GPM init_args.leak_every=0"),
])
def test_settings_are_validated_and_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GPM(**kwargs)


def test_a_threshold_per_layer_must_match_the_network(tmp_path):
    with pytest.raises(ValueError, match=r"GPM init_args.threshold=\[0.9, 0.9\].*3 in this network"):
        fit_synthetic(tmp_path, [GPM(threshold=[0.9, 0.9])])


@pytest.mark.parametrize("scenario", ["task", "domain", "class"])
def test_gpm_runs_in_every_scenario_and_keeps_old_layer_inputs_fixed(tmp_path, scenario):
    gpm = GPM(threshold=[0.97], examples=64)
    trainer, results = fit_synthetic(tmp_path, [gpm], scenario=scenario)
    assert results["complete"] and results["method"] == "gpm" and results["scenario"] == scenario
    sizes = [b.shape[1] for b in gpm.bases]
    assert all(0 < k < b.shape[0] for k, b in zip(sizes, gpm.bases)), sizes
    assert trainer.logged_metrics["gpm/basis_layer1"] == sizes[0]


def test_first_layer_outputs_on_old_inputs_stay_put(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    gpm = GPM(threshold=[0.999], examples=256)
    # SGD, as in the paper: Adam rescales each coordinate of the step, which the projection
    # of the gradient cannot account for.
    sgd = {"optimizer": "sgd", "lr": 0.05}
    trainer, _ = fit_synthetic(tmp_path, [gpm, checkpoints], scenario="task", **sgd)
    after_task1 = torch.load(next(tmp_path.rglob("epoch=0-*.ckpt")), weights_only=True)["state_dict"]
    x, _, _ = trainer.datamodule.task_data("train", 0)
    w0, b0 = after_task1["network.linears.0.weight"], after_task1["network.linears.0.bias"]
    layer = trainer.lightning_module.network.linears[0]
    with torch.no_grad():
        old, now = x @ w0.T + b0, layer(x)
    change = ((now - old).norm() / old.norm()).item()
    assert change < 0.05, change
    # Without GPM the same training moves them far more.
    trainer2, _ = fit_synthetic(tmp_path / "naive", [], scenario="task", **sgd)
    with torch.no_grad():
        naive_change = ((trainer2.lightning_module.network.linears[0](x) - old).norm() / old.norm()).item()
    assert naive_change > 5 * change


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight_gpm = GPM(examples=64)
    _, straight = fit_synthetic(tmp_path / "straight", [straight_gpm, checkpoints])
    ckpt = next((tmp_path / "straight").rglob("epoch=0-*.ckpt"))  # end of task 1
    resumed_gpm = GPM(examples=64)
    _, resumed = fit_synthetic(tmp_path / "resumed", [resumed_gpm], ckpt_path=ckpt)
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["method_metrics"] == straight["method_metrics"] and straight["method_metrics"]["gpm/leak"][1] > 0
    assert all(torch.equal(a, b) for a, b in zip(resumed_gpm.bases, straight_gpm.bases))


@pytest.mark.mnist
def test_gpm_forgets_less_than_naive_fine_tuning_on_task_il_split_mnist(run_cli):
    shrink = ["--data.scenario", "task", "--data.tasks", "[[0,1],[2,3],[4,5]]", "--task_loop.steps_per_task", "150"]
    naive = run_cli("benchmarks/split_mnist.yaml", *shrink)
    gpm = run_cli("benchmarks/split_mnist.yaml", "-c", str(REPO / "configs/methods/gpm.yaml"), *shrink)
    assert gpm["method"] == "gpm"
    # Measured (seed 0, Adam): naive ACC 0.942, BWT -0.081; GPM ACC 0.984, BWT -0.013 (the paper's projection
    # of the gradient, leaking 13-14% of each step under Adam; project: both gives ACC 0.992, BWT -0.003).
    assert gpm["bwt"] > naive["bwt"] + 0.03 and gpm["acc"] > naive["acc"] + 0.02
