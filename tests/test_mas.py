"""Memory Aware Synapses: the importance against a loop over examples, accumulated over tasks,
the penalty, the checkpoint state, and less forgetting than naive fine-tuning on shrunk MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from shrunk_mnist import shrunk_run

from lightning_cl.methods import MAS
from lightning_cl.classifier import ContinualClassifier


def stub_trainer(x: torch.Tensor, batch: int = 8, num_tasks: int = 3) -> SimpleNamespace:
    t = torch.zeros(len(x), dtype=torch.long)
    y = torch.zeros_like(t)
    batches = [(x[i : i + batch], y[i : i + batch], t[i : i + batch]) for i in range(0, len(x), batch)]
    return SimpleNamespace(datamodule=SimpleNamespace(task_train_loader=lambda task: iter(batches), num_tasks=num_tasks))


@pytest.fixture()
def model_and_data():
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch", hidden=[6], num_outputs=4)
    model.network(torch.randn(32, 784))
    return model, torch.randn(40, 784)


def test_settings_are_validated_and_named():
    with pytest.raises(ValueError, match="MAS init_args.lam=-1"):
        MAS(lam=-1)
    with pytest.raises(ValueError, match="MAS init_args.examples=0"):
        MAS(lam=1.0, examples=0)


def test_importance_is_the_mean_absolute_output_norm_gradient_and_adds_up_over_tasks(model_and_data):
    model, x = model_and_data
    mas, trainer = MAS(lam=1.0, examples=20), stub_trainer(x)
    mas.on_task_end(trainer, model, task=0)
    model.eval()
    rows = []
    for xi in x[:20]:
        model.zero_grad()
        model.network(xi[None])[0].square().sum().backward()
        rows.append({n: p.grad.clone() for n, p in model.network.named_parameters()})
    expected = {n: torch.stack([r[n] for r in rows]).abs().mean(0) for n in rows[0]}
    for name, omega in mas.omega.items():
        assert torch.allclose(omega, expected[name], atol=1e-6), name
    mas.on_task_end(trainer, model, task=1)  # the same data again: twice the importance
    for name, omega in mas.omega.items():
        assert torch.allclose(omega, 2 * expected[name], atol=1e-6), name


def test_penalty_is_zero_at_the_anchor_and_the_importance_weighted_quadratic_elsewhere(model_and_data):
    model, x = model_and_data
    mas, trainer = MAS(lam=0.5, examples=16), stub_trainer(x)
    assert mas.penalty_terms() == []
    mas.on_task_end(trainer, model, task=0)
    assert mas.penalty(model).item() == 0.0
    with torch.no_grad():
        model.network.head.bias += 0.3
    expected = 0.5 * 0.09 * mas.omega["head.bias"].sum()
    assert mas.penalty(model).item() == pytest.approx(expected.item(), rel=1e-5)
    state = mas.state_dict()
    restored = MAS(lam=0.5)
    restored.load_state_dict(state)
    restored.on_train_start(trainer, model)
    assert restored.penalty(model).item() == mas.penalty(model).item()


@pytest.mark.mnist
def test_mas_forgets_less_than_naive_fine_tuning_on_shrunk_split_mnist(run_cli):
    naive = shrunk_run(run_cli)
    run = shrunk_run(run_cli, "mas", "--trainer.callbacks.lam", "0.1", "--trainer.callbacks.examples", "200")  # task-IL lam
    assert run["method"] == "mas"
    assert naive["bwt"] < -0.03  # the protocol forgets: otherwise the comparison says nothing
    assert run["bwt"] > naive["bwt"] + 0.03 and run["acc"] > naive["acc"]
