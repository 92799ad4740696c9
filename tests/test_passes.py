"""The shared passes over data (lightning_cl/passes.py) against brute-force loops on a tiny MLP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightning_cl.data.scenario import mask_logits
from lightning_cl.maths.gradients import flatten_grads
from lightning_cl.models.mlp import MLP
from lightning_cl.maths.passes import (
    fisher_diagonal,
    first_examples,
    mean_loss_gradient,
    output_norm_importance,
    per_example_gradients,
)

UNIT_MASK = torch.tensor([[True, True, False, False], [False, False, True, True]])  # task-IL: two tasks of two units


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    net = MLP(norm="batch", in_features=5, hidden=(4, 3), num_classes=4)
    net.train()
    net(torch.randn(32, 5) * 2 + 1)  # BatchNorm statistics away from their initial values
    x = torch.randn(11, 5)
    t = torch.tensor([0, 1] * 5 + [1])
    y = torch.randint(0, 2, (11,)) + 2 * t  # each example's label among its task's units
    return net, x, y, t


def brute_force(net, x, y, t, scalar_of):
    """Per example, in eval mode, the gradient of scalar_of(logits of that example alone, y, t)."""
    net.eval()
    rows = []
    for xi, yi, ti in zip(x, y, t):
        net.zero_grad()
        scalar_of(net(xi.unsqueeze(0))[0][0], yi, ti).backward()
        rows.append({n: p.grad.clone() for n, p in net.named_parameters()})
    net.train()
    return rows


def test_first_examples_takes_the_first_n_over_batches():
    batches = [(torch.arange(i, i + 4).float(), torch.arange(i, i + 4), torch.zeros(4)) for i in (0, 4, 8)]
    x, y, t = first_examples(iter(batches), 6)
    assert y.tolist() == [0, 1, 2, 3, 4, 5] and len(x) == len(t) == 6
    assert first_examples(iter(batches), 100)[1].tolist() == list(range(12))
    assert first_examples(iter(batches), None)[1].tolist() == list(range(12))  # None: the whole pass


def test_mean_loss_gradient_is_the_batch_average_and_restores_batchnorm_and_mode(tiny):
    net, x, y, t = tiny
    net.eval()
    stats = [b.clone() for b in net.buffers()]
    params = list(net.parameters())
    batches = [(x[:6], y[:6], t[:6]), (x[6:], y[6:], t[6:])]
    vector = mean_loss_gradient(net, batches, params)
    assert not net.training and all(torch.equal(a, b) for a, b in zip(stats, net.buffers()))
    expected = 0
    for xb, yb, _ in batches:
        net.train()
        net.zero_grad()
        F.cross_entropy(net(xb)[0], yb).backward()
        expected = expected + flatten_grads(params) / 2
    for b, s in zip(net.buffers(), stats):  # the reference pass moved them; reset for the comparison above
        b.copy_(s)
    assert torch.allclose(vector, expected, atol=1e-6)


def test_per_example_gradients_match_a_loop_over_single_examples(tiny):
    net, x, y, t = tiny
    grads = per_example_gradients(net, x, y, lambda logits, yi, ui: logits.gather(0, yi[None])[0], chunk_size=4)
    expected = brute_force(net, x, y, t, lambda logits, yi, ti: logits[yi])
    assert net.training  # mode restored
    for i, row in enumerate(expected):
        for name, g in row.items():
            assert torch.allclose(grads[name][i], g, atol=1e-6), name
    jac = per_example_gradients(net, x, y, lambda logits, yi, ui: logits, jacobian=True)
    assert jac["head.weight"].shape == (11, 4, 4, 3)
    assert torch.allclose(jac["head.weight"][torch.arange(11), y], grads["head.weight"], atol=1e-6)  # its row y


@pytest.fixture(params=["batch", "none"], ids=["batchnorm", "plain"])
def tiny_any(request):
    """The tiny MLP with BatchNorm (the per-example vmap path) and without (the factored path)."""
    torch.manual_seed(0)
    net = MLP(norm=request.param, in_features=5, hidden=(4, 3), num_classes=4)
    net.train()
    net(torch.randn(32, 5) * 2 + 1)
    x = torch.randn(11, 5)
    t = torch.tensor([0, 1] * 5 + [1])
    return net, x, torch.randint(0, 2, (11,)) + 2 * t, t


@pytest.mark.parametrize("linears", [False, True], ids=["vmap", "linears"])
@pytest.mark.parametrize("masked", [False, True], ids=["class-IL", "task-IL"])
def test_fisher_diagonal_is_the_mean_squared_log_likelihood_gradient(tiny_any, masked, linears):
    net, x, y, t = tiny_any
    unit_mask = UNIT_MASK if masked else None

    def log_likelihood(logits, yi, ti):
        return F.log_softmax(mask_logits(logits[None], ti[None], unit_mask)[0], dim=0)[yi]

    rows = brute_force(net, x, y, t, log_likelihood)
    layers = net.linear_layers() if linears else None
    fisher = fisher_diagonal(net, x, y, t, unit_mask=unit_mask, chunk_size=4, linears=layers)  # chunks of 4, 4, 3
    assert net.training  # mode restored
    for name, f in fisher.items():
        expected = torch.stack([r[name] for r in rows]).square().mean(0)
        assert f.shape == dict(net.named_parameters())[name].shape
        assert torch.allclose(f, expected, atol=1e-7), name
    if masked:  # another task's output units get no Fisher from an example
        only_task0 = fisher_diagonal(net, x[t == 0], y[t == 0], t[t == 0], unit_mask=UNIT_MASK, linears=layers)
        assert only_task0["head.weight"][2:].abs().max() == 0 and only_task0["head.weight"][:2].abs().max() > 0


@pytest.mark.parametrize("linears", [False, True], ids=["vmap", "linears"])
@pytest.mark.parametrize("masked", [False, True], ids=["class-IL", "task-IL"])
def test_expected_fisher_weights_every_label_s_squared_gradient_by_its_probability(tiny_any, masked, linears):
    net, x, y, t = tiny_any
    unit_mask = UNIT_MASK if masked else None
    net.eval()
    with torch.no_grad():
        probs = F.softmax(mask_logits(net(x)[0], t, unit_mask), dim=1)
    expected = None
    for c in range(probs.shape[1]):  # brute force: every label, one example at a time
        def log_likelihood(logits, yi, ti, c=c):
            return F.log_softmax(mask_logits(logits[None], ti[None], unit_mask)[0], dim=0)[c]

        rows = brute_force(net, x, y, t, log_likelihood)
        part = {n: torch.stack([probs[i, c] * r[n].square() for i, r in enumerate(rows)]).mean(0) for n in rows[0]}
        expected = part if expected is None else {n: expected[n] + part[n] for n in part}
    layers = net.linear_layers() if linears else None
    fisher = fisher_diagonal(net, x, y, t, unit_mask=unit_mask, chunk_size=4, labels="expected", linears=layers)
    for name, f in fisher.items():
        assert torch.allclose(f, expected[name], atol=1e-7), name
    # Not the empirical Fisher: the labels the model gives probability to count, not only the true one.
    empirical = fisher_diagonal(net, x, y, t, unit_mask=unit_mask, labels="empirical", linears=layers)
    assert not torch.allclose(empirical["head.weight"], fisher["head.weight"], atol=1e-4)
    with pytest.raises(ValueError, match="labels='true'"):
        fisher_diagonal(net, x, y, t, labels="true")


@pytest.mark.parametrize("linears", [False, True], ids=["vmap", "linears"])
@pytest.mark.parametrize("masked", [False, True], ids=["class-IL", "task-IL"])
def test_weighted_fisher_is_the_true_label_s_squared_gradient_times_its_probability(tiny_any, masked, linears):
    # Mammoth's online EWC: fish += p(y|x) * grad(log p(y|x))**2, one example at a time, then the mean.
    net, x, y, t = tiny_any
    unit_mask = UNIT_MASK if masked else None
    net.eval()
    with torch.no_grad():
        p_true = F.softmax(mask_logits(net(x)[0], t, unit_mask), dim=1).gather(1, y[:, None]).squeeze(1)
    net.train()

    def log_likelihood(logits, yi, ti):
        return F.log_softmax(mask_logits(logits[None], ti[None], unit_mask)[0], dim=0)[yi]

    rows = brute_force(net, x, y, t, log_likelihood)
    layers = net.linear_layers() if linears else None
    fisher = fisher_diagonal(net, x, y, t, unit_mask=unit_mask, chunk_size=4, labels="weighted", linears=layers)
    assert net.training
    for name, f in fisher.items():
        expected = torch.stack([p_true[i] * r[name].square() for i, r in enumerate(rows)]).mean(0)
        assert torch.allclose(f, expected, atol=1e-7), name
    empirical = fisher_diagonal(net, x, y, t, unit_mask=unit_mask, labels="empirical", linears=layers)
    assert (fisher["head.weight"] <= empirical["head.weight"] + 1e-9).all()  # p <= 1: never above the empirical
    assert not torch.allclose(empirical["head.weight"], fisher["head.weight"], atol=1e-5)


class Softmax(torch.nn.Module):
    """Softmax regression, ``logits = W x + b``: its Fisher has a closed form."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(3, 3)

    def forward(self, x):
        return self.head(x), ()

    def linear_layers(self):
        return [self.head]


@pytest.mark.parametrize("linears", [False, True], ids=["vmap", "linears"])
def test_expected_fisher_of_softmax_regression_is_the_closed_form(linears):
    # d log p_c / d z_k = [c = k] - p_k, so F_W[k, j] = mean_n sum_c p_nc ([c = k] - p_nk)^2 x_nj^2
    # = mean_n p_nk (1 - p_nk) x_nj^2 and F_b[k] = mean_n p_nk (1 - p_nk): the variance of the
    # one-hot label under the model, times the input squared. Worked by hand for one example with
    # W = 0, b = (0, 0, ln 2): p = (1/4, 1/4, 1/2), p (1 - p) = (3/16, 3/16, 1/4).
    net = Softmax()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.copy_(torch.tensor([0.0, 0.0, 0.6931471805599453]))
    x, y = torch.tensor([[1.0, 2.0, -1.0]]), torch.tensor([0])
    fisher = fisher_diagonal(net, x, y, labels="expected", linears=net.linear_layers() if linears else None)
    variance = torch.tensor([3 / 16, 3 / 16, 1 / 4])
    assert torch.allclose(fisher["head.bias"], variance, atol=1e-6)
    assert torch.allclose(fisher["head.weight"], variance[:, None] * torch.tensor([[1.0, 4.0, 1.0]]), atol=1e-6)
    # The empirical Fisher of the true label 0: ([0 = k] - p_k)^2 = (9/16, 1/16, 1/4).
    empirical = fisher_diagonal(net, x, y, labels="empirical", linears=net.linear_layers() if linears else None)
    assert torch.allclose(empirical["head.bias"], torch.tensor([9 / 16, 1 / 16, 1 / 4]), atol=1e-6)


def test_the_factored_fisher_is_not_used_for_parameters_outside_the_linear_layers(tiny):
    net, x, y, t = tiny  # BatchNorm's scale and shift are trainable and not in linear_layers()
    from lightning_cl.maths.passes import _factored_fisher

    assert _factored_fisher(net, net.linear_layers(), x, y, None, "expected", 4) is None
    assert _factored_fisher(net, net.linear_layers()[:-1], x, y, None, "expected", 4) is None


@pytest.mark.parametrize("masked", [False, True], ids=["class-IL", "task-IL"])
def test_output_norm_importance_is_the_mean_absolute_gradient_of_the_squared_output_norm(tiny, masked):
    net, x, y, t = tiny

    def squared_norm(logits, yi, ti):
        return (logits * UNIT_MASK[ti] if masked else logits).square().sum()

    rows = brute_force(net, x, y, t, squared_norm)
    importance = output_norm_importance(net, x, t, unit_mask=UNIT_MASK if masked else None, chunk_size=5)
    for name, omega in importance.items():
        expected = torch.stack([r[name] for r in rows]).abs().mean(0)
        assert torch.allclose(omega, expected, atol=1e-6), name
    assert (importance["head.bias"] > 0).all()
