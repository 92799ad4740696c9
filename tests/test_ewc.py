"""EWC and online EWC: the Fisher against a loop over examples, the penalty by hand, the
checkpoint state, and less forgetting than naive fine-tuning on shrunk Split-MNIST."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from shrunk_mnist import shrunk_run

from lightning_cl.methods import EWC, OnlineEWC
from lightning_cl.classifier import ContinualClassifier


def stub_trainer(x: torch.Tensor, y: torch.Tensor, batch: int = 8, num_tasks: int = 3) -> SimpleNamespace:
    t = torch.zeros_like(y)
    batches = [(x[i : i + batch], y[i : i + batch], t[i : i + batch]) for i in range(0, len(y), batch)]
    return SimpleNamespace(datamodule=SimpleNamespace(task_train_loader=lambda task: iter(batches), num_tasks=num_tasks))


@pytest.fixture()
def model_and_data():
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch", hidden=[6], num_outputs=4)
    model.network(torch.randn(32, 784))  # BatchNorm statistics of their own
    return model, torch.randn(40, 784), torch.randint(0, 4, (40,))


def shift_parameters(model: ContinualClassifier, delta: float) -> None:
    with torch.no_grad():
        for p in model.network.parameters():
            p.add_(delta)


@pytest.mark.parametrize("cls, kwargs, message", [
    (EWC, {"lam": -1.0}, "EWC init_args.lam=-1.0"),
    (EWC, {"lam": 1.0, "fisher_examples": 0}, "EWC init_args.fisher_examples=0"),
    (OnlineEWC, {"lam": 1.0, "gamma": 1.5}, "OnlineEWC init_args.gamma=1.5"),
    (EWC, {"lam": 1.0, "fisher": "true"}, "EWC init_args.fisher='true' is not supported; use 'empirical' or 'expected'"),
])
def test_settings_are_validated_and_named(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_fisher_is_the_mean_squared_true_label_log_likelihood_gradient_over_the_first_examples(model_and_data):
    model, x, y = model_and_data
    ewc = EWC(lam=1.0, fisher_examples=20)
    ewc.on_task_end(stub_trainer(x, y), model, task=0)
    model.eval()
    rows = []
    for xi, yi in zip(x[:20], y[:20]):  # the first 20 examples of the pass, one at a time
        model.zero_grad()
        F.log_softmax(model.network(xi[None])[0], dim=1)[0, yi].backward()
        rows.append({n: p.grad.clone() for n, p in model.network.named_parameters()})
    for name, fisher in ewc.fishers[0].items():
        assert torch.allclose(fisher, torch.stack([r[name] for r in rows]).square().mean(0), atol=1e-7), name
    assert all(torch.equal(a, p) for a, p in zip(ewc.anchors[0].values(), model.network.parameters()))


def test_penalty_is_zero_at_the_anchor_and_the_fisher_weighted_quadratic_elsewhere(model_and_data):
    model, x, y = model_and_data
    ewc, trainer = EWC(lam=3.0, fisher_examples=16), stub_trainer(x, y)
    assert ewc.penalty_terms() == []  # nothing consolidated yet
    ewc.on_task_end(trainer, model, task=0)
    assert ewc.penalty(model).item() == 0.0
    shift_parameters(model, 0.1)
    fisher_sum = sum(f.sum() for f in ewc.fishers[0].values())
    penalty = ewc.penalty(model).item()
    assert penalty == pytest.approx(3.0 / 2 * 0.01 * fisher_sum.item(), rel=1e-4)
    ewc.on_task_end(trainer, model, task=1)  # a second anchor, 0.1 away from the first
    shift_parameters(model, 0.1)
    expected = 3.0 / 2 * (0.04 * fisher_sum + 0.01 * sum(f.sum() for f in ewc.fishers[1].values()))
    assert ewc.penalty(model).item() == pytest.approx(expected.item(), rel=1e-4)
    ewc.on_task_end(trainer, model, task=2)  # the last task: nothing after it to protect
    assert len(ewc.fishers) == 2


def test_online_ewc_keeps_one_running_fisher_and_the_latest_anchor(model_and_data):
    model, x, y = model_and_data
    online, ewc = OnlineEWC(lam=1.0, gamma=0.5, fisher_examples=16), EWC(lam=1.0, fisher_examples=16)
    trainer = stub_trainer(x, y)
    for task in range(2):
        online.on_task_end(trainer, model, task)
        ewc.on_task_end(trainer, model, task)
        shift_parameters(model, 0.2)
    assert len(online.fishers) == len(online.anchors) == 1
    for name, f in online.fishers[0].items():
        assert torch.allclose(f, 0.5 * ewc.fishers[0][name] + ewc.fishers[1][name])
        assert torch.equal(online.anchors[0][name], ewc.anchors[1][name])


def test_state_dict_round_trip_restores_the_penalty(model_and_data):
    model, x, y = model_and_data
    ewc, trainer = OnlineEWC(lam=2.0, fisher_examples=16), stub_trainer(x, y)
    ewc.on_task_end(trainer, model, task=0)
    shift_parameters(model, 0.05)
    state = ewc.state_dict()
    assert all(v.device.type == "cpu" for f in state["fishers"] + state["anchors"] for v in f.values())
    restored = OnlineEWC(lam=2.0)
    restored.load_state_dict(state)
    restored.on_train_start(trainer, model)
    assert restored.penalty(model).item() == ewc.penalty(model).item() > 0


@pytest.mark.mnist
@pytest.mark.parametrize("method", ["ewc", "online_ewc"])
def test_ewc_forgets_less_than_naive_fine_tuning_on_shrunk_split_mnist(run_cli, method):
    naive = shrunk_run(run_cli)
    # The task-IL lambda of the published Split-MNIST protocol (van de Ven, Tuytelaars & Tolias
    # 2022, 'Three types of incremental learning', Nature Machine Intelligence); a Fisher on
    # 200 examples keeps the test short.
    run = shrunk_run(run_cli, method, "--trainer.callbacks.lam", "1e5", "--trainer.callbacks.fisher_examples", "200")
    assert run["method"] == method
    assert naive["bwt"] < -0.03  # the protocol forgets: otherwise the comparison says nothing
    assert run["bwt"] > naive["bwt"] + 0.03 and run["acc"] > naive["acc"]
