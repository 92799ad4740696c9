import json

import pytest
import torch
from torch import nn

from lightning_cl.classifier import l1_activation_penalty
from lightning_cl.data.scenario import mask_logits, task_labels
from lightning_cl.evaluation import eval_forward, evaluate_tasks, population_sparsity
from lightning_cl.results import write_json_atomic


def test_population_sparsity_counts_exact_zeros_per_layer_and_overall():
    h1 = torch.tensor([[0.0, 1.0], [0.0, 0.0]])  # 3 of 4 zero
    h2 = torch.tensor([[0.5, 0.0, 2.0, 1e-9]])  # 1 of 4 zero (a tiny value is not zero)
    assert population_sparsity((h1, h2)) == {"h1": 0.75, "h2": 0.25, "overall": 0.5}


def test_l1_penalty_is_sum_of_mean_absolute_activations():
    hidden = (torch.tensor([[1.0, -3.0]]), torch.tensor([[2.0, 2.0, 2.0]]))
    assert l1_activation_penalty(hidden).item() == pytest.approx(2.0 + 2.0)


def _sets(pairs):
    """Per-task test sets ``(x, y, t)`` from ``[(x, y), ...]``."""
    return [(x, y, torch.full_like(y, t)) for t, (x, y) in enumerate(pairs)]


def test_evaluate_tasks_fills_every_task_and_pools_the_seen_tasks():
    def predicts_class_1(x, t):
        logits = torch.full((len(x), 10), -10.0)
        logits[:, 1] = 10.0
        return logits, (x, x)

    sets = _sets([(torch.tensor([[0.0], [1.0], [0.0]]), torch.tensor([1, 2, 1])),
                  (torch.tensor([[0.0], [2.0], [0.0]]), torch.tensor([3, 4, 4]))])
    ev = evaluate_tasks(predicts_class_1, sets, seen_tasks=1)
    assert ev.task_accuracy == [pytest.approx(2 / 3), 0.0]
    assert ev.seen_accuracy == pytest.approx(2 / 3)
    assert ev.seen_loss > 0
    assert ev.sparsity["h1"] == pytest.approx(2 / 3)  # seen examples only: x = 0, 1, 0
    assert evaluate_tasks(predicts_class_1, sets, seen_tasks=2).seen_accuracy == pytest.approx(2 / 6)


def test_task_il_masking_scores_a_model_perfect_within_tasks_at_1_where_class_il_gives_0_5():
    # Tasks [0, 1] and [2, 3]. The model ranks the true class first within its task, but puts
    # the other task's class (c + 2 mod 4) above it for task 1's examples: class-IL gets half.
    y = torch.tensor([0, 1, 2, 3])
    tasks = [[0, 1], [2, 3]]

    def model(x, t, unit_mask):
        logits = torch.full((len(x), 4), -5.0)
        logits[torch.arange(len(x)), y[x.long().squeeze(1)]] = 1.0
        first_task = y[x.long().squeeze(1)] < 2
        logits[first_task, (y[x.long().squeeze(1)][first_task] + 2) % 4] = 2.0
        return mask_logits(logits, t, unit_mask), (x,)

    sets = _sets([(torch.tensor([[0.0], [1.0]]), y[:2]), (torch.tensor([[2.0], [3.0]]), y[2:])])
    for scenario, expected in (("class", 0.5), ("task", 1.0)):
        mask = task_labels(scenario, tasks, num_classes=4).unit_mask()
        ev = evaluate_tasks(lambda x, t: model(x, t, mask), sets, seen_tasks=2)
        assert ev.seen_accuracy == expected, scenario
    assert task_labels("class", tasks, 4).unit_mask() is None


def test_eval_forward_restores_train_mode():
    net = nn.Sequential()
    net.forward = lambda x: (torch.zeros(len(x), 10), (x,))
    net.train()
    eval_forward(net, torch.zeros(2, 1))
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
