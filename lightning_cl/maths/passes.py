"""Pure passes over data that continual-learning methods share: a mean-loss gradient (OGD),
per-example gradients (OGD's paper variants), the diagonal Fisher, empirical or expected (EWC,
Kirkpatrick et al. 2017), the output-norm importance (MAS, Aljundi et al. 2018) and the layer inputs (GPM).

Nothing here knows about Lightning: each function takes a module (or a forward function) and
tensors, leaves the module as it found it (mode, BatchNorm statistics), and is unit-tested on
tiny models in tests/test_passes.py. Per-example quantities use ``torch.func`` (``vmap`` of
``grad``) instead of a Python loop over examples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from lightning_cl.maths.gradients import flatten_grads

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # x, y, task id
# What a per-example gradient is taken of: (logits of one example, its label (0-d), the bool row of
# the output units it may use) -> a scalar, or a vector for a Jacobian. Under vmap a 0-d tensor
# cannot index (that would need .item()): use gather.
ExampleFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _logits(out: torch.Tensor | tuple) -> torch.Tensor:
    """Our networks return ``(logits, hidden)``; a plain ``nn.Module`` may return the logits."""
    return out[0] if isinstance(out, tuple) else out


def trainable_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """``module``'s parameters that take a gradient, by name, in ``named_parameters()`` order."""
    return {name: p for name, p in module.named_parameters() if p.requires_grad}


def first_examples(batches: Iterable[Batch], n: int | None) -> Batch:
    """The first ``n`` examples of ``batches`` as one ``(x, y, t)`` (fewer if there are not
    that many; None: all of them). On a shuffled pass (``task_train_loader``) they are a random
    sample of the task."""
    parts, count = [], 0
    for batch in batches:
        parts.append(batch[:3])
        count += len(batch[1])
        if n is not None and count >= n:
            break
    return tuple(torch.cat(p)[:n] for p in zip(*parts))


def mean_loss_gradient(
    module: nn.Module,
    batches: Iterable[Batch],
    params: Sequence[torch.Tensor],
    forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | tuple] | None = None,
) -> torch.Tensor:
    """The gradient of the cross-entropy, averaged over ``batches``, flattened over ``params``
    (:func:`~lightning_cl.maths.gradients.flatten_grads` layout), with ``module`` in train mode.

    ``forward(x, t)`` gives the logits (default ``module(x)``; OGD passes the scenario's masked
    forward). Train mode updates BatchNorm's running statistics: they are restored, and so is
    the module's mode, because measuring must not change the model.
    """
    forward = forward if forward is not None else (lambda x, t: module(x))
    total = torch.zeros(sum(p.numel() for p in params), device=params[0].device)
    count = 0
    was_training = module.training
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    module.train()
    with torch.enable_grad():
        for x, y, t in batches:
            grads = torch.autograd.grad(F.cross_entropy(_logits(forward(x, t)), y), params, allow_unused=True)
            total += flatten_grads(params, grads)
            count += 1
    with torch.no_grad():
        for name, b in module.named_buffers():
            b.copy_(buffers[name])
    module.train(was_training)
    return total / max(count, 1)


def per_example_gradients(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    of: ExampleFn,
    units: torch.Tensor | None = None,
    jacobian: bool = False,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Per example, the gradient of ``of(logits, y, t)`` with respect to every trainable
    parameter of ``module``, in eval mode (BatchNorm's running statistics, no Dropout: the
    only mode in which one example's gradient is defined for a BatchNorm network).

    Args:
        module: returns the logits (or ``(logits, hidden)``) of a batch.
        x, y: the examples and their labels.
        of: what to differentiate, from one example's unmasked logits ``(outputs,)``.
        units: ``(examples, outputs)`` bool, each example's units (task-IL: its task's row of
            the unit mask); default all True.
        jacobian: ``of`` returns a vector: give its Jacobian (``jacrev``) instead of a gradient.
        chunk_size: examples per vectorised computation (bounds memory); None: all at once.

    Returns:
        ``{name: (examples, [len(of),] *param.shape)}`` for each trainable parameter, in
        ``module.named_parameters()`` order.
    """
    params = {name: p.detach() for name, p in trainable_parameters(module).items()}
    buffers = dict(module.named_buffers())
    units = torch.ones(len(y), 1, dtype=torch.bool, device=y.device) if units is None else units

    def example_fn(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
        return of(_logits(functional_call(module, (p, buffers), (xi.unsqueeze(0),)))[0], yi, ui)

    fn = (jacrev if jacobian else grad)(example_fn)
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            return vmap(fn, in_dims=(None, 0, 0, 0), chunk_size=chunk_size)(params, x, y, units)
    finally:
        module.train(was_training)


def _units(t: torch.Tensor | None, unit_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Each example's row of the task-IL unit mask (None: every unit)."""
    return None if unit_mask is None else unit_mask[t]


FISHER_LABELS = ("empirical", "expected", "weighted")


def _mean_over_chunks(
    module: nn.Module, x: torch.Tensor, y: torch.Tensor, units: torch.Tensor | None, of: ExampleFn,
    transform: Callable[[torch.Tensor], torch.Tensor], chunk_size: int, weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Mean over examples of ``transform(per-example gradient of of)`` (times each example's
    ``weights`` if given), one chunk at a time, so that only ``chunk_size`` per-example
    gradients exist at once (each is as large as the model)."""
    total: dict[str, torch.Tensor] = {}
    for start in range(0, len(x), chunk_size):
        end = start + chunk_size
        chunk_units = None if units is None else units[start:end]
        grads = per_example_gradients(module, x[start:end], y[start:end], of, chunk_units)
        for name, g in grads.items():
            g = transform(g)
            if weights is not None:
                g = g * weights[start:end].reshape(-1, *[1] * (g.dim() - 1))
            summed = g.sum(0)
            total[name] = total[name] + summed if name in total else summed
    return {name: s / max(len(x), 1) for name, s in total.items()}


def fisher_diagonal(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor | None = None,
    unit_mask: torch.Tensor | None = None,
    chunk_size: int = 100,
    labels: str = "empirical",
    linears: Sequence[nn.Module] | None = None,
) -> dict[str, torch.Tensor]:
    """EWC's diagonal Fisher: the mean over the examples of the squared gradient of a
    log-likelihood ``log softmax(logits)[c]``, one example at a time, in eval mode.

    ``labels="empirical"`` takes the true label ``c = y`` (the empirical Fisher);
    ``labels="expected"`` takes every class, weighted by the model's probability of it,
    ``sum_c p_c (d log p_c)^2`` (the Fisher information itself, the default of van de Ven et
    al.'s code: ``fisher_labels='all'``). They differ most where the model is confident: on a
    task it has learnt to a loss near 0, the empirical Fisher is near 0 too (``(1 - p)^2``
    against ``(1 - p)``). ``labels="weighted"`` takes the true label's term of that sum alone,
    ``p_y (d log p_y)^2``: the Fisher of Mammoth's online EWC (``models/ewc_on.py``,
    ``end_task``: ``fish += exp_cond_prob * grads ** 2`` with ``exp_cond_prob`` the true
    label's probability, one example at a time).

    ``unit_mask`` (task-IL, ``(tasks, outputs)`` bool) restricts each example's softmax to its
    task's units, as the training loss does. Returns ``{name: tensor shaped like the parameter}``.

    ``linears`` (the network's ``linear_layers()``): where every trainable parameter is a weight
    or bias of one of them, each layer runs once per forward pass on ``(batch, features)``
    inputs, the per-example gradients are not formed: a Linear layer's gradient for one example
    is ``d h^T`` (``h`` its input, ``d`` the gradient at its output), so its square is
    ``d^2 (h^2)^T`` and the sum over examples is one matrix product,
    ``(sum_c p_c d_c^2)^T h^2`` (:func:`_factored_fisher`). It costs a forward pass and one
    backward pass per label of each chunk instead of one per example and label: the expected
    Fisher of a Split-MNIST task (~10,800 examples, 10 outputs) in seconds instead of minutes.
    Otherwise (or without ``linears``) the per-example gradients are taken with ``vmap``.
    """
    if labels not in FISHER_LABELS:
        raise ValueError(f"labels={labels!r}: use one of {', '.join(FISHER_LABELS)}")
    units = _units(t, unit_mask)
    if linears is not None:
        fisher = _factored_fisher(module, linears, x, y, units, labels, chunk_size)
        if fisher is not None:
            return fisher

    def log_likelihood(logits: torch.Tensor, yi: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(_masked(logits, ui), dim=0).gather(0, yi.unsqueeze(0)).squeeze(0)

    if labels == "empirical":
        return _mean_over_chunks(module, x, y, units, log_likelihood, torch.square, chunk_size)
    with torch.no_grad():
        was_training = module.training
        module.eval()
        logits = _logits(module(x))
        module.train(was_training)
        probs = F.softmax(logits if units is None else _masked(logits, units), dim=1)
    if labels == "weighted":
        weight = probs.gather(1, y[:, None]).squeeze(1)
        return _mean_over_chunks(module, x, y, units, log_likelihood, torch.square, chunk_size, weights=weight)
    # E_c[(d log p_c)^2] = sum_c p_c (d log p_c)^2: the Fisher of each class label, weighted.
    total: dict[str, torch.Tensor] = {}
    for c in range(probs.shape[1]):
        if not probs[:, c].any():
            continue  # a unit no example may use (task-IL, or classes not in the data)
        weight = probs[:, c]
        fisher = _mean_over_chunks(
            module, x, torch.full_like(y, c), units, log_likelihood, torch.square, chunk_size, weights=weight
        )
        total = fisher if not total else {n: total[n] + f for n, f in fisher.items()}
    return total


def _masked(logits: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``logits`` with the units an example may not use at the lowest float (as ``mask_logits`` does)."""
    return logits.masked_fill(~units, torch.finfo(logits.dtype).min)


def _factored_fisher(
    module: nn.Module, linears: Sequence[nn.Module], x: torch.Tensor, y: torch.Tensor,
    units: torch.Tensor | None, labels: str, chunk_size: int,
) -> dict[str, torch.Tensor] | None:
    """:func:`fisher_diagonal` from the Linear layers' factors, or None where the network is not
    made of ``linears`` alone (a trainable parameter outside them, a layer that runs twice in a
    forward pass or on inputs that are not ``(batch, features)``)."""
    params = trainable_parameters(module)
    names = {id(p): n for n, p in params.items()}
    layer_names = [(names.get(id(layer.weight)), names.get(id(layer.bias)) if layer.bias is not None else None)
                   for layer in linears if isinstance(layer, nn.Linear)]
    covered = {n for pair in layer_names for n in pair if n is not None}
    if len(layer_names) != len(linears) or covered != set(params):
        return None
    totals = {n: torch.zeros_like(p, memory_format=torch.contiguous_format).detach() for n, p in params.items()}
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}
    fits = [True]

    def keep(i: int):
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if i in outputs or args[0].dim() != 2:
                fits[0] = False
            inputs[i], outputs[i] = args[0].detach(), out
        return hook

    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(linears)]
    was_training = module.training
    module.eval()
    try:
        for start in range(0, len(x), chunk_size):
            end = start + chunk_size
            inputs.clear()
            outputs.clear()
            with torch.enable_grad():
                logits = _logits(module(x[start:end]))
                if not fits[0] or len(outputs) != len(linears):
                    return None
                if units is not None:
                    logits = _masked(logits, units[start:end])
                log_p = F.log_softmax(logits, dim=1)
                outs = [outputs[i] for i in range(len(linears))]
                if labels == "empirical":
                    terms = [(log_p.gather(1, y[start:end, None]).sum(), None)]
                elif labels == "weighted":
                    terms = [(log_p.gather(1, y[start:end, None]).sum(), log_p.detach().gather(1, y[start:end, None]).exp())]
                else:
                    probs = log_p.detach().exp()
                    terms = [(log_p[:, c].sum(), probs[:, c, None]) for c in range(log_p.shape[1]) if probs[:, c].any()]
                # Per example and layer output, sum_c p_c d_c^2 (the true label's d^2 alone, empirical).
                weighted = [torch.zeros_like(o, requires_grad=False) for o in outs]
                for k, (value, weight) in enumerate(terms):
                    deltas = torch.autograd.grad(value, outs, retain_graph=k + 1 < len(terms))
                    for a, d in zip(weighted, deltas):
                        a.add_(d.square() if weight is None else weight * d.square())
            for i, (weight_name, bias_name) in enumerate(layer_names):
                if weight_name is not None:
                    totals[weight_name] += weighted[i].T @ inputs[i].square()
                if bias_name is not None:
                    totals[bias_name] += weighted[i].sum(0)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return {n: v / max(len(x), 1) for n, v in totals.items()}


def output_norm_importance(
    module: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor | None = None,
    unit_mask: torch.Tensor | None = None,
    chunk_size: int = 100,
) -> dict[str, torch.Tensor]:
    """MAS's importance: the mean over the examples of ``|d ||f(x)||^2 / d theta|``, ``f(x)``
    the logits, in eval mode. With ``unit_mask`` (task-IL) ``f(x)`` is the example's task's
    units only (a head per task). Returns ``{name: tensor shaped like the parameter}``."""
    def squared_norm(logits: torch.Tensor, yi: torch.Tensor, ui: torch.Tensor) -> torch.Tensor:
        return (logits * ui).square().sum()  # zero, not -inf as in mask_logits: other tasks' units add nothing

    labels = torch.zeros(len(x), dtype=torch.long, device=x.device)  # unused
    return _mean_over_chunks(module, x, labels, _units(t, unit_mask), squared_norm, torch.abs, chunk_size)


@torch.no_grad()
def layer_inputs(network: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The input of each of ``layers`` when ``network(x)`` runs (one forward pass, no gradients),
    in the order of ``layers``; ``(examples, in_features)`` each for Linear layers.

    The network runs in the mode it is in: the caller decides (GPM uses eval mode, the
    representation the model tests with).
    """
    inputs: list[torch.Tensor | None] = [None] * len(layers)

    def keep(i: int):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs[i] = args[0].detach()
        return hook

    handles = [layer.register_forward_pre_hook(keep(i)) for i, layer in enumerate(layers)]
    try:
        network(x)
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i, v in enumerate(inputs) if v is None]
    if missing:
        raise ValueError(f"layers {missing} were not called by the network's forward pass")
    return inputs


def per_example_linear_factors(
    module: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    of: ExampleFn,
    linears: Sequence[nn.Linear],
    units: torch.Tensor | None = None,
    jacobian: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The per-example gradients of ``of(logits, y, units)`` (as :func:`per_example_gradients`,
    in eval mode) with respect to the weight and bias of each of ``linears``, as factors: a
    Linear layer's gradient for one example is ``d h^T`` (and ``d`` for its bias), ``h`` the
    example's input to the layer and ``d`` the gradient at the layer's output.

    One forward pass and one backward pass (one per output for ``jacobian``): in eval mode the
    examples do not interact, so the gradient of the sum over examples at an example's output
    is that example's ``d``. Each layer must run once per forward pass.

    Returns:
        ``(deltas, inputs)``: per layer ``(rows, out_features)`` and ``(rows, in_features)``;
        ``rows`` is the number of examples (times the number of outputs for ``jacobian``,
        example-major, as :func:`per_example_gradients` orders a Jacobian).
    """
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            if i in outputs:
                raise ValueError(f"Linear layer {i} ran twice in one forward pass: its gradient is not one outer product")
            inputs[i], outputs[i] = args[0].detach(), out
        return hook

    units = torch.ones(len(y), 1, dtype=torch.bool, device=y.device) if units is None else units
    handles = [layer.register_forward_hook(keep(i)) for i, layer in enumerate(linears)]
    was_training = module.training
    module.eval()
    try:
        with torch.enable_grad():
            values = vmap(of)(_logits(module(x)), y, units)  # (examples,) or (examples, outputs)
            outs = [outputs[i] for i in range(len(linears))]
            if not jacobian:
                deltas = list(torch.autograd.grad(values.sum(), outs))
            else:
                per_output = [torch.autograd.grad(values[:, k].sum(), outs, retain_graph=True) for k in range(values.shape[1])]
                # (examples, outputs, out_features) -> example-major rows
                deltas = [torch.stack(ds, dim=1).reshape(-1, ds[0].shape[1]) for ds in zip(*per_output)]
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    repeat = values.shape[1] if jacobian else 1
    return [d.detach() for d in deltas], [inputs[i].repeat_interleave(repeat, dim=0) for i in range(len(linears))]
