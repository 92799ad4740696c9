"""The span of many per-example gradients, kept as layer factors instead of dense vectors, for
OGD's per-example variants (Farajtabar et al. 2020).

A Linear layer's gradient for one example is an outer product: with ``h`` the layer's input
and ``d`` the gradient at its output, ``dW = d h^T`` and ``db = d``. So the ``m`` stored
gradients need only ``d`` and ``h`` per layer (``out + in`` numbers instead of ``out * in``),
and every other trainable parameter (BatchNorm's, a few hundred entries) is kept dense. On
the published Split-MNIST MLP that is 2.4k numbers per gradient instead of 478k.

Projecting a step's gradient ``g`` off the span of the stored gradients ``G`` (rows) is
``g - G^T K^+ G g`` with ``K = G G^T``, the ``m x m`` Gram matrix, which the factors give
cheaply: ``K = sum_layers (D D^T) * (H H^T + 1) + E E^T`` (``E`` the dense rows). ``G g`` and
``G^T c`` are then two matrix products per layer, compute-bound, instead of two passes over an
``m x n`` dense basis, memory-bound: one reads 1.5 GB per step at OGD-GTL's 800 vectors.
This projection is the one Gram-Schmidt's orthonormal basis gives (the same span); directions
whose singular value is below ``rel_tol`` of the largest are left out, as Gram-Schmidt skips
vectors that are numerically dependent, so that rounding in ``G g`` is not amplified.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class FactoredSpan:
    """The span of per-example gradients of ``params``, stored as factors per Linear layer.

    Args:
        params: the trainable parameters, in the order of the flat layout (:func:`~lightning_cl.maths.gradients.flatten_grads`).
        linears: the Linear layers whose weight (and bias) are among ``params``.
        rel_tol: singular values below this fraction of the largest are left out.
    """

    def __init__(self, params: list[torch.Tensor], linears: list[nn.Linear], rel_tol: float = 1e-4) -> None:
        self.params = list(params)
        self.linears = list(linears)
        in_linears = {id(p) for layer in self.linears for p in (layer.weight, layer.bias) if p is not None}
        self.others = [p for p in self.params if id(p) not in in_linears]
        self.rel_tol = rel_tol
        device = self.params[0].device
        self.deltas = [torch.empty(0, layer.out_features, device=device) for layer in self.linears]  # D, (m, out)
        self.inputs = [torch.empty(0, layer.in_features, device=device) for layer in self.linears]  # H, (m, in)
        self.dense = torch.empty(0, sum(p.numel() for p in self.others), device=device)  # E, (m, others)
        self._projector: torch.Tensor | None = None  # K^+, (m, m)
        self.rank = 0

    @property
    def count(self) -> int:
        """How many gradients are stored (the span's dimension is :attr:`rank`)."""
        return len(self.dense)

    def extend(self, deltas: list[torch.Tensor], inputs: list[torch.Tensor], dense: torch.Tensor) -> int:
        """Add ``m'`` gradients given by their factors (as :func:`~lightning_cl.maths.passes.per_example_linear_factors`
        returns them); returns how much the span's dimension grew."""
        before = self.rank
        self.deltas = [torch.cat([a, b.to(a)]) for a, b in zip(self.deltas, deltas)]
        self.inputs = [torch.cat([a, b.to(a)]) for a, b in zip(self.inputs, inputs)]
        self.dense = torch.cat([self.dense, dense.to(self.dense)])
        self._refresh()
        return self.rank - before

    def gram(self) -> torch.Tensor:
        """``K = G G^T`` in float64, from the factors."""
        k = self.dense.double() @ self.dense.double().T
        for layer, d, h in zip(self.linears, self.deltas, self.inputs):
            hh = h.double() @ h.double().T
            if layer.bias is not None:
                hh += 1  # the bias is a weight on a constant input 1
            k += (d.double() @ d.double().T) * hh
        return k

    def _kept_eigen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The Gram matrix's eigenvalues above ``rel_tol^2`` of the largest, and their eigenvectors (columns)."""
        values, vectors = torch.linalg.eigh(self.gram())
        keep = values > (self.rel_tol ** 2) * values.max().clamp(min=torch.finfo(values.dtype).tiny)
        return values[keep], vectors[:, keep]

    def _refresh(self) -> None:
        if self.count == 0:
            self._projector, self.rank = None, 0
            return
        values, vectors = self._kept_eigen()
        self.rank = len(values)
        self._projector = ((vectors / values) @ vectors.T).to(self.dense.dtype)

    def orthonormal_basis(self) -> torch.Tensor:
        """The span as ``(rank, n)`` orthonormal rows in the flat layout: dense, for tests and small models."""
        values, vectors = self._kept_eigen()
        coeffs = (vectors / values.sqrt()).T.to(self.dense.dtype)  # (rank, m)
        return coeffs @ self.dense_gradients()

    def dense_gradients(self) -> torch.Tensor:
        """The stored gradients ``G`` as ``(m, n)`` rows in the flat layout (memory: ``m * n``)."""
        pieces: dict[int, torch.Tensor] = {}
        for layer, d, h in zip(self.linears, self.deltas, self.inputs):
            pieces[id(layer.weight)] = (d[:, :, None] * h[:, None, :]).reshape(len(d), -1)
            if layer.bias is not None:
                pieces[id(layer.bias)] = d
        for p, e in zip(self.others, torch.split(self.dense, [p.numel() for p in self.others], dim=1)):
            pieces[id(p)] = e
        return torch.cat([pieces[id(p)] for p in self.params], dim=1)

    def _targets(self, tensors: list[torch.Tensor | None] | None) -> dict[int, torch.Tensor | None]:
        """``tensors`` (shaped like :attr:`params`, in order; default: their ``.grad``) by parameter."""
        tensors = [p.grad for p in self.params] if tensors is None else tensors
        return {id(p): t for p, t in zip(self.params, tensors)}

    def _coordinates(self, targets: dict[int, torch.Tensor | None]) -> torch.Tensor:
        """``G x``: the stored gradients' dot products with ``x`` (a missing tensor counts as 0)."""
        coords = torch.zeros(self.count, device=self.dense.device, dtype=self.dense.dtype)
        for layer, d, h in zip(self.linears, self.deltas, self.inputs):
            if (w := targets.get(id(layer.weight))) is not None:
                coords += ((d @ w) * h).sum(1)
            if layer.bias is not None and (b := targets.get(id(layer.bias))) is not None:
                coords += d @ b
        if self.others:
            others = [targets[id(p)] for p in self.others]
            flat = torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for p, t in zip(self.others, others)])
            coords += self.dense @ flat
        return coords

    @torch.no_grad()
    def project_(self, tensors: list[torch.Tensor | None] | None = None) -> torch.Tensor:
        """In place, remove from ``tensors`` (shaped like :attr:`params`, in order: a gradient or a
        change of the parameters; default: the parameters' ``.grad``) its component in the span;
        returns the removed component's norm. A missing tensor (``None``) is left as it is."""
        if self._projector is None:
            return torch.zeros((), device=self.dense.device)
        targets = self._targets(tensors)
        coords = self._coordinates(targets)  # G x
        c = self._projector @ coords  # K^+ G x
        for layer, d, h in zip(self.linears, self.deltas, self.inputs):
            if (w := targets.get(id(layer.weight))) is not None:
                w.addmm_((d * c[:, None]).T, h, alpha=-1.0)  # -= D^T diag(c) H
            if layer.bias is not None and (b := targets.get(id(layer.bias))) is not None:
                b.sub_(d.T @ c)
        if self.others:
            removal = torch.split(self.dense.T @ c, [p.numel() for p in self.others])
            for p, r in zip(self.others, removal):
                if (t := targets[id(p)]) is not None:
                    t.sub_(r.view_as(t))
        return torch.dot(coords, c).clamp(min=0).sqrt()  # ||G^T K^+ G x||, as the projector is one

    @torch.no_grad()
    def inside_norm(self, tensors: list[torch.Tensor | None]) -> torch.Tensor:
        """The norm of the component of ``tensors`` (as for :meth:`project_`) in the span, leaving them as they are."""
        if self._projector is None:
            return torch.zeros((), device=self.dense.device)
        coords = self._coordinates(self._targets(tensors))
        return torch.dot(coords, self._projector @ coords).clamp(min=0).sqrt()

    def to(self, device: torch.device | str) -> FactoredSpan:
        self.deltas = [d.to(device) for d in self.deltas]
        self.inputs = [h.to(device) for h in self.inputs]
        self.dense = self.dense.to(device)
        if self._projector is not None:
            self._projector = self._projector.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        # On the CPU so that a checkpoint made on a GPU loads anywhere.
        return {"deltas": [d.cpu() for d in self.deltas], "inputs": [h.cpu() for h in self.inputs], "dense": self.dense.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        shapes = [(layer.out_features, layer.in_features) for layer in self.linears]
        loaded = [(d.shape[1], h.shape[1]) for d, h in zip(state["deltas"], state["inputs"])]
        if loaded != shapes or state["dense"].shape[1] != self.dense.shape[1]:
            raise ValueError(f"The OGD gradients in the checkpoint are for layers {loaded}, the model has {shapes}.")
        self.deltas = [d.to(self.dense.device) for d in state["deltas"]]
        self.inputs = [h.to(self.dense.device) for h in state["inputs"]]
        self.dense = state["dense"].to(self.dense.device)
        self._refresh()
