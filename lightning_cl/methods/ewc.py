"""Elastic Weight Consolidation (Kirkpatrick et al. 2017, "Overcoming catastrophic forgetting in
neural networks", PNAS, arXiv:1612.00796) and its online variant (Schwarz et al. 2018, "Progress
& Compress: A scalable framework for continual learning", ICML, arXiv:1805.06370).

After each task, the diagonal Fisher information of the task says how much each parameter
mattered; later tasks pay ``lam/2 * sum_k F_k (theta - theta*_k)^2`` for moving it away from
where task ``k`` left it.

As van de Ven, Tuytelaars & Tolias 2022 ("Three types of incremental learning", Nature Machine
Intelligence) compute it, whose Split-MNIST lambdas the configs hold. Reference code:
github.com/GMvandeVen/continual-learning at commit df9f983c1f3981496d2ca128cbdf1d846e33adab (the
2022 version), ``models/cl/continual_learner.py``:

* ``estimate_fisher``: in eval mode, batches of one example (``fisher_batch = 1``), with
  ``fisher_labels = 'all'``: for every label, the squared gradient of its log-likelihood weighted
  by the model's probability of it (the expected Fisher; ``'true'``, our ``empirical``, is an
  option there too), over ``fisher_n = None`` examples, a full pass over the task's training set
  (``train.py``, ``train_cl``: ``estimate_fisher(training_dataset, allowed_classes)``); the
  softmax over the task's units in task-IL (``allowed_classes``), over every output otherwise
  (``options.py``: ``--active-classes`` default ``all``). It divides the sum by the last index of
  the pass, ``N - 1``; we take the mean (a factor ``N / (N - 1)``, 1.0001 for a task).
* ``ewc_loss``: ``(1/2) * sum F (theta - theta*)^2`` times ``reg_strength`` (lambda), one term per
  task for EWC (``param_values.py``, ``set_method_options``: ``--ewc`` sets ``offline = True``).
"""

from __future__ import annotations

from typing import Literal

import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.maths.passes import FISHER_LABELS, first_examples, fisher_diagonal, trainable_parameters
from lightning_cl.methods.quadratic_penalty import QuadraticPenalty, Tensors
from lightning_cl.task_callback import setting


class EWC(QuadraticPenalty):
    """Penalise moving the parameters that the Fisher of an earlier task says it relied on.

    After each task (but the last), the diagonal Fisher ``F_k`` of that task is estimated on its
    training examples (all of them by default, one shuffled pass; else the first
    ``fisher_examples`` of it), one example at a time in eval mode, with the scenario's output mask;
    the parameters ``theta*_k`` are kept. Every later training step adds the gradient of
    ``lam/2 * sum_k sum_i F_k,i (theta_i - theta*_k,i)^2``
    (:class:`~lightning_cl.methods.quadratic_penalty.QuadraticPenalty`), whose value is logged as
    ``train/loss_ewc``. The Fisher is per task, so memory grows by two models per task. A network
    made of Linear layers (``linear_layers()``) gets its Fisher from the layers' factors
    (:func:`~lightning_cl.maths.passes.fisher_diagonal`): about 1 s per task end for Split-MNIST.

    Args:
        lam: the penalty's weight lambda (the Split-MNIST protocol of van de Ven et al. 2022:
            task-IL 1e5, domain-IL 1e10, class-IL 1e9; they assume the expected Fisher).
        fisher_examples: the most training examples of a task the Fisher is averaged over;
            None (the default, as the reference code): all of them.
        fisher: ``"expected"`` (the default, as the reference code: every label's log-likelihood,
            weighted by the model's probability of it; the Fisher itself) or ``"empirical"`` (the
            true label's). On a task learnt to near-zero loss (Split-MNIST task-IL) the empirical
            Fisher is ~10^4 times smaller, and the protocol's ``lam`` hardly binds with it.
            ``"weighted"``: the true label's term of the expected Fisher, ``p_y (d log p_y)^2``,
            the Fisher of Mammoth's online EWC (Buzzega et al. 2020's protocol).

    Raises:
        ValueError: for a negative ``lam``, ``fisher_examples`` below 1 or an unknown ``fisher``.
    """

    name = "ewc"
    keeps = ("fishers", "anchors")

    def __init__(
        self, lam: float, fisher_examples: int | None = None, fisher: Literal["empirical", "expected", "weighted"] = "expected",
    ) -> None:
        if lam < 0:
            raise ValueError(f"{setting(self, 'lam')}={lam} must be >= 0.")
        if fisher_examples is not None and fisher_examples < 1:
            raise ValueError(f"{setting(self, 'fisher_examples')}={fisher_examples} must be at least 1 "
                             "(or null: all of a task's training examples).")
        if fisher not in FISHER_LABELS:
            raise ValueError(f"{setting(self, 'fisher')}={fisher!r} is not supported; use one of {', '.join(FISHER_LABELS)}.")
        super().__init__()
        self.lam, self.fisher_examples, self.fisher = lam, fisher_examples, fisher
        self.fishers: list[Tensors] = []  # F_k, one per consolidated task
        self.anchors: list[Tensors] = []  # theta*_k

    @override
    def consolidate(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        x, y, t = first_examples(trainer.datamodule.task_train_loader(task), self.fisher_examples)
        network = pl_module.network
        linears = network.linear_layers() if hasattr(network, "linear_layers") else None
        fisher = fisher_diagonal(network, x, y, t, unit_mask=pl_module.unit_mask, labels=self.fisher, linears=linears)
        self._consolidate(fisher, {n: p.detach().clone() for n, p in trainable_parameters(network).items()})

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
    the parameters after the latest task (Schwarz et al. 2018): memory stays at two models. The
    penalty is ``lam/2 * gamma * F (theta - theta*)^2``: the running Fisher decayed once more, as
    in Schwarz et al.'s ``gamma F*`` and in the reference code (``continual_learner.py``,
    ``ewc_loss``: ``fisher = self.gamma*fisher`` when online; ``estimate_fisher``:
    ``est_fisher_info[n] += self.gamma * existing_values``; the same in both the 2022 version,
    commit df9f983c1f3981496d2ca128cbdf1d846e33adab, and the 2019 one, commit
    39301f9454a40304d43fa9444b6e94f4f13e328f). With ``gamma = 1`` it is EWC with the Fishers summed
    around the latest anchor.

    Args:
        lam: the penalty's weight (the configs hold van de Ven et al.'s Split-MNIST values for
            online EWC: configs/methods/online_ewc.yaml says where they come from).
        gamma: how much of the running Fisher is kept at each task end (1: none is forgotten;
            the reference code's default).
        fisher_examples: as for :class:`EWC` (None: all of a task's training examples).
        fisher: ``"expected"`` (default), ``"empirical"`` or ``"weighted"``, as for :class:`EWC`.

    Raises:
        ValueError: for a negative ``lam``, ``gamma`` outside [0, 1], ``fisher_examples`` below 1
            or an unknown ``fisher``.
    """

    name = "online_ewc"

    def __init__(
        self, lam: float, gamma: float = 1.0, fisher_examples: int | None = None,
        fisher: Literal["empirical", "expected", "weighted"] = "expected",
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

    @override
    def penalty_terms(self) -> list[tuple[Tensors, Tensors]]:
        """``lam/2 * gamma * F`` and ``theta*`` (the latest anchor)."""
        scale = self.lam / 2 * self.gamma
        return [({n: scale * v for n, v in f.items()}, a) for f, a in zip(self.fishers, self.anchors)]
