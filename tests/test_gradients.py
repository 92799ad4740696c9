"""The gradient maths of OGD on small tensors (lightning_cl/gradients.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_cl.maths.gradients import (
    flatten_grads,
    orthonormal_extend,
    orthonormality_error,
    project_out,
    write_flat_grad,
)


def random_basis(k: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return orthonormal_extend(torch.empty(0, n), torch.randn(k, n, generator=g))


def test_projected_gradient_is_orthogonal_to_every_basis_vector():
    basis = random_basis(5, 40)
    g = torch.randn(40, generator=torch.Generator().manual_seed(1))
    projected, coeffs = project_out(g, basis)
    assert (basis @ projected).abs().max() < 1e-5
    assert torch.allclose(coeffs, basis @ g)
    # Pythagoras: what is removed is exactly the component in the span.
    assert torch.isclose(projected.norm() ** 2 + coeffs.norm() ** 2, g.norm() ** 2, rtol=1e-5)


def test_a_gradient_in_the_span_is_removed_and_one_orthogonal_to_it_is_kept():
    basis = random_basis(4, 30)
    in_span = torch.tensor([2.0, -1.0, 0.5, 3.0]) @ basis
    assert project_out(in_span, basis)[0].norm() < 1e-5 * in_span.norm()
    orthogonal = project_out(torch.randn(30), basis)[0]
    assert torch.allclose(project_out(orthogonal, basis)[0], orthogonal, atol=1e-6)


def test_an_empty_basis_leaves_the_gradient_unchanged():
    g = torch.randn(12)
    assert torch.equal(project_out(g, torch.empty(0, 12))[0], g)


def test_gram_schmidt_stays_orthonormal_over_many_additions_with_near_dependent_vectors():
    torch.manual_seed(0)
    n = 200
    basis = torch.empty(0, n)
    added = 0
    for step in range(30):  # one "task" per step, like per-example gradients of one task
        fresh = torch.randn(3, n)
        candidates = [fresh]
        if len(basis):
            mix = torch.randn(2, len(basis)) @ basis  # exactly in the span: must be skipped
            near = basis[:2] + 1e-3 * torch.randn(min(2, len(basis)), n)  # nearly in it: a new, tiny direction
            candidates += [mix, near, basis[:1].clone()]  # and an exact duplicate
        before = len(basis)
        basis = orthonormal_extend(basis, torch.cat(candidates))
        added += len(basis) - before
        assert orthonormality_error(basis) < 1e-5, f"lost orthogonality at step {step}"
    # Fresh and near-dependent directions kept; in-span and duplicates skipped.
    assert len(basis) == added == 3 * 30 + 2 * 29
    assert torch.linalg.matrix_rank(basis) == len(basis)


def test_gram_schmidt_skips_tiny_and_dependent_vectors():
    basis = orthonormal_extend(torch.empty(0, 5), torch.tensor([[1e-9, 0, 0, 0, 0]]))
    assert len(basis) == 0  # below eps = 1e-8, as in the notebook
    basis = orthonormal_extend(basis, torch.tensor([[3.0, 4, 0, 0, 0], [6.0, 8, 0, 0, 0], [0, 0, 2.0, 0, 0]]))
    assert len(basis) == 2
    assert torch.allclose(basis[0], torch.tensor([0.6, 0.8, 0, 0, 0]))


def test_flatten_and_write_back_round_trip_in_parameter_order():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    net(torch.randn(5, 3)).sum().backward()
    params = list(net.parameters())
    flat = flatten_grads(params)
    assert flat.shape == (sum(p.numel() for p in params),)
    assert torch.equal(flat[:12], params[0].grad.reshape(-1))
    write_flat_grad(params, 2 * flat)
    assert torch.equal(flatten_grads(params), 2 * flat)


def test_a_parameter_without_gradient_counts_as_zero_and_stays_without_one():
    used, unused = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    (used * 2).sum().backward()
    flat = flatten_grads([used, unused])
    assert torch.equal(flat, torch.tensor([2.0, 2, 2, 0, 0]))
    write_flat_grad([used, unused], torch.zeros(5))
    assert unused.grad is None and torch.equal(used.grad, torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_orthonormality_error_is_zero_for_the_identity(dtype):
    assert orthonormality_error(torch.eye(4, dtype=dtype)) == 0.0
