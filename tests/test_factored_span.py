"""OGD's factored span: the Gram matrix from factors against dense gradients, the projection
against an orthonormal basis of the same gradients, and dependent gradients left out."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cl.maths.factored_span import FactoredSpan
from lightning_cl.maths.gradients import flatten_grads, orthonormal_extend, orthonormality_error


def network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3, bias=False))


def span_with(net: nn.Sequential, m: int) -> FactoredSpan:
    params = [p for p in net.parameters()]
    span = FactoredSpan(params, [net[0], net[3]])
    g = torch.Generator().manual_seed(1)
    deltas = [torch.randn(m, 5, generator=g), torch.randn(m, 3, generator=g)]
    inputs = [torch.randn(m, 6, generator=g), torch.randn(m, 5, generator=g)]
    assert span.extend(deltas, inputs, torch.randn(m, 10, generator=g)) == m  # LayerNorm's 5 + 5
    return span


def test_the_factors_multiply_out_to_the_layers_outer_products_and_give_their_gram():
    net = network()
    span = span_with(net, 4)
    dense = span.dense_gradients()
    assert dense.shape == (4, 6 * 5 + 5 + 10 + 5 * 3)
    d, h = span.deltas[0][2], span.inputs[0][2]
    assert torch.allclose(dense[2, :30], torch.outer(d, h).reshape(-1)) and torch.allclose(dense[2, 30:35], d)
    assert torch.allclose(span.gram(), dense.double() @ dense.double().T, rtol=1e-6)


def test_projection_equals_gram_schmidt_and_leaves_the_gradient_orthogonal_to_the_stored_ones():
    net = network()
    span = span_with(net, 7)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    g = flatten_grads(list(net.parameters()))
    removed = span.project_()
    projected = flatten_grads(list(net.parameters()))
    basis = orthonormal_extend(torch.empty(0, len(g)), span.dense_gradients())
    assert torch.allclose(projected, g - basis.T @ (basis @ g), atol=1e-5)
    assert (span.dense_gradients() @ projected).abs().max() < 1e-4 * g.norm()
    assert removed.item() == pytest.approx((g - projected).norm().item(), rel=1e-4)
    assert orthonormality_error(span.orthonormal_basis()) < 1e-5


def test_a_repeated_gradient_adds_no_dimension():
    net = network()
    span = span_with(net, 3)
    again = span.extend([d[:1] * 2 for d in span.deltas], [h[:1] for h in span.inputs], span.dense[:1] * 2)
    assert again == 0 and span.rank == 3 and span.count == 4


def test_given_tensors_are_projected_in_place_and_their_inside_norm_measured_without_touching_the_gradients():
    net = network()
    span = span_with(net, 7)
    params = list(net.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    g = torch.Generator().manual_seed(2)
    change = [torch.randn(p.shape, generator=g) for p in params]  # e.g. an optimiser's step
    flat = flatten_grads(params, change)
    basis = orthonormal_extend(torch.empty(0, len(flat)), span.dense_gradients())
    inside = (basis @ flat).norm()
    assert span.inside_norm(change).item() == pytest.approx(inside.item(), rel=1e-4)
    assert torch.equal(flatten_grads(params, change), flat)  # measured, not changed
    removed = span.project_(change)
    assert removed.item() == pytest.approx(inside.item(), rel=1e-4)
    assert torch.allclose(flatten_grads(params, change), flat - basis.T @ (basis @ flat), atol=1e-5)
    assert span.inside_norm(change).item() < 1e-4 * flat.norm().item()
    assert all(not p.grad.any() for p in params)  # the gradients were left alone
