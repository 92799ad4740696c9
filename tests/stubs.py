"""Stand-ins for a task DataModule in unit tests of a method's hooks: every member of the
method contract (lightning_cl.methods.contract.TaskData) is there, as the contract check at
setup asks; those a test does not give fail when used. And a method whose prediction rule
(``Method.predict``) always chooses unit 0, for tests of the evaluation that uses it."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from lightning_cl.methods.contract import TASK_DATA
from lightning_cl.methods.method import Method


def _unused(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"the test's task data stub has no {name}")
    return fail


def task_data(**given) -> SimpleNamespace:
    """A stub with ``given`` members (e.g. ``num_tasks=2``, ``task_train_loader=...``) and the rest failing."""
    members = {name: _unused(name) for name in TASK_DATA}
    return SimpleNamespace(**(members | {"current_task": 0, "scenario": "class", "cumulative": False} | given))


class PredictsUnitZero(Method):
    """A prediction rule that scores unit 0 with 1 and every other unit 0 (unmasked); it trains nothing."""

    name = "unit_zero"

    def predict(self, trainer, pl_module, x, t):
        scores = torch.zeros(len(x), trainer.datamodule.num_outputs, device=x.device)
        scores[:, 0] = 1.0
        return scores


class AlsoPredicts(PredictsUnitZero):
    """A second prediction rule."""

    name = "also"
