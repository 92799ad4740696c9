"""The regularisers' shared penalty: the gradient added in ``on_before_optimizer_step`` is
autograd's gradient of the penalty, for several anchors, huge weights and parameters the loss
did not reach, and it follows a change of terms; each regulariser logs its penalty in a run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from method_runs import fit_synthetic

from lightning_cl.methods import EWC, MAS, SI, OnlineEWC
from lightning_cl.methods.quadratic_penalty import QuadraticPenalty


class Terms(QuadraticPenalty):
    name = "terms"

    def __init__(self, terms):
        super().__init__()
        self.terms = terms

    def penalty_terms(self):
        return self.terms


def module_with(*shapes: tuple[int, ...]) -> SimpleNamespace:
    torch.manual_seed(0)
    network = torch.nn.Module()
    for i, shape in enumerate(shapes):
        network.register_parameter(f"p{i}", torch.nn.Parameter(torch.randn(shape)))
    return SimpleNamespace(network=network, device=torch.device("cpu"))


def random_terms(module: SimpleNamespace, count: int, scale: float) -> list:
    terms = []
    for _ in range(count):
        weight = {n: scale * torch.rand_like(p) * (torch.rand_like(p) > 0.3) for n, p in module.network.named_parameters()}
        anchor = {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in module.network.named_parameters()}
        terms.append((weight, anchor))
    return terms


def added_gradient(method: QuadraticPenalty, module: SimpleNamespace, start: float = 0.0) -> dict[str, torch.Tensor]:
    for p in module.network.parameters():
        p.grad = torch.full_like(p, start)
    method.on_before_optimizer_step(None, module, None)
    return {n: p.grad - start for n, p in module.network.named_parameters()}


@pytest.mark.parametrize("count, scale", [(1, 1.0), (3, 1.0), (3, 1e10)])
def test_the_added_gradient_is_the_gradient_of_the_penalty(count, scale):
    module = module_with((4, 5), (5,), (3, 4))
    method = Terms(random_terms(module, count, scale))
    module.network.zero_grad()
    method.penalty(module).backward()
    expected = {n: p.grad.clone() for n, p in module.network.named_parameters()}
    got = added_gradient(method, module, start=0.5)  # added to what is there
    for name, g in got.items():
        # Relative to the gradient's size: with 1e10 weights a float32 sum is only that exact.
        assert torch.allclose(g, expected[name], rtol=1e-4, atol=1e-5 * expected[name].abs().max().item()), name


def test_a_parameter_without_a_gradient_gets_the_penalty_s_and_no_terms_add_nothing():
    module = module_with((3,), (2,))
    method = Terms([])
    assert all(torch.equal(g, torch.zeros_like(g)) for g in added_gradient(method, module, start=1.0).values())
    weight = {"p0": torch.ones(3), "p1": torch.full((2,), 2.0)}
    anchor = {n: torch.zeros_like(p) for n, p in module.network.named_parameters()}
    method.terms = [(weight, anchor)]
    method.terms_changed()
    module.network.p1.grad = None
    method.on_before_optimizer_step(None, module, None)
    assert torch.allclose(module.network.p1.grad, 2 * 2.0 * module.network.p1.detach())


def test_a_weight_of_zero_leaves_the_parameter_free_whatever_the_anchors():
    module = module_with((2,))
    anchors = [{"p0": torch.tensor([5.0, 1.0])}, {"p0": torch.tensor([-5.0, 3.0])}]
    weights = [{"p0": torch.tensor([0.0, 1.0])}, {"p0": torch.tensor([0.0, 3.0])}]
    method = Terms(list(zip(weights, anchors)))
    grad = added_gradient(method, module)["p0"]
    theta = module.network.p0.detach()
    assert grad[0].item() == 0.0
    assert grad[1].item() == pytest.approx(2 * (1.0 * (theta[1] - 1.0) + 3.0 * (theta[1] - 3.0)).item(), rel=1e-6)


@pytest.mark.parametrize("method", [EWC(lam=100.0), OnlineEWC(lam=100.0), SI(c=1.0), MAS(lam=1.0)], ids=lambda m: m.name)
def test_each_regulariser_logs_its_penalty_and_pulls_towards_its_anchor(tmp_path, method):
    trainer, results = fit_synthetic(tmp_path, [method], scenario="task")
    assert results["complete"] and results["method"] == method.name
    assert trainer.logged_metrics[f"train/loss_{method.name}"] > 0  # the last step is past task 1
    model = trainer.lightning_module
    with torch.no_grad():  # away from the anchor (SI's is the end of the last task)
        for p in model.network.parameters():
            p.add_(0.01 * torch.randn_like(p))
    before = method.penalty(model).item()
    model.network.zero_grad(set_to_none=False)
    method.on_before_optimizer_step(None, model, None)  # outside fit: nothing to log to
    with torch.no_grad():  # a step along the added gradient meant to lower the penalty by ~1%
        eta = 0.01 * before / sum(p.grad.square().sum() for p in model.network.parameters())
        for p in model.network.parameters():
            p -= eta * p.grad
    assert 0 < method.penalty(model).item() < before
