import json

import pytest
import torch
from torch import nn

from lightning_cl.classifier import l1_activation_penalty
from lightning_cl.evaluation import evaluate_tasks, population_sparsity
from lightning_cl.results import write_json_atomic


def test_population_sparsity_counts_exact_zeros_per_layer_and_overall():
    h1 = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # 3 of 4 zero
    h2 = torch.tensor([[0.5, 0.0, 2.0, 1e-9]])  # 1 of 4 zero (a tiny value is not zero)
    assert population_sparsity((h1, h2)) == {"h1": 0.75, "h2": 0.25, "overall": 0.5}


def test_l1_penalty_is_sum_of_mean_absolute_activations():
    hidden = (torch.tensor([[1.0, -3.0]]), torch.tensor([[2.0, 2.0, 2.0]]))
    assert l1_activation_penalty(hidden).item() == pytest.approx(2.0 + 2.0)


class Oracle(nn.Module):
    """Predicts class 1 for everything; one hidden layer of the input itself."""

    def forward(self, x):
        logits = torch.full((len(x), 10), -10.0)
        logits[:, 1] = 10.0
        return logits, (x, x)


def test_evaluate_tasks_fills_every_task_and_seen_classes():
    y = torch.tensor([1, 2, 1, 3, 4, 4])
    x = torch.tensor([[0.0], [1.0], [0.0], [0.0], [2.0], [0.0]])
    ev = evaluate_tasks(Oracle(), x, y, tasks=[[1, 2], [3, 4]], seen=[1, 2])
    assert ev.task_accuracy == [pytest.approx(2 / 3), 0.0]
    assert ev.seen_accuracy == pytest.approx(2 / 3)
    assert ev.seen_loss > 0
    assert ev.sparsity["h1"] == pytest.approx(2 / 3)  # seen examples only: x = 0, 1, 0


def test_evaluate_tasks_restores_train_mode():
    net = nn.Sequential()
    net.forward = lambda x: (torch.zeros(len(x), 10), (x,))
    net.train()
    evaluate_tasks(net, torch.zeros(2, 1), torch.tensor([0, 1]), [[0, 1]], [0, 1])
    assert net.training


def test_results_are_written_atomically(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": 1})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 2}  # a failed write leaves the old file whole
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
