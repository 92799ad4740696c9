"""A run records the settings its command line changed from its config files (``overrides`` in
results.json), a resume keeps them, and the report names them in the group's label and in
summary.json, so that a shortened run is never taken for the protocol. Runs train on
tests/synthetic.py."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_cl.cli import config_file_args, run_cli
from lightning_cl.report import main as report
from lightning_cl.report.comparison import group_runs, load_runs
from lightning_cl.results import RunResults
from synthetic import config_yaml

SYNTHETIC = config_yaml(steps=3, data="SyntheticOnDisk") + """\
trainer:
  enable_progress_bar: false
  enable_model_summary: false
  callbacks+:  # a checkpoint after each task, to resume from
    - class_path: ModelCheckpoint
      init_args: {filename: "{epoch}", save_top_k: -1, save_on_train_epoch_end: true}
"""


def _fit(config: Path, root: Path, *args: str) -> dict:
    run_cli(["fit", "-c", str(config), "--trainer.default_root_dir", str(root), *args])
    (path,) = root.rglob("results.json")
    return json.loads(path.read_text())


def test_the_settings_given_after_the_config_files_are_recorded_kept_on_resume_and_labelled(tmp_path, capsys):
    config = tmp_path / "synthetic.yaml"
    config.write_text(SYNTHETIC)
    plain = _fit(config, tmp_path / "plain", "--data.data_dir", str(tmp_path / "data"))  # placement: no override
    assert plain["format_version"] == 2 and plain["overrides"] == {}
    short = _fit(config, tmp_path / "short", "--task_loop.steps_per_task", "2", "--seed_everything", "1",
                 "--model.lr", "0.001", "--data.scenario", "task")  # lr as in the config: no override either
    assert short["overrides"] == {"data.init_args.scenario": "task", "task_loop.steps_per_task": 2}

    # A resume with the run's own config.yaml (which says steps_per_task 2) keeps the first start's overrides.
    first = tmp_path / "short/lightning_logs/version_0"
    resumed = _fit(first / "config.yaml", tmp_path / "resumed", "--ckpt_path", str(first / "checkpoints/epoch=0.ckpt"))
    assert resumed["complete"] and resumed["overrides"] == short["overrides"]

    report([str(tmp_path / "plain"), str(tmp_path / "short"), "-o", str(tmp_path / "report")])
    capsys.readouterr()
    lines = (tmp_path / "report/report.md").read_text().splitlines()
    assert any(line.startswith("| none | 1 |") for line in lines)  # class-IL, as configured
    # task-IL: the heading shows the scenario, the label what else the command line changed
    assert any(line.startswith("| none (task_loop.steps_per_task=2) | 1 |") for line in lines)
    summary = json.loads((tmp_path / "report/summary.json").read_text())
    assert summary["format_version"] == 1
    assert [(g["scenario"], g["overrides"]) for g in summary["groups"]] == [
        ("class", {}), ("task", {"task_loop.steps_per_task": 2})]


def _write(root: Path, name: str, seed: int, lr: float, overrides: dict | None) -> None:
    config = {"seed_everything": seed, "model": {"lr": lr}, "task_loop": {"steps_per_task": 50}}
    record = RunResults(complete=True, tasks=[[0, 1], [2, 3]], accuracy_matrix=[[1.0, 0.0], [0.6, 1.0]],
                        seen_accuracy=[1.0, 0.8], method="ewc", seed=seed, config=config, overrides=overrides)
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


def test_a_label_names_each_override_once_beside_the_settings_that_tell_groups_apart(tmp_path):
    short = {"task_loop.steps_per_task": 50, "data.init_args.scenario": "class"}
    _write(tmp_path, "a", 0, 1e-3, short | {"model.lr": 1e-3})
    _write(tmp_path, "b", 1, 1e-3, {})  # a config file that says 50 steps: the same group, labelled as a
    _write(tmp_path, "c", 0, 1e-2, short)
    groups = group_runs(load_runs([tmp_path])[0])
    assert [(g.label(), len(g.runs)) for g in groups] == [("ewc (model.lr=0.001, task_loop.steps_per_task=50)", 2),
                                                          ("ewc (model.lr=0.01, task_loop.steps_per_task=50)", 1)]


def test_a_run_written_before_overrides_were_recorded_has_a_plain_label(tmp_path):
    _write(tmp_path, "old", 0, 1e-3, None)  # no overrides key: unknown, not "none"
    (run,) = load_runs([tmp_path])[0]
    assert run.record.overrides is None and [g.label() for g in group_runs([run])] == ["ewc"]


def test_the_config_file_arguments_are_picked_in_order():
    assert config_file_args(["-c", "a.yaml", "--model.lr", "1", "--config=b.yaml", "--config", "c.yaml", "-c"]) == [
        "-c", "a.yaml", "--config=b.yaml", "--config", "c.yaml"]
