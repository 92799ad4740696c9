"""The episodic memories of the replay methods: what they keep, how they sample, their state.

:class:`Memory` is filled with whole tasks; :class:`StreamMemory` is the reservoir that fills as the
training stream passes, batch by batch (Mammoth's ER, DER, DER++)."""

from __future__ import annotations

import pytest
import torch

from lightning_cl.methods.memory import Memory, StreamMemory


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


def test_task_sampling_keeps_per_task_examples_of_each_task_drawn_whatever_their_class():
    # Mammoth's A-GEM: buffer_size // tasks examples of each task, a random draw, not class-balanced.
    generator = torch.Generator().manual_seed(0)
    counts, unbalanced = torch.zeros(2), 0
    for _ in range(500):
        memory = Memory(sampling="task", per_task=25)
        memory.add(*task_examples(0, [0, 1], 100), generator)  # 200 examples, 100 per class
        memory.add(*task_examples(1, [2, 3], 5, offset=200), generator)  # 10 < 25: all of them
        assert len(memory) == 35 and memory.seen == 210
        assert torch.equal(torch.bincount(memory.t), torch.tensor([25, 10]))
        ids = memory.x[:, 0].long()
        assert len(set(ids.tolist())) == 35 and torch.equal(memory.y[memory.t == 0], (ids[memory.t == 0] >= 100).long())
        kept = torch.bincount(memory.y[memory.t == 0], minlength=2)
        counts += kept
        unbalanced += int(kept[0]) not in (12, 13)
    # Class 0's share of task 0's 25 slots: hypergeometric mean 12.5, std ~2.4 per draw; unbalanced
    # draws happen (a balanced memory would keep exactly 12 or 13 each time) ...
    assert unbalanced > 100
    shares = counts / counts.sum()
    assert abs(shares[0] - 0.5) < 0.02, shares  # ... but on average half: 500 draws, std of the share ~0.004


@pytest.mark.parametrize("kwargs, message", [
    ({"sampling": "fifo"}, "sampling='fifo'"),
    ({"per_class": 0}, "per_class=0"),
    ({"sampling": "reservoir"}, "capacity"),
    ({"sampling": "task"}, "per_task"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Memory(**kwargs)


# ----------------------------------------------------------------- the stream's reservoir
# Batches of uneven sizes (the last batch of a pass is short; one of them crosses the budget).
STREAM_BATCHES = [10, 10, 37, 1, 50, 92, 200, 3, 97, 100, 150, 250]  # 1000 examples


def stream_batches(sizes=STREAM_BATCHES):
    start = 0
    for n in sizes:
        ids = torch.arange(start, start + n)
        yield ids.float().unsqueeze(1).repeat(1, 3), ids % 10, ids // 400  # x[:, 0]: the example's id
        start += n


def test_stream_reservoir_keeps_each_example_of_the_stream_with_equal_probability():
    # N = 1000 examples in 12 batches into a budget of 100, R = 1000 runs: example i is kept in
    # Binomial(R, 0.1) runs (mean 100, sd 9.49), wherever it passed. Bounds (fixed seed):
    # every example within 5 sd (P(any beyond) ~ 1000 * 5.7e-7 under the null), and the
    # chi-square sum_i (k_i - 100)^2 / (R p (1 - p)) within 5 of its sd (~sqrt(2N)) of its mean N.
    generator = torch.Generator().manual_seed(0)
    n, budget, runs = 1000, 100, 1000
    kept = torch.zeros(n)
    for _ in range(runs):
        memory = StreamMemory(budget)
        for x, y, t in stream_batches():
            memory.add(x, y, t, generator, score=-x[:, 0])
        assert len(memory) == budget and memory.seen == n
        ids = memory.x[:, 0].long()
        assert len(set(ids.tolist())) == budget  # no example twice
        kept[ids] += 1
    # What is kept with an example is its own.
    assert torch.equal(memory.y, ids % 10) and torch.equal(memory.t, ids // 400)
    assert torch.equal(memory.fields["score"], -memory.x[:, 0])
    p = budget / n
    z = (kept - runs * p) / (runs * p * (1 - p)) ** 0.5
    assert z.abs().max() < 5, z.abs().max()
    chi2 = (z ** 2).sum().item()
    assert abs(chi2 - n) < 5 * (2 * n) ** 0.5, chi2
    # A memory that kept the first (or the last) examples would fail: each block of 100 is kept
    # about equally often (expected 10,000 keeps, sd ~95).
    blocks = kept.reshape(10, 100).sum(1)
    assert (blocks / (runs * p * 100) - 1).abs().max() < 0.05, blocks


def test_stream_reservoir_is_algorithm_r_example_by_example():
    # Mammoth's reservoir(), one example at a time, fed with the uniforms the memory draws
    # (one per example once the budget is full): the same memory, slot by slot.
    budget = 30
    memory, generator = StreamMemory(budget), torch.Generator().manual_seed(5)
    slots, seen = [None] * budget, 0
    for x, y, t in stream_batches([7, 20, 9, 1, 40, 64]):
        full = max(0, min(budget - len(memory), len(y)))
        uniforms = iter(torch.rand(len(y) - full, generator=torch.Generator().set_state(generator.get_state()),
                                   dtype=torch.float64).tolist())
        memory.add(x, y, t, generator)
        for i in x[:, 0].long().tolist():
            if seen < budget:
                slots[seen] = i
            elif (j := int(next(uniforms) * (seen + 1))) < budget:
                slots[j] = i
            seen += 1
    assert memory.x[:, 0].long().tolist() == slots and memory.seen == seen == 141


def test_stream_reservoir_below_its_budget_keeps_everything_in_order():
    memory, generator = StreamMemory(50), torch.Generator().manual_seed(0)
    for x, y, t in stream_batches([10, 20]):
        memory.add(x, y, t, generator)
    state = generator.get_state()
    assert len(memory) == 30 and torch.equal(memory.x[:, 0], torch.arange(30.0))
    assert torch.equal(state, torch.Generator().manual_seed(0).get_state())  # no draw while there is room


def test_stream_sample_draws_distinct_examples_with_everything_kept():
    memory = StreamMemory(40)
    for x, y, t in stream_batches([25, 25]):
        memory.add(x, y, t, torch.Generator().manual_seed(0), logits=x * 2)
    drawn = memory.sample(30, torch.Generator().manual_seed(3))
    assert set(drawn) == {"x", "y", "t", "logits"} and len(set(drawn["x"][:, 0].tolist())) == 30
    assert torch.equal(drawn["logits"], drawn["x"] * 2) and torch.equal(drawn["y"], drawn["x"][:, 0].long() % 10)
    assert torch.equal(drawn["x"], memory.sample(30, torch.Generator().manual_seed(3))["x"])
    assert len(memory.sample(500, torch.Generator())["y"]) == 40  # at most everything


def test_stream_state_dict_round_trip_continues_the_same_stream():
    generator, memory = torch.Generator().manual_seed(0), StreamMemory(20)
    batches = list(stream_batches([30, 30, 30]))
    memory.add(*batches[0], generator, logits=batches[0][0])
    restored = StreamMemory(20)
    restored.load_state_dict(memory.state_dict())
    assert memory.state_dict()["seen"] == 30
    assert all(v.device.type == "cpu" for v in memory.state_dict()["fields"].values())
    state = generator.get_state()
    for batch in batches[1:]:
        memory.add(*batch, generator, logits=batch[0])
    other = torch.Generator().set_state(state)
    for batch in batches[1:]:
        restored.add(*batch, other, logits=batch[0])
    assert all(torch.equal(memory.fields[k], restored.fields[k]) for k in memory.fields)
    assert restored.seen == memory.seen == 90 and torch.equal(generator.get_state(), other.get_state())


def test_stream_memory_refuses_what_it_cannot_keep():
    with pytest.raises(ValueError, match="buffer_size=0"):
        StreamMemory(0)
    memory = StreamMemory(10)
    x, y, t = next(stream_batches([4]))
    memory.add(x, y, t, torch.Generator(), logits=x)
    with pytest.raises(ValueError, match="keeps x, y, t, logits with each example; it was offered x, y, t"):
        memory.add(x, y, t, torch.Generator())
    with pytest.raises(ValueError, match="one row per example"):
        memory.add(x, y, t[:2], torch.Generator(), logits=x)
