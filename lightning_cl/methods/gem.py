"""Gradient Episodic Memory (Lopez-Paz and Ranzato 2017, "Gradient Episodic Memory for Continual
Learning", NeurIPS, arXiv:1706.08840).

An episodic memory keeps examples of every earlier task. At each step of a later task, the
gradient ``g_k`` of the loss on task ``k``'s memory is computed for every earlier task ``k``; if
the step's gradient ``g`` would increase any of those losses (``<g, g_k> < 0`` for some ``k``),
it is replaced by the closest gradient that increases none:

    min_z  1/2 ||g - z||^2   subject to   G z >= 0,   G = (g_1, ..., g_{t-1})^T.

The quadratic programme is solved in its dual, one variable per earlier task:

    min_v  1/2 v^T G G^T v + g^T G^T v   subject to   v >= margin,   then   z = G^T v + g,

with ``quadprog`` (Goldfarb-Idnani), in float64 on the CPU, as in both references: the authors'
code (github.com/facebookresearch/GradientEpisodicMemory at 34c6b8e, model/gem.py,
``project2cone2``) and Mammoth's (github.com/aimagelab/mammoth at 0d727a7, models/gem.py, the
same function). The margin (the authors' ``memory_strength``, Mammoth's ``gamma``; the paper's
gamma, a small constant added to the dual solution that biases the step towards backward
transfer) is, in both codes and here, the lower bound of ``v``. Both codes also add
``eps = 1e-3`` to the diagonal of ``G G^T`` (the authors' version at 1919989 does not): it keeps
the programme strictly convex when the memory gradients are linearly dependent (e.g. one of
them is 0). ``eps: 0`` is the paper's programme exactly; with ``eps > 0`` the constraints hold
up to ``<z, g_k> >= -eps v_k`` (the KKT conditions of the regularised dual).

**Which reference is followed**: Mammoth's models/gem.py at 0d727a7 (the protocol this method
is run in), which is the authors' algorithm with a memory of its own:

* filled at the end of each task, with a uniform random sample of the task's training
  examples (the authors keep a ring buffer of each task's most recent ``n_memories`` training
  examples, which is also a uniform sample of a shuffled task, and use it once the task is over);
* of ``memories // num_tasks`` examples per task for a total budget (``budget: total``, Mammoth's
  ``buffer_size // dataset.N_TASKS``; the last task's share is never used, as there), or of
  ``memories`` per task (``budget: per_task``, the authors' ``n_memories``).

Every step computes each earlier task's gradient on *all* of its memory (both references),
in train mode, with one forward and backward pass per earlier task. One deviation from
Mammoth, in task-IL: the logits of task ``k``'s memory are masked to task ``k``'s units
(``scenario_forward``), as the authors' ``compute_offsets`` slicing does (the same
cross-entropy); Mammoth's ``observe`` masks neither the memory nor the current batch (its
task-IL masks only at evaluation), while the package's training loss of the current batch is
masked in task-IL, and the memory's loss is masked the same way.

Deviation (numerics only): ``G G^T`` and ``G g`` are computed on the training device in float64
(the references copy ``G`` to the CPU and compute them with numpy in float64); only the
``(t-1) x (t-1)`` programme goes to the CPU. The check ``<g, g_k> < 0`` uses those float64
products (the references: float32).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import quadprog
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.gradients import flatten_grads
from lightning_cl.methods.memory import run_seed, task_stream
from lightning_cl.methods.projected_step import ProjectedStep
from lightning_cl.task_callback import setting

Budget = Literal["per_task", "total"]
BUDGETS = ("per_task", "total")


def gem_project_(g: torch.Tensor, memory_grads: torch.Tensor, margin: float = 0.5,
                 eps: float = 1e-3) -> tuple[np.ndarray, np.ndarray | None]:
    """GEM's projection of ``g`` (``(n,)``) against the rows of ``memory_grads`` (``(k, n)``), in place.

    If ``<g, g_k> >= 0`` for every row ``g_k``, ``g`` is left as it is. Otherwise the dual
    programme ``min_v 1/2 v^T (G G^T + eps I) v + (G g)^T v`` s.t. ``v >= margin`` is solved
    with quadprog and ``g <- g + G^T v`` (computed in float64, then stored in ``g``'s dtype).
    With ``margin = eps = 0`` this is the Euclidean projection of ``g`` onto ``{z: G z >= 0}``.

    Returns:
        The dot products ``G g`` before the projection (float64), and the dual solution ``v``
        (``None`` when nothing was projected).

    Raises:
        ValueError: when ``eps = 0`` and ``G G^T`` is singular (quadprog needs it positive definite).
    """
    G = memory_grads.double()
    gd = g.double()
    k = G.shape[0]
    # One transfer to the host: G G^T and G g together.
    products = torch.cat([(G @ G.T).reshape(-1), G @ gd]).cpu().numpy()
    gram, dots = products[: k * k].reshape(k, k), products[k * k:]
    if not (dots < 0).any():
        return dots, None
    gram = 0.5 * (gram + gram.T) + eps * np.eye(k)  # symmetric to rounding, as quadprog needs
    try:
        # quadprog: min 1/2 v^T P v - a^T v subject to C^T v >= b.
        v = quadprog.solve_qp(gram, -dots, np.eye(k), np.full(k, float(margin)))[0]
    except ValueError as error:
        raise ValueError(f"GEM's quadratic programme has no unique solution ({error}): the memory gradients of the "
                         "earlier tasks are linearly dependent (e.g. one is 0). Set trainer.callbacks: GEM "
                         "init_args.eps above 0 (both reference codes: 1e-3).") from error
    g.copy_(gd + torch.from_numpy(v).to(G) @ G)
    return dots, v


class GEM(ProjectedStep):
    """Project every optimiser step of task 2 onwards so that no earlier task's memory loss increases.

    At the end of each task (but the last) a uniform random sample of its training examples is
    kept: ``memories`` of them (``budget: per_task``) or ``memories // num_tasks``
    (``budget: total``). At every later step the gradient of the cross-entropy on each earlier
    task's memory is computed with ``torch.autograd.grad`` (masked to that task's units in
    task-IL; the model stays in train mode, as in both references) and the step's gradient is
    projected by :func:`gem_project_` in ``on_before_optimizer_step`` (once per step, on the
    final gradient). The fraction of projected steps is logged as ``gem/projected_frac``.

    Args:
        memories: examples kept per task (``budget: per_task``; the authors' ``n_memories``,
            256 on MNIST), or in all (``budget: total``; Mammoth's ``buffer_size``).
        budget: ``"per_task"`` or ``"total"`` (split evenly over the sequence's tasks).
        margin: the lower bound of the dual variables (the authors' ``memory_strength``,
            Mammoth's ``gamma``; 0.5 in both); 0 is the plain projection.
        eps: added to the diagonal of ``G G^T`` (1e-3 in both codes; 0: the paper's programme).

    Raises:
        ValueError: for an unknown ``budget``, ``memories`` below 1, or a negative ``margin``
            or ``eps``; at setup, for a total budget smaller than the number of tasks.
    """

    name = "gem"
    projects_gradients = True
    keeps = ("memory", "generator")

    def __init__(self, memories: int = 256, budget: Budget = "per_task", margin: float = 0.5, eps: float = 1e-3) -> None:
        if budget not in BUDGETS:
            raise ValueError(f"{setting(self, 'budget')}={budget!r} is not supported; use one of {', '.join(BUDGETS)}.")
        if memories < 1:
            raise ValueError(f"{setting(self, 'memories')}={memories} must be at least 1.")
        for arg, value in (("margin", margin), ("eps", eps)):
            if not value >= 0:
                raise ValueError(f"{setting(self, arg)}={value} must be at least 0.")
        super().__init__()
        self.memories, self.budget, self.margin, self.eps = memories, budget, margin, eps
        # One (x, y, t) per finished task, in task order, on the module's device.
        self.memory: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # Draws each task's memory: on the CPU, so that its state is plain data in the checkpoint.
        self.generator = torch.Generator()
        self._projected = 0

    def per_task(self, num_tasks: int) -> int:
        """Examples kept of each task in a sequence of ``num_tasks``."""
        return self.memories if self.budget == "per_task" else self.memories // num_tasks

    @override
    def check_setup(self, datamodule, pl_module) -> None:
        super().check_setup(datamodule, pl_module)
        if self.per_task(datamodule.num_tasks) < 1:
            raise ValueError(f"{setting(self, 'memories')}={self.memories} with budget 'total' keeps no example of "
                             f"each of the {datamodule.num_tasks} tasks: give at least {datamodule.num_tasks}.")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Before a checkpoint is restored, which then overwrites both.
        self.memory = []
        self.generator.manual_seed(run_seed())

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        x, y, t = task_stream(trainer.datamodule, task)
        own = (t == task).nonzero().squeeze(1)  # joint training's stream also holds the earlier tasks
        n = self.per_task(trainer.datamodule.num_tasks)
        keep = own[torch.randperm(len(own), generator=self.generator)[:n].to(own.device)]
        device = pl_module.device
        self.memory.append((x[keep].to(device), y[keep].to(device), t[keep].to(device)))

    @override
    def constrains(self) -> bool:
        return bool(self.memory)

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._projected = self._steps = 0

    def memory_gradients(self, pl_module: LightningModule) -> torch.Tensor:
        """``(earlier tasks, parameters)``: the gradient of the cross-entropy on each earlier task's memory."""
        rows = []
        with torch.enable_grad():
            for x, y, t in self.memory:
                logits, _ = pl_module.scenario_forward(x, t)
                grads = torch.autograd.grad(F.cross_entropy(logits, y), self._params, allow_unused=True)
                rows.append(flatten_grads(self._params, grads))
        return torch.stack(rows)

    @override
    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        if not self.constrains():
            return
        g = self._grad.gather()
        _, v = gem_project_(g, self.memory_gradients(pl_module), self.margin, self.eps)
        if v is not None:
            self._grad.scatter(g)
            self._projected += 1
        self._steps += 1
