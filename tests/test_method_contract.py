"""The method contract: a method written outside the package runs through the CLI; its declared
state is checkpointed and restored; a method that needs what the network or data does not offer
fails before training, naming it; two instances of a method keep their state apart; a method's
prediction rule (Method.predict) is declared by overriding it, and two of them are refused."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch import nn

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.cli import run_cli
from lightning_cl.methods import EWC, GPM, Method, OrthogonalGradientDescent
from lightning_cl.methods.contract import ContractError, check_contract
from lightning_cl.methods.method import declares_prediction, predicting_method
from lightning_cl.recorder import prediction_rule
from lightning_cl.task_loop import TaskLoop
import stubs
from method_runs import fit_synthetic
from synthetic import SyntheticTasks

SYNTHETIC = ["--data.class_path", "synthetic.SyntheticTasks", "--data.init_args.tasks", "[[0, 1], [2, 3], [4, 5]]",
             "--data.init_args.batch_size", "16", "--model.hidden", "[32, 16]", "--task_loop.steps_per_task", "8",
             "--task_loop.epochs_per_task", "null", "--trainer.enable_progress_bar", "false",
             "--trainer.enable_model_summary", "false"]
EXTERNAL = ["--trainer.callbacks+=external_method.StayNearTaskEnd", "--trainer.callbacks.strength", "10.0"]


def results(root: Path) -> dict:
    (path,) = root.rglob("results.json")
    return json.loads(path.read_text())


def test_a_method_outside_the_package_runs_through_the_cli_and_resumes_exactly(tmp_path):
    keep_every_task = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_top_k", "-1",
                       "--trainer.callbacks.filename", "{epoch}"]
    run_cli(["fit", *SYNTHETIC, *EXTERNAL, *keep_every_task, "--trainer.default_root_dir", str(tmp_path / "a")])
    straight = results(tmp_path / "a")
    naive_root = tmp_path / "naive"
    run_cli(["fit", *SYNTHETIC, "--trainer.default_root_dir", str(naive_root)])
    assert straight["method"] == "stay_near" and straight["complete"]
    assert straight["accuracy_matrix"] != results(naive_root)["accuracy_matrix"]  # its loss term trained the model

    (ckpt,) = (tmp_path / "a").rglob("epoch=0.ckpt")  # the end of task 1: its anchor kept
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    (key,) = [k for k in state if k.startswith("StayNearTaskEnd")]
    assert key == "StayNearTaskEnd{'strength': 10.0}" and state[key]["tasks_kept"] == [0]
    assert all(v.device.type == "cpu" for v in state[key]["anchor"].values())
    config = next((tmp_path / "a").rglob("config.yaml"))
    run_cli(["fit", "-c", str(config), "--ckpt_path", str(ckpt), "--trainer.default_root_dir", str(tmp_path / "b")])
    resumed = results(tmp_path / "b")
    assert resumed["accuracy_matrix"] == straight["accuracy_matrix"] and resumed["seen_loss"] == straight["seen_loss"]


class NoLayers(nn.Module):
    """A network that offers its forward pass but not its layers."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(784, 16), nn.ReLU())
        self.out = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h = self.body(x)
        return self.out(h), (h,)


@pytest.mark.parametrize("method", [lambda: GPM(), lambda: OrthogonalGradientDescent(variant="gtl")],
                         ids=["gpm", "ogd-gtl"])
def test_a_method_that_needs_the_networks_layers_fails_before_training_naming_them(tmp_path, method):
    model = ContinualClassifier(num_outputs=10)
    model.network = NoLayers()
    trainer = Trainer(accelerator="cpu", max_epochs=-1, reload_dataloaders_every_n_epochs=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
                      callbacks=[TaskLoop(steps_per_task=2), method()])
    with pytest.raises(ContractError, match=r"the network \(NoLayers\) offers no linear_layers\(\)"):
        trainer.fit(model, SyntheticTasks())
    assert trainer.global_step == 0


def test_ogd_of_the_mean_loss_needs_no_layers(tmp_path):
    trainer, record = fit_synthetic(tmp_path, [OrthogonalGradientDescent(variant="mean_loss")], steps=2)
    assert record["complete"]
    assert OrthogonalGradientDescent(variant="mean_loss").requires_network == ()


def test_a_data_module_without_the_task_interface_is_named():
    with pytest.raises(ContractError, match=r"the DataModule \(SimpleNamespace\) offers no .*task_units"):
        check_contract("EWC", SimpleNamespace(num_tasks=2), ContinualClassifier())


def test_two_instances_of_a_method_with_other_settings_keep_their_state_apart(tmp_path):
    weak, strong = EWC(lam=1.0, fisher_examples=16), EWC(lam=100.0, fisher_examples=16)
    assert weak.state_key != strong.state_key
    trainer, record = fit_synthetic(tmp_path, [weak, strong], steps=4)
    assert record["method"] == "ewc+ewc" and len(weak.fishers) == len(strong.fishers) == 2
    ckpt = torch.load(next(tmp_path.rglob("*.ckpt")), weights_only=True)["callbacks"]
    assert {weak.state_key, strong.state_key} <= set(ckpt)


def test_the_same_method_twice_with_the_same_settings_is_refused_in_one_line(tmp_path, capsys):
    twice = ["--trainer.callbacks+=lightning_cl.methods.SI", "--trainer.callbacks.c", "1.0"] * 2
    with pytest.raises(SystemExit):
        run_cli(["fit", *SYNTHETIC, *twice, "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "trainer.callbacks lists SI twice with the same settings" in err and len(err.splitlines()) == 2


def test_a_checkpoint_from_before_settings_were_in_the_state_key_still_loads():
    ewc = EWC(lam=1.0)
    old = {"callbacks": {"EWC": {"fishers": [], "anchors": []}}}  # how earlier versions saved it
    ewc.on_load_checkpoint(None, None, old)
    assert ewc.state_key in old["callbacks"] and "EWC" not in old["callbacks"]


def test_an_old_callbacks_class_path_names_the_new_one(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", *SYNTHETIC, "--trainer.callbacks+=lightning_cl.callbacks.EWC",
                 "--trainer.default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "lightning_cl.callbacks.EWC is now lightning_cl.methods.EWC" in err and len(err.splitlines()) == 2
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_gpm_thresholds_that_do_not_fit_the_network_are_one_line_and_leave_no_directory(tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:  # 2 thresholds, 3 Linear layers: found by GPM's setup check
        run_cli(["fit", *SYNTHETIC, "--trainer.callbacks+=lightning_cl.methods.GPM", "--trainer.callbacks.threshold",
                 "[0.9, 0.9]", "--trainer.default_root_dir", str(root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: trainer.callbacks: GPM init_args.threshold=[0.9, 0.9]: give one value, or one per Linear layer "
        "(3 in this network)."]
    assert "Traceback" not in err and not root.exists()


class RefusesAtSetup(Callback):
    """A callback that checks the network at its own setup, as a method outside the package may."""

    def setup(self, trainer: Trainer, pl_module, stage: str) -> None:
        raise ContractError("RefusesAtSetup cannot run: the network (MLP) offers no frobnicate().")


def test_a_contract_error_at_setup_is_one_line_and_leaves_no_directory(tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *SYNTHETIC, "--trainer.callbacks+=test_method_contract.RefusesAtSetup",
                 "--trainer.default_root_dir", str(root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: RefusesAtSetup cannot run: the network (MLP) offers no frobnicate()." in err
    assert "Traceback" not in err and not root.exists()  # not even the TensorBoard file opened at setup


def test_a_method_declares_a_prediction_rule_by_overriding_predict():
    assert not any(declares_prediction(m) for m in (EWC, GPM, OrthogonalGradientDescent, Method))
    assert declares_prediction(stubs.PredictsUnitZero) and declares_prediction(stubs.AlsoPredicts())
    ewc = EWC(lam=1.0)
    assert ewc.predict(None, None, torch.zeros(2, 784), torch.zeros(2, dtype=torch.long)) is None  # no rule
    assert predicting_method([ewc, stubs.PredictsUnitZero()]).name == "unit_zero" and predicting_method([ewc]) is None


def test_runs_without_a_prediction_rule_measure_the_networks_logits(tmp_path):
    trainer, _ = fit_synthetic(tmp_path, [EWC(lam=1.0, fisher_examples=16)], steps=2)
    assert prediction_rule(trainer, trainer.lightning_module) is None  # evaluate_tasks as before: predict=None


def test_a_rule_that_returns_none_is_measured_by_the_networks_logits(tmp_path):
    class Abstains(Method):
        name = "abstains"

        def predict(self, trainer, pl_module, x, t):
            return None

    _, naive = fit_synthetic(tmp_path / "naive", [], scenario="task", steps=4)
    _, abstains = fit_synthetic(tmp_path / "abstains", [Abstains()], scenario="task", steps=4)
    assert abstains["accuracy_matrix"] == naive["accuracy_matrix"] and abstains["seen_loss"] == naive["seen_loss"]


def test_two_prediction_rules_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys):
    root = tmp_path / "runs"
    two = ["--trainer.callbacks+=stubs.PredictsUnitZero", "--trainer.callbacks+=stubs.AlsoPredicts"]
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *SYNTHETIC, *two, "--trainer.default_root_dir", str(root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: trainer.callbacks: PredictsUnitZero and AlsoPredicts each declare a prediction rule (Method.predict), and a "
        "run's accuracy is measured by one: keep only one of them."]
    assert "Traceback" not in err and not root.exists()
