"""Stand-ins for a task DataModule in unit tests of a method's hooks: every member of the
method contract (lightning_cl.methods.contract.TaskData) is there, as the contract check at
setup asks; those a test does not give fail when used."""

from __future__ import annotations

from types import SimpleNamespace

from lightning_cl.methods.contract import TASK_DATA


def _unused(name: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"the test's task data stub has no {name}")
    return fail


def task_data(**given) -> SimpleNamespace:
    """A stub with ``given`` members (e.g. ``num_tasks=2``, ``task_train_loader=...``) and the rest failing."""
    members = {name: _unused(name) for name in TASK_DATA}
    return SimpleNamespace(**(members | {"current_task": 0, "scenario": "class", "cumulative": False} | given))
