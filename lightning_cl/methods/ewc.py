"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks", PNAS, arXiv:1612.00796) and its online variant (Schwarz et al. 2018, "Progress
& Compress: A scalable framework for continual learning", ICML, arXiv:1805.06370).

After each task, the diagonal Fisher information of the task (by default the empirical Fisher
of the published protocol: per-example gradients of the log-likelihood of the true label,
squared, averaged over up to 1000 training examples) says how much each parameter mattered; later tasks pay
``lam/2 * sum_k F_k (theta - theta*_k)^2`` for moving it away from where task ``k`` left it.
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.passes import first_examples, fisher_diagonal, trainable_parameters
from lightning_cl.methods.quadratic_penalty import QuadraticPenalty, Tensors
from lightning_cl.task_callback import setting


class EWC(QuadraticPenalty):
    """Penalise moving the parameters that the Fisher of an earlier task says it relied on.

    After each task (but the last), the diagonal empirical Fisher ``F_k`` of that task is
    estimated on its first ``fisher_examples`` training examples of a shuffled pass, in eval
    mode, with the scenario's output mask; the parameters ``theta*_k`` are kept. Every later
    training step adds the gradient of ``lam/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2``
    (:class:`~lightning_cl.methods.quadratic_penalty.QuadraticPenalty`), whose value is logged as
    ``train/loss_ewc``. The Fisher is per task, so memory grows by two models per task.

    Args:
        lam: the penalty's weight lambda (the Split-MNIST protocol of van de Ven et al. 2022:
            task-IL 1e5, domain-IL 1e10, class-IL 1e9).
        fisher_examples: the most training examples of a task the Fisher is averaged over.
        fisher: ``"empirical"`` (the true label's log-likelihood, the protocol's) or
            ``"expected"`` (every label's, weighted by the model's probability: the Fisher
            itself, van de Ven et al.'s default). On a task learnt to near-zero loss (Split-MNIST
            task-IL) the empirical Fisher is ~10^4 times smaller, and ``lam`` 1e5 hardly binds.

    Raises:
        ValueError: for a negative ``lam``, ``fisher_examples`` below 1 or an unknown ``fisher``.
    """

    name = "ewc"
    keeps = ("fishers", "anchors")

    def __init__(self, lam: float, fisher_examples: int = 1000, fisher: Literal["empirical", "expected"] = "empirical") -> None:
        if lam < 0:
            raise ValueError(f"{setting(self, 'lam')}={lam} must be >= 0.")
        if fisher_examples < 1:
            raise ValueError(f"{setting(self, 'fisher_examples')}={fisher_examples} must be at least 1.")
        if fisher not in ("empirical", "expected"):
            raise ValueError(f"{setting(self, 'fisher')}={fisher!r} is not supported; use 'empirical' or 'expected'.")
        super().__init__()
        self.lam, self.fisher_examples, self.fisher = lam, fisher_examples, fisher
        self.fishers: list[Tensors] = []  # F_k, one per consolidated task
        self.anchors: list[Tensors] = []  # theta*_k

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        x, y, t = first_examples(trainer.datamodule.task_train_loader(task), self.fisher_examples)
        fisher = fisher_diagonal(pl_module.network, x, y, t, unit_mask=pl_module.unit_mask, labels=self.fisher)
        self._consolidate(fisher, {n: p.detach().clone() for n, p in trainable_parameters(pl_module.network).items()})

    def _consolidate(self, fisher: Tensors, anchor: Tensors) -> None:
        self.fishers.append(fisher)
        self.anchors.append(anchor)
        self.terms_changed()

    @override
    def penalty_terms(self) -> list[tuple[Tensors, Tensors]]:
        """``lam/2 * F_k`` and ``theta*_k`` per consolidated task."""
        return [({n: self.lam / 2 * v for n, v in f.items()}, a) for f, a in zip(self.fishers, self.anchors)]


class OnlineEWC(EWC):
    """EWC with one running Fisher, ``F <- gamma * F + F_new`` after each task, and one anchor,
    the parameters after the latest task (Schwarz et al. 2018): memory stays at two models.

    Args:
        lam: the penalty's weight (here EWC's lambda of the scenario).
        gamma: how much of the running Fisher is kept at each task end (1: none is forgotten).
        fisher_examples: the most training examples of a task the Fisher is averaged over.
        fisher: ``"empirical"`` or ``"expected"``, as for :class:`EWC`.

    Raises:
        ValueError: for a negative ``lam``, ``gamma`` outside [0, 1], ``fisher_examples`` below 1
            or an unknown ``fisher``.
    """

    name = "online_ewc"

    def __init__(
        self, lam: float, gamma: float = 1.0, fisher_examples: int = 1000,
        fisher: Literal["empirical", "expected"] = "empirical",
    ) -> None:
        super().__init__(lam, fisher_examples, fisher)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"{setting(self, 'gamma')}={gamma} must be in [0, 1].")
        self.gamma = gamma

    @override
    def _consolidate(self, fisher: Tensors, anchor: Tensors) -> None:
        if self.fishers:
            fisher = {n: self.gamma * self.fishers[0][n] + f for n, f in fisher.items()}
        self.fishers, self.anchors = [fisher], [anchor]
        self.terms_changed()
