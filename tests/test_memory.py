"""The episodic memory of the replay methods: what it keeps, how it samples, its state."""

from __future__ import annotations

import pytest
import torch

from lightning_cl.methods.memory import Memory


def task_examples(task: int, classes: list[int], per_class: int, offset: int = 0):
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = (offset + torch.arange(len(y), dtype=torch.float32)).unsqueeze(1).repeat(1, 3)  # x[:, 0]: an example's id
    return x, y, torch.full_like(y, task)


def test_balanced_memory_keeps_per_class_examples_of_every_task_and_label():
    memory, generator = Memory(per_class=5), torch.Generator().manual_seed(0)
    memory.add(*task_examples(0, [0, 1], 20), generator)
    memory.add(*task_examples(1, [0, 1, 2], 3, offset=100), generator)  # domain-IL: labels repeat; class 0..2 has 3 < 5
    pairs = torch.stack([memory.t, memory.y], 1).tolist()
    counts = {tuple(p): pairs.count(p) for p in pairs}
    assert counts == {(0, 0): 5, (0, 1): 5, (1, 0): 3, (1, 1): 3, (1, 2): 3}
    # Each kept x is one of the offered examples with its own label.
    ids = memory.x[:, 0].long()
    assert len(set(ids.tolist())) == len(memory) == 19
    assert torch.equal(memory.y[memory.t == 0], torch.tensor([0, 1]).repeat_interleave(20)[ids[memory.t == 0]])


def test_balanced_choice_depends_only_on_the_generator_seed():
    def kept(seed):
        memory = Memory(per_class=5)
        memory.add(*task_examples(0, [0, 1], 50), torch.Generator().manual_seed(seed))
        return memory.x[:, 0]

    assert torch.equal(kept(1), kept(1)) and not torch.equal(kept(1), kept(2))


def test_reservoir_keeps_a_uniform_sample_of_everything_offered():
    # 1000 examples offered in two calls (two tasks) into 100 slots, 2000 times: each example
    # should be kept with probability 0.1, whichever call offered it and wherever in it.
    generator = torch.Generator().manual_seed(0)
    n, capacity, repeats = 1000, 100, 2000
    kept = torch.zeros(n)
    for _ in range(repeats):
        memory = Memory(sampling="reservoir", capacity=capacity)
        memory.add(*task_examples(0, [0], 600), generator)
        memory.add(*task_examples(1, [1], 400, offset=600), generator)
        assert len(memory) == capacity and memory.seen == n
        kept[memory.x[:, 0].long()] += 1
    # Blocks of 50 examples: expected 10,000 keeps each, binomial std ~95; 5 std is ~5%.
    blocks = kept.reshape(20, 50).sum(1) / (repeats * 50 * capacity / n)
    assert (blocks - 1).abs().max() < 0.05, blocks
    # A naive "first come" or "last come" memory would fail the check above; the labels follow x.
    assert torch.equal(memory.y, (memory.x[:, 0] >= 600).long())


def test_reservoir_below_capacity_keeps_everything():
    memory = Memory(sampling="reservoir", capacity=50)
    memory.add(*task_examples(0, [0, 1], 10), torch.Generator().manual_seed(0))
    assert len(memory) == 20 and torch.equal(memory.x[:, 0], torch.arange(20.0))


def test_sample_draws_distinct_examples_reproducibly():
    memory = Memory(per_class=30)
    memory.add(*task_examples(0, [0, 1, 2], 30), torch.Generator().manual_seed(0))
    x, y, t = memory.sample(40, torch.Generator().manual_seed(3))
    assert x.shape == (40, 3) and len(set(x[:, 0].tolist())) == 40
    assert torch.equal(x, memory.sample(40, torch.Generator().manual_seed(3))[0])
    assert len(memory.sample(500, torch.Generator())[0]) == 90  # at most everything


def test_state_dict_round_trip_continues_the_same_stream():
    generator = torch.Generator().manual_seed(0)
    memory = Memory(sampling="reservoir", capacity=20)
    memory.add(*task_examples(0, [0], 50), generator)
    restored = Memory(sampling="reservoir", capacity=20)
    restored.load_state_dict(memory.state_dict())
    assert all(v is None or isinstance(v, int) or v.device.type == "cpu" for v in memory.state_dict().values())
    state = generator.get_state()
    memory.add(*task_examples(1, [1], 50, offset=50), generator)
    restored.add(*task_examples(1, [1], 50, offset=50), torch.Generator().set_state(state))
    assert torch.equal(memory.x, restored.x) and restored.seen == memory.seen == 100


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": "fifo"}, "sampling='fifo'"),
    ({"per_class": 0}, "per_class=0"),
    ({"sampling": "reservoir"}, "capacity"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Memory(**kwargs)
