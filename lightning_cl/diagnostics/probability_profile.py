"""Probability profile: for each true class seen so far, the mean softmax output over its test images.

The notebook's diagnostics, 3: a classes x classes picture that shows whether the old classes keep
any probability mass after a new task (in naive fine-tuning they do not: every row puts its
mass on the newest task's classes). Drawn after each task.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from typing_extensions import override

from lightning_cl.diagnostics.diagnostic import Diagnostic
from lightning_cl.plots import probability_profile_figure


def probability_profile(logits: torch.Tensor, y: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Row ``i``: the mean softmax output over the examples of true class ``classes[i]``.

    Shape ``(len(classes), num_outputs)``; every row sums to 1 (NaN for a class with no examples).
    """
    probs = torch.softmax(logits.float(), dim=1)
    rows = [probs[y == c].mean(0) for c in classes]
    return torch.stack(rows) if rows else probs.new_zeros(0, logits.shape[1])


class ProbabilityProfile(Diagnostic):
    """After each task, the mean softmax output per true class over the test images of the seen classes.

    Writes ``probability_profile_task{t}.png`` (rows: true labels seen so far, in task order;
    columns: all outputs; in domain-IL the labels are the positions within a task) and keeps the numbers in ``profiles[t]`` (t from 1).
    """

    def __init__(self) -> None:
        self.profiles: dict[int, np.ndarray] = {}

    @override
    @torch.no_grad()
    def on_task_end(self, trainer: Trainer, pl_module: LightningModule, task: int) -> None:
        datamodule = trainer.datamodule
        x, y, t = datamodule.seen_data("test", task)
        seen = datamodule.seen_units(task)
        logits, _ = pl_module.eval_logits(x, t)
        profile = probability_profile(logits, y, seen).cpu().numpy()
        self.profiles[task + 1] = profile
        title = f"Mean softmax per true class after task {task + 1} {datamodule.task_names()[task]}"
        self.publish(trainer, probability_profile_figure(profile, seen, title), f"probability_profile_task{task + 1}")
