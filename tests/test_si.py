"""Synaptic Intelligence: the path integral on a quadratic loss by hand, the penalty, a resume
mid-task, and less forgetting than naive fine-tuning on shrunk Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from shrunk_mnist import shrunk_run

from lightning_cl.methods import SI

A = torch.tensor([1.0, 2.0, 4.0])  # curvatures of L = 1/2 sum_i a_i theta_i^2
THETA0 = torch.tensor([1.0, -0.5, 0.25])
LR = 0.1


def quadratic_module() -> SimpleNamespace:
    network = torch.nn.Module()
    network.theta = torch.nn.Parameter(THETA0.clone())
    return SimpleNamespace(network=network, device=torch.device("cpu"))


def sgd_steps(si: SI, module: SimpleNamespace, steps: int, optimizer: torch.optim.Optimizer) -> None:
    """Training steps as Lightning calls SI's hooks: backward, on_before_optimizer_step, step, on_train_batch_end."""
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (A * module.network.theta.square()).sum()).backward()
        si.on_before_optimizer_step(None, module, optimizer)
        optimizer.step()
        si.on_train_batch_end(None, module, None, None, 0)


def test_settings_are_validated_and_named():
    with pytest.raises(ValueError, match="SI init_args.c=-1"):
        SI(c=-1)
    with pytest.raises(ValueError, match="SI init_args.xi=0"):
        SI(c=1.0, xi=0)


def test_importance_on_a_quadratic_loss_is_the_normalised_path_integral():
    module, si, steps = quadratic_module(), SI(c=2.0, xi=0.1), 5
    optimizer = torch.optim.SGD(module.network.parameters(), lr=LR)
    si.on_task_start(None, module, 0)
    sgd_steps(si, module, steps, optimizer)
    si.consolidate(None, module, 0)
    # SGD: theta_k = (1 - lr a)^k theta0, g_k = a theta_k, delta_k = -lr a theta_k, so
    # w = sum_k lr a^2 theta_k^2 and Delta = theta_K - theta0.
    thetas = [(1 - LR * A) ** k * THETA0 for k in range(steps + 1)]
    w = sum(LR * A**2 * theta**2 for theta in thetas[:-1])
    omega = w / ((thetas[-1] - THETA0) ** 2 + 0.1)
    assert torch.allclose(si.omega["theta"], omega, rtol=1e-5)
    assert torch.equal(si.anchor["theta"], module.network.theta.detach())

    assert si.penalty(module).item() == 0.0  # at the anchor
    with torch.no_grad():
        module.network.theta += torch.tensor([0.1, 0.0, -0.2])
    expected = 2.0 * (omega[0] * 0.01 + omega[2] * 0.04)
    assert si.penalty(module).item() == pytest.approx(expected.item(), rel=1e-5)

    si.on_task_start(None, module, 1)  # a second task adds its own importance
    sgd_steps(si, module, 2, optimizer)
    first = si.omega["theta"].clone()
    si.consolidate(None, module, 1)
    assert (si.omega["theta"] > first).all()


def test_the_path_integral_takes_the_gradient_with_si_s_own_penalty():
    # As the reference code (update_importance_estimates reads p.grad of the whole loss, to which
    # train_a_batch added reg_strength * surrogate_loss): g = a theta + 2 c omega (theta - theta*).
    module, si, c = quadratic_module(), SI(c=2.0, xi=0.1), 2.0
    optimizer = torch.optim.SGD(module.network.parameters(), lr=LR)
    si.on_task_start(None, module, 0)
    sgd_steps(si, module, 3, optimizer)
    si.consolidate(None, module, 0)
    omega, anchor = si.omega["theta"].clone(), si.anchor["theta"].clone()
    si.on_task_start(None, module, 1)
    theta, w, w_loss_only = module.network.theta.detach().clone(), torch.zeros(3), torch.zeros(3)
    for _ in range(4):  # SGD by hand: delta = -lr g, so -g * delta = lr g^2
        g = A * theta + 2 * c * omega * (theta - anchor)
        w += LR * g**2
        w_loss_only += LR * g * (A * theta)
        theta = theta - LR * g
    sgd_steps(si, module, 4, optimizer)
    assert torch.allclose(module.network.theta.detach(), theta, rtol=1e-6)
    assert torch.allclose(si.path["theta"], w, rtol=1e-5)
    assert not torch.allclose(si.path["theta"], w_loss_only, rtol=1e-2)  # the data loss's gradient alone


def test_no_penalty_before_the_first_task_ends():
    module, si = quadratic_module(), SI(c=1.0)
    si.on_task_start(None, module, 0)
    assert si.penalty_terms() == []


def test_a_resume_mid_task_continues_the_path_integral_exactly():
    module, si = quadratic_module(), SI(c=1.0)
    optimizer = torch.optim.SGD(module.network.parameters(), lr=LR)
    si.on_task_start(None, module, 0)
    sgd_steps(si, module, 3, optimizer)
    state = si.state_dict()
    assert state["omega"] is None and state["path"]["theta"].device.type == "cpu"
    resumed = SI(c=1.0)
    resumed.load_state_dict(state)
    resumed.on_train_start(None, module)
    module2 = quadratic_module()
    module2.network.theta.data.copy_(module.network.theta.data)
    sgd_steps(si, module, 3, optimizer)
    sgd_steps(resumed, module2, 3, torch.optim.SGD(module2.network.parameters(), lr=LR))
    si.consolidate(None, module, 0)
    resumed.consolidate(None, module2, 0)
    assert torch.equal(si.omega["theta"], resumed.omega["theta"])


@pytest.mark.mnist
def test_si_forgets_less_than_naive_fine_tuning_on_shrunk_split_mnist(run_cli):
    naive = shrunk_run(run_cli)
    # The task-IL c of the published Split-MNIST protocol (van de Ven, Tuytelaars & Tolias 2022).
    run = shrunk_run(run_cli, "si", "--trainer.callbacks.c", "10")
    assert run["method"] == "si"
    assert naive["bwt"] < -0.03  # the protocol forgets: otherwise the comparison says nothing
    assert run["bwt"] > naive["bwt"] + 0.03 and run["acc"] > naive["acc"]
