"""The roles of a run's settings (lightning_cl/settings.py): which keys are placement, which
tell report groups apart, and which must match on resume; the keys are the resolved config's."""

import pytest
import yaml

from conftest import REPO
from lightning_cl.cli import run_cli
from lightning_cl.settings import (ACCELERATOR, PLACEMENT, SEED, changes_results, flatten, grouping_settings,
                                   overrides, resume_differences)

EWC = {"class_path": "lightning_cl.methods.ewc.EWC", "init_args": {"lam": 1e5, "fisher": "empirical"}}
PICTURE = {"class_path": "lightning_cl.diagnostics.AccuracyMatrix"}


def _config(**trainer):
    return {"seed_everything": 0, "model": {"lr": 1e-3, "hidden": [400, 400]},
            "data": {"class_path": "lightning_cl.data.SplitMNIST",
                     "init_args": {"tasks": [[0, 1], [2, 3]], "data_dir": "data", "download": True}},
            "trainer": {"accelerator": "cpu", "devices": 1, "precision": None, "callbacks": [EWC, PICTURE],
                        "default_root_dir": "runs", "log_every_n_steps": 50, **trainer},
            "task_loop": {"steps_per_task": 2000}, "ckpt_path": None}


def test_flatten_walks_mappings_and_keeps_lists_whole():
    config = {"trainer": {"max_epochs": 5, "callbacks": [EWC], "plugins": {}}, "model": {"hidden": [4, 4]}}
    assert flatten(config) == {"trainer.max_epochs": 5, "trainer.callbacks": [EWC], "trainer.plugins": {},
                               "model.hidden": [4, 4]}


def test_every_placement_setting_is_a_key_of_the_resolved_config(capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--print_config"])
    keys = set(flatten(yaml.safe_load(capsys.readouterr().out)))
    old_records = {"data.data_dir", "data.download"}  # results.json of format 1, before data had a class_path
    assert PLACEMENT - old_records <= keys and ACCELERATOR in keys and SEED in keys
    assert {"trainer.devices", "trainer.strategy", "trainer.num_nodes", "trainer.precision"} <= keys


def test_placement_and_the_accelerator_may_differ_on_resume_but_nothing_that_computes():
    saved = _config()
    moved = _config(accelerator="gpu", default_root_dir="elsewhere", log_every_n_steps=1, enable_progress_bar=False)
    moved["data"]["init_args"] |= {"data_dir": "/scratch/mnist", "download": False}
    moved["ckpt_path"] = "runs/last.ckpt"
    assert resume_differences(saved, moved) == {}
    assert resume_differences(saved, _config(devices=2, precision="bf16-mixed")) == {
        "trainer.devices": "checkpoint 1, config 2", "trainer.precision": "checkpoint None, config 'bf16-mixed'"}
    assert resume_differences(saved, {**saved, SEED: 3}) == {SEED: "checkpoint 0, config 3"}
    assert resume_differences(saved, {**saved, SEED: True}) == {}  # a random seed: the checkpoint's is used


def test_callbacks_are_compared_by_class_then_argument_on_resume():
    saved = _config()
    assert resume_differences(saved, _config(callbacks=[EWC])) == {
        "trainer.callbacks": "checkpoint ['EWC', 'AccuracyMatrix'], config ['EWC']"}
    other = {**EWC, "init_args": {**EWC["init_args"], "lam": 10.0}}
    assert resume_differences(saved, _config(callbacks=[other, PICTURE])) == {
        "trainer.callbacks[0] (EWC).init_args.lam": "checkpoint 100000.0, config 10.0"}


def test_groups_are_told_apart_by_computing_settings_devices_included():
    settings = grouping_settings(_config())
    assert settings["callbacks.EWC.lam"] == 1e5 and settings["model.lr"] == 1e-3
    assert settings["trainer.devices"] == 1 and "trainer.precision" in settings
    assert not any(key.startswith("callbacks.AccuracyMatrix") for key in settings)  # an observer
    assert "trainer.callbacks" not in settings
    assert not {SEED, ACCELERATOR, *PLACEMENT} & set(settings)
    assert grouping_settings(_config(callbacks={"class_path": "x.Gate"}))["callbacks.Gate.on"] is True


def test_only_placement_and_the_accelerator_never_change_results():
    assert not changes_results("trainer.accelerator") and not changes_results("data.init_args.data_dir")
    assert changes_results(SEED) and changes_results("trainer.devices") and changes_results("trainer.callbacks")


def test_overrides_are_the_grouping_settings_that_differ_from_the_config_files():
    configured = _config()
    run = _config(accelerator="gpu", default_root_dir="elsewhere", devices=2)  # placement, the accelerator: not
    run |= {SEED: 3, "task_loop": {"steps_per_task": 50}}
    run["trainer"]["callbacks"] = [{**EWC, "init_args": {**EWC["init_args"], "lam": 1e9}}, PICTURE]
    assert overrides(configured, run) == {"callbacks.EWC.lam": 1e9, "trainer.devices": 2,
                                          "task_loop.steps_per_task": 50}
    assert overrides(configured, _config()) == {}
    without = _config(callbacks=[PICTURE])  # a callback left out: its settings are None
    assert overrides(configured, without) == {"callbacks.EWC.lam": None, "callbacks.EWC.fisher": None}
