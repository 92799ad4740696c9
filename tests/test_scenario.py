"""Scenarios and benchmarks without MNIST: labels, masks, task ids in batches, permutations and
rotations made once, and bad settings refused at construction."""

import pytest
import torch

from lightning_cl.data.permuted_mnist import PermutedMNIST, task_permutations
from lightning_cl.data.rotated_mnist import RotatedMNIST
from lightning_cl.data.scenario import mask_logits, task_labels
from lightning_cl.data.split_mnist import SplitMNIST
from synthetic import SyntheticTasks

SPLIT = [[0, 1], [2, 3], [4, 5]]


def test_class_il_keeps_the_digits_and_the_ten_way_head():
    labels = task_labels("class", SPLIT, num_classes=10)
    assert labels.num_outputs == 10 and labels.units == ((0, 1), (2, 3), (4, 5))
    assert labels.relabel(torch.tensor([2, 3, 3]), task=1).tolist() == [2, 3, 3]
    assert labels.unit_mask() is None and labels.seen_units(1) == [0, 1, 2, 3]


def test_domain_il_labels_the_position_within_the_task():
    labels = task_labels("domain", [[1, 2], [3, 4], [9, 0]], num_classes=10)
    assert labels.num_outputs == 2
    assert labels.relabel(torch.tensor([9, 0, 0]), task=2).tolist() == [0, 1, 1]
    assert labels.seen_units(2) == [0, 1]


def test_task_il_masks_each_example_to_its_own_task():
    labels = task_labels("task", SPLIT, num_classes=10)
    mask = labels.unit_mask()
    assert mask.shape == (3, 10) and mask[1].nonzero().flatten().tolist() == [2, 3]
    logits = torch.arange(10.0).repeat(2, 1)
    masked = mask_logits(logits, torch.tensor([0, 2]), mask)
    assert masked.argmax(1).tolist() == [1, 5]  # the best unit of each example's own task
    assert torch.isfinite(masked).all() and torch.softmax(masked, 1)[0, 2:].sum() == 0


def test_tasks_that_repeat_classes_get_units_of_their_own_in_class_and_task_il():
    labels = task_labels("class", [list(range(10))] * 3, num_classes=10)
    assert labels.num_outputs == 30 and labels.units[2] == tuple(range(20, 30))
    assert labels.relabel(torch.tensor([0, 9]), task=1).tolist() == [10, 19]
    assert task_labels("domain", [list(range(10))] * 3, 10).num_outputs == 10


@pytest.mark.parametrize("make, message", [
    (lambda: SplitMNIST(scenario="domain", tasks=[[1, 2], [3, 4, 5]]), "every task needs the same number of classes"),
    (lambda: SplitMNIST(scenario="other"), "data.scenario='other' is not a scenario"),
    (lambda: RotatedMNIST(angles=[]), "data.angles is empty"),
    (lambda: RotatedMNIST(angles=[0, float("nan")]), r"data.angles\[1\]"),
    (lambda: PermutedMNIST(num_tasks=0), "data.num_tasks=0"),
    (lambda: SplitMNIST(batch_size=0), "data.batch_size=0"),
])
def test_bad_benchmark_settings_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_permutations_are_seeded_and_the_first_task_is_the_original():
    perms = task_permutations(4, seed=0)
    assert torch.equal(perms[0], torch.arange(784))
    assert all(sorted(p.tolist()) == list(range(784)) for p in perms)
    assert not torch.equal(perms[1], perms[2])
    assert torch.equal(perms[3], task_permutations(6, seed=0)[3])  # independent of the number of tasks
    assert not torch.equal(perms[1], task_permutations(4, seed=1)[1])


def _fake_mnist(dm):
    """Give an MNIST DataModule 20 fake images per split instead of reading the files."""
    g = torch.Generator().manual_seed(0)
    dm._mnist = {s: (torch.rand(20, 784, generator=g), torch.arange(20) % 10) for s in ("train", "val", "test")}
    return dm


def test_permuted_tasks_are_permuted_once_and_labelled_by_scenario():
    dm = _fake_mnist(PermutedMNIST(num_tasks=3))
    x0, y0, t0 = dm.task_data("test", 0)
    x2, y2, t2 = dm.task_data("test", 2)
    assert torch.equal(x2, x0[:, dm.permutations[2]]) and torch.equal(y2, y0) and t2.tolist() == [2] * 20
    assert dm.task_data("test", 2)[0] is x2  # made once, then cached
    class_il = _fake_mnist(PermutedMNIST(num_tasks=3, scenario="class"))
    assert class_il.num_outputs == 30 and class_il.task_data("test", 2)[1].tolist() == (y0 + 20).tolist()


def test_rotated_tasks_turn_the_images_and_fill_corners_with_black():
    dm = _fake_mnist(RotatedMNIST(angles=[0, 90], normalize=False))
    x0, x1 = dm.task_data("test", 0)[0], dm.task_data("test", 1)[0]
    assert torch.allclose(x1.view(-1, 28, 28), torch.rot90(x0.view(-1, 28, 28), 1, dims=(1, 2)), atol=1e-5)
    corner = _fake_mnist(RotatedMNIST(angles=[45])).task_data("test", 0)[0].view(-1, 28, 28)[:, 0, 0]
    assert torch.allclose(corner, torch.full_like(corner, -0.1307 / 0.3081))  # a black pixel, normalised


def test_batches_carry_the_task_id_and_cumulative_training_sees_every_task_so_far():
    dm = SyntheticTasks(tasks=SPLIT, batch_size=1000, cumulative=True)
    dm.current_task = 2
    (x, y, t), = list(dm.train_dataloader())
    assert sorted(set(t.tolist())) == [0, 1, 2] and sorted(set(y.tolist())) == list(range(6))
    dm = SyntheticTasks(tasks=SPLIT, batch_size=1000, scenario="domain")
    dm.current_task = 1
    (x, y, t), = list(dm.train_dataloader())
    assert set(t.tolist()) == {1} and set(y.tolist()) == {0, 1}


def test_steps_per_task_loader_yields_exactly_that_many_batches_over_reshuffled_passes():
    dm = SyntheticTasks(tasks=SPLIT, batch_size=100)  # 256 examples a task: 3 batches a pass
    batches = list(dm.task_train_loader(0, num_batches=7))
    assert len(batches) == 7
    first, second = torch.cat([b[0] for b in batches[:3]]), torch.cat([b[0] for b in batches[3:6]])
    assert len(first) == len(second) == 256 and not torch.equal(first, second)  # each pass reshuffled
