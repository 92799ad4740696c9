"""GPM and OGD under Adam: the projection of the update leaks nothing into the protected span
where the papers' projection of the gradient does; the leak is measured by the methods, logged
and kept per task in results.json, and checked here against the span independently; the
optimiser's state is cleared at a task start on request; a run resumed mid-task reports the
same leak. Tiny models on synthetic tasks (no MNIST)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.maths.gradients import flatten_grads
from lightning_cl.methods import GPM, OrthogonalGradientDescent
from lightning_cl.task_callback import TaskCallback
from lightning_cl.task_loop import TaskLoop
from method_runs import fit_synthetic
from synthetic import SyntheticTasks

METHODS = {
    "gpm": lambda **kw: GPM(threshold=[0.97], examples=64, **kw),
    "ogd": lambda **kw: OrthogonalGradientDescent(**kw),  # the notebook's variant: a dense basis
    "ogd_gtl": lambda **kw: OrthogonalGradientDescent(variant="gtl", examples_per_task=32, **kw),  # layer factors
}


class TaskChangeInSpan(TaskCallback):
    """The share of task 2's whole change of the parameters that lies inside the span task 1 left,
    measured against the method's span directly (a dense basis), not through the method's leak."""

    def __init__(self, method):
        self.method, self.start, self.share = method, None, None

    def on_task_start(self, trainer, pl_module, task):
        if task == 1:
            self.start = [p.detach().clone() for p in self.method.protected(pl_module)]

    def on_task_end(self, trainer, pl_module, task):
        if task != 1:
            return
        change = [p.detach() - s for p, s in zip(self.method.protected(pl_module), self.start)]
        if isinstance(self.method, GPM):  # per layer [dW | db] against the layer's input basis
            inside = sum(((w @ m[:-1] + b[:, None] * m[-1]).square().sum() for w, b, m in
                          zip(change[::2], change[1::2], self.method.bases)))
        else:
            inside = (self.method.orthonormal_basis() @ flatten_grads(self.method._params, change)).square().sum()
        total = sum(c.square().sum() for c in change)
        self.share = (inside / total).sqrt().item()


def probe_callbacks(method):
    # The task loop calls the task moments in the callbacks' order: the probe reads before the method
    # adds task 2's directions to its span.
    probe = TaskChangeInSpan(method)
    return probe, [probe, method]


@pytest.mark.parametrize("name", list(METHODS))
def test_under_adam_the_update_projection_leaks_nothing_and_the_gradient_projection_leaks(tmp_path, name):
    leaks, shares = {}, {}
    for form in ("gradient", "update", "both"):
        method = METHODS[name](project=form, leak_every=1)
        probe, callbacks = probe_callbacks(method)
        trainer, results = fit_synthetic(tmp_path / form, callbacks, scenario="task", steps=50)  # Adam, lr 1e-3
        key = f"{method.name}/leak"
        leaks[form], shares[form] = results["method_metrics"][key], probe.share
        assert leaks[form][0] is None and len(leaks[form]) == 3  # task 1 has no span
        assert key in trainer.logged_metrics  # TensorBoard: the epoch's mean
        if name == "gpm":
            assert {f"gpm/leak_layer{i}" for i in (1, 2, 3)} <= set(results["method_metrics"])
    # After 50 steps of task 2 (measured: update and both ~1e-6, float32 rounding of the parameters;
    # gradient 0.01-0.1).
    for form in ("update", "both"):
        assert max(leaks[form][1:]) < 1e-5 and shares[form] < 1e-5, (leaks, shares)
    assert min(leaks["gradient"][1:]) > 1e-3 and shares["gradient"] > 1e-3, (leaks, shares)


def test_the_leak_is_measured_on_every_leak_every_th_step(tmp_path):
    gpm = METHODS["gpm"](leak_every=10)
    fit_synthetic(tmp_path, [gpm], steps=50)
    assert gpm.leak_steps == 5  # task 3: global steps 100, 110, ..., 140


@pytest.mark.parametrize("name", ["gpm", "ogd"])
def test_with_plain_sgd_the_gradient_projection_is_exact_already(tmp_path, name):
    method = METHODS[name](leak_every=1)
    _, results = fit_synthetic(tmp_path, [method], scenario="task", steps=20, optimizer="sgd", lr=0.05)
    assert max(results["method_metrics"][f"{method.name}/leak"][1:]) < 1e-5


class OptimizerStateAtTaskStart(Callback):
    """Adam's step count of the first parameter at each task's first batch (None: no state)."""

    def __init__(self):
        self.steps, self._task = [], None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.datamodule.current_task != self._task:
            self._task = trainer.datamodule.current_task
            state = trainer.optimizers[0].state.get(next(pl_module.parameters()))
            self.steps.append(None if not state else int(state["step"]))


@pytest.mark.parametrize("name", ["gpm", "ogd"])
@pytest.mark.parametrize("reset", [True, False])
def test_reset_optimizer_clears_adams_state_when_each_later_task_starts(tmp_path, name, reset):
    probe = OptimizerStateAtTaskStart()
    fit_synthetic(tmp_path, [METHODS[name](reset_optimizer=reset), probe], steps=8)
    assert probe.steps == ([None, None, None] if reset else [None, 8, 16])


def fit_two_epochs_per_task(root, ckpt_path=None):
    seed_everything(0, verbose=False)
    trainer = Trainer(
        accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
        limit_train_batches=4, log_every_n_steps=1, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=root, callbacks=[TaskLoop(epochs_per_task=2), METHODS["gpm"](project="gradient", leak_every=3),
                                          ModelCheckpoint(save_top_k=-1, every_n_epochs=1)],
    )
    datamodule = SyntheticTasks(scenario="task", batch_size=16)
    trainer.fit(ContinualClassifier(hidden=[16], num_outputs=datamodule.num_outputs), datamodule, ckpt_path=ckpt_path)
    return trainer, json.loads((Path(trainer.log_dir) / "results.json").read_text())


def test_a_run_resumed_mid_task_reports_the_uninterrupted_leak(tmp_path):
    trainer, straight = fit_two_epochs_per_task(tmp_path / "straight")
    # Epoch 3 is the first of task 2's two epochs (global steps 8-11, then 12-15): the leak of step 9 is
    # summed in the checkpoint, those of steps 12 and 15 come after it.
    ckpt = Path(trainer.checkpoint_callback.dirpath) / "epoch=2-step=12.ckpt"
    _, resumed = fit_two_epochs_per_task(tmp_path / "resumed", ckpt_path=ckpt)
    assert straight["method_metrics"]["gpm/leak"][1] > 1e-3
    assert resumed["method_metrics"] == straight["method_metrics"]
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]


def test_a_checkpoint_made_before_the_projection_settings_existed_resumes_with_its_state(tmp_path):
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    straight_gpm = METHODS["gpm"]()
    _, straight = fit_synthetic(tmp_path / "straight", [straight_gpm, checkpoints])
    ckpt = torch.load(next((tmp_path / "straight").rglob("epoch=0-*.ckpt")), weights_only=False)  # end of task 1
    # As an earlier GPM wrote it: its settings then, no leak in its state.
    state = ckpt["callbacks"].pop(straight_gpm.state_key)
    ckpt["callbacks"]["GPM{'threshold': [0.97], 'examples': 64}"] = {"bases": state["bases"]}
    torch.save(ckpt, tmp_path / "older.ckpt")
    resumed_gpm = METHODS["gpm"]()
    _, resumed = fit_synthetic(tmp_path / "resumed", [resumed_gpm], ckpt_path=tmp_path / "older.ckpt")
    assert all(torch.equal(a, b) for a, b in zip(resumed_gpm.bases, straight_gpm.bases))
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"]
    assert resumed["method_metrics"] == straight["method_metrics"]
