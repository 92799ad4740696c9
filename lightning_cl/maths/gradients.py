"""Pure gradient maths for gradient-projection methods (OGD; Farajtabar et al. 2020,
"Orthogonal Gradient Descent for Continual Learning", AISTATS, arXiv:1910.07104).

A basis is a ``(k, n)`` tensor whose rows are orthonormal; ``n`` is the number of parameter
entries. Nothing here knows about Lightning, so it is unit-tested on small tensors
(tests/test_gradients.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Below this relative size a Gram-Schmidt residual of a float32 vector is rounding noise, not
# a new direction: normalising it would add an arbitrary vector to the basis.
FLOAT32_REL_TOL = 1e-5


def flatten_grads(params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """The gradients of ``params`` as one vector, in order (zeros for a parameter without one).

    ``grads`` defaults to the parameters' ``.grad``; pass what ``torch.autograd.grad`` returned
    (with ``allow_unused=True``) to flatten that instead.
    """
    grads = [p.grad for p in params] if grads is None else grads
    return torch.cat([g.reshape(-1) if g is not None else torch.zeros(p.numel(), device=p.device, dtype=p.dtype)
                      for p, g in zip(params, grads)])


def write_flat_grad(params: Sequence[torch.Tensor], flat: torch.Tensor) -> None:
    """Copy a vector made by :func:`flatten_grads` back into the ``.grad`` of ``params``."""
    pieces = torch.split(flat, [p.numel() for p in params])
    # An unused parameter stays without a gradient, so the optimiser skips it.
    pairs = [(p.grad, g.view_as(p.grad)) for p, g in zip(params, pieces) if p.grad is not None]
    if pairs:
        # One fused call instead of a copy_ per parameter: this runs on every training step.
        torch._foreach_copy_([d for d, _ in pairs], [s for _, s in pairs])


def flat_views(params: Sequence[torch.Tensor], flat: torch.Tensor) -> list[torch.Tensor]:
    """Views of ``flat`` shaped like each of ``params``, in order (the layout of :func:`flatten_grads`).

    Set as the parameters' ``.grad`` before backward, they make backward accumulate straight
    into ``flat``, so that a projection needs neither :func:`flatten_grads` nor
    :func:`write_flat_grad` (together ~80 us of a ~1.8 ms step of the notebook's MLP on 2 cores).
    """
    return [piece.view_as(p) for piece, p in zip(torch.split(flat, [p.numel() for p in params]), params)]


class FlatGradient:
    """The gradients of ``params`` as one vector that backward accumulates into, for methods
    that change the step's gradient in place (OGD, A-GEM).

    :meth:`attach` (before backward) makes each ``.grad`` a view of :attr:`flat`;
    :meth:`gather` (before the optimiser step) returns the flat gradient, copied out when
    something (a strategy, another callback) replaced a ``.grad``, and :meth:`scatter` then
    copies a changed copy back. In place, neither copies.
    """

    def __init__(self, params: Sequence[torch.Tensor], dtype: torch.dtype | None = None) -> None:
        self.params = list(params)
        device = self.params[0].device if self.params else None
        self.flat = torch.zeros(sum(p.numel() for p in self.params), device=device, dtype=dtype)
        self.views = flat_views(self.params, self.flat)

    def attach(self) -> None:
        self.flat.zero_()
        for p, view in zip(self.params, self.views):
            if p.grad is not view:
                p.grad = view

    def in_place(self) -> bool:
        return all(p.grad is view for p, view in zip(self.params, self.views))

    def gather(self) -> torch.Tensor:
        """The step's gradient as one vector: :attr:`flat` itself when in place, else a copy."""
        return self.flat if self.in_place() else flatten_grads(self.params)

    def scatter(self, g: torch.Tensor) -> None:
        """Make ``g`` (from :meth:`gather`, changed) the parameters' gradient."""
        if g is not self.flat:
            write_flat_grad(self.params, g)


def project_out_(g: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """In place, ``g <- g - B^T (B g)``: remove from ``g`` its component in the span of the rows of ``basis``.

    Returns the coordinates ``B g`` (their norm is the norm removed, as the rows are
    orthonormal). Two matrix-vector products; ``basis`` may have 0 rows.
    """
    coeffs = torch.mv(basis, g)
    g.addmv_(basis.T, coeffs, alpha=-1.0)
    return coeffs


def project_out(g: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``g - B^T (B g)`` as a new vector, and the coordinates ``B g`` (see :func:`project_out_`)."""
    projected = g.clone()
    return projected, project_out_(projected, basis)


def orthonormal_extend(
    basis: torch.Tensor, vectors: torch.Tensor, eps: float = 1e-8, rel_tol: float = FLOAT32_REL_TOL
) -> torch.Tensor:
    """Append to ``basis`` the directions of ``vectors`` (rows) that it does not span yet.

    Classical Gram-Schmidt applied twice ("twice is enough", Giraud et al. 2005): a single
    pass loses orthogonality in float32 when a vector is nearly in the span already, which
    per-example gradients of one task often are. The rows are first projected against the old
    basis as one block (two matrix products), then orthonormalised one by one against the
    new rows kept so far.

    A vector is skipped when its residual norm is below ``eps`` (the notebook's test) or below
    ``rel_tol`` times its own norm (numerically dependent).

    Args:
        basis: ``(k, n)`` orthonormal rows (``k`` may be 0).
        vectors: ``(m, n)`` candidates, or one ``(n,)`` vector.
        eps: absolute residual norm below which a vector is skipped.
        rel_tol: relative residual norm below which a vector is skipped.

    Returns:
        The ``(k + m', n)`` basis, ``m' <= m``; the old rows are unchanged.
    """
    vectors = vectors.reshape(-1, basis.shape[1]).to(basis.dtype)
    norms = vectors.norm(dim=1)
    residual = vectors.clone()
    for _ in range(2):
        residual -= (residual @ basis.T) @ basis
    out = torch.empty_like(residual)  # kept rows are written in place: no re-stacking per vector
    kept = 0
    for v, norm in zip(residual, norms.tolist()):
        block = out[:kept]
        for _ in range(2):
            v = v - block.T @ (block @ v)
        r = v.norm().item()
        if r < eps or r < rel_tol * norm:
            continue
        out[kept] = v / r
        kept += 1
    return torch.cat([basis, out[:kept]]) if kept else basis


def orthonormality_error(basis: torch.Tensor) -> float:
    """``max |B B^T - I|``: 0 for an exactly orthonormal basis."""
    gram = basis @ basis.T
    return (gram - torch.eye(len(basis), dtype=basis.dtype, device=basis.device)).abs().max().item() if len(basis) else 0.0


def agem_project_(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """A-GEM (Chaudhry et al. 2019, "Efficient Lifelong Learning with A-GEM", eq. 11), in place:
    if ``g . g_ref < 0``, ``g <- g - (g . g_ref) / (g_ref . g_ref) * g_ref``; else ``g`` is unchanged.

    Branch-free (the dot product is clamped at 0), so a training step does not wait for the
    device to decide. Returns the dot product before the projection (negative: projected).
    """
    dot = torch.dot(g, g_ref)
    g.sub_(g_ref * (dot.clamp(max=0) / torch.dot(g_ref, g_ref).clamp(min=torch.finfo(g.dtype).tiny)))
    return dot


def gpm_extend(basis: torch.Tensor, representation: torch.Tensor, threshold: float, first: bool = False) -> torch.Tensor:
    """GPM's memory update of one layer (Saha, Garg & Roy 2021, "Gradient Projection Memory for
    Continual Learning", ICLR, eqs. 5-9).

    ``representation`` is ``R`` (``(d, n)``: one layer input per column); ``basis`` is ``M``
    (``(d, k)``, orthonormal columns; ``k`` may be 0). The part of ``R`` that ``M`` does not
    span, ``R - M M^T R``, is decomposed by SVD, and its leading left singular vectors are
    appended until ``M`` captures at least ``threshold`` of the energy ``||R||_F^2``: the
    fewest ``r`` with ``||M^T R||^2 + sum_{i<=r} s_i^2 >= threshold ||R||^2``. With ``k = 0``
    this is eq. 5, else eq. 9.

    ``first`` (the first task's basis, ``k = 0``) follows the reference code instead of eq. 5: it
    keeps the directions whose cumulative energy stays *below* the threshold, ``r = #{i:
    sum_{j<=i} s_j^2 < threshold ||R||^2}``, one fewer than eq. 5 (github.com/sahagobinda/GPM,
    main_pmnist.py, ``update_GPM``: ``r = np.sum(np.cumsum(sval_ratio)<threshold[i]) #+1``);
    its later tasks follow eq. 9 as here.

    Returns the ``(d, k + r)`` basis (at most ``d`` columns); the old columns are unchanged.
    """
    total = representation.square().sum()
    if total == 0:  # nothing to protect (e.g. a layer whose inputs are all zero)
        return basis
    residual = representation
    for _ in range(2):  # twice: one projection leaves float32 rounding inside span(M)
        residual = residual - basis @ (basis.T @ residual)
    u, s, _ = torch.linalg.svd(residual, full_matrices=False)
    energy = s.square() / total
    captured = 1 - energy.sum()  # ||M M^T R||^2 / ||R||^2
    below = (captured + energy.cumsum(0) < threshold).sum().item()
    if first and basis.shape[1] == 0:
        r = int((energy.cumsum(0) < threshold).sum().item())
    else:
        r = 0 if captured >= threshold else min(below + 1, len(s))
    r = min(r, basis.shape[0] - basis.shape[1])
    return torch.cat([basis, u[:, :r]], dim=1)


def gpm_project_(weight_grad: torch.Tensor, bias_grad: torch.Tensor | None, basis: torch.Tensor) -> None:
    """In place, GPM's projection of a Linear layer's gradient: ``G <- G - (G M) M^T``.

    ``G = [weight_grad | bias_grad]`` (``(out, in + 1)``) is the gradient of the layer as one
    matrix acting on the input with a constant 1 appended, and ``M`` (``(in + 1, k)``) the
    basis of such inputs; without a bias, ``G`` is ``weight_grad`` and ``M`` is ``(in, k)``.
    The update then leaves the layer's output on the stored inputs unchanged (to first order).
    ``G`` may as well be a change of the layer's parameters (an optimiser's step): projected,
    the change leaves those outputs unchanged exactly, as the layer is linear.
    """
    w_basis = basis[: weight_grad.shape[1]]
    coeffs = weight_grad @ w_basis  # G M, (out, k)
    if bias_grad is not None:
        coeffs.addr_(bias_grad, basis[-1])
        bias_grad.sub_(coeffs @ basis[-1])
    weight_grad.sub_(coeffs @ w_basis.T)


def gpm_inside_norm2(weight: torch.Tensor, bias: torch.Tensor | None, basis: torch.Tensor) -> torch.Tensor:
    """``||G M||_F^2``: the squared norm of the part of ``G = [weight | bias]`` that :func:`gpm_project_`
    removes (``M`` has orthonormal columns); ``weight`` and ``bias`` shaped like a Linear layer's."""
    coeffs = weight @ basis[: weight.shape[1]]
    if bias is not None:
        coeffs.addr_(bias, basis[-1])
    return coeffs.square().sum()
