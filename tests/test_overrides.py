"""A run records the settings its command line changed from its config files (``overrides`` in
results.json), and a resume keeps them. Runs train on tests/synthetic.py."""

from __future__ import annotations

import json
from pathlib import Path

from lightning_cl.cli import config_file_args, run_cli
from lightning_cl.report.comparison import load_runs
from lightning_cl.results import RunResults

SYNTHETIC = """\
data:
  class_path: synthetic.SyntheticOnDisk
  init_args:
    tasks: [[0, 1], [2, 3]]
    batch_size: 32
task_loop:
  epochs_per_task: null
  steps_per_task: 3
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


def test_the_settings_given_after_the_config_files_are_recorded_and_kept_on_resume(tmp_path):
    config = tmp_path / "synthetic.yaml"
    config.write_text(SYNTHETIC)
    plain = _fit(config, tmp_path / "plain", "--data.data_dir", str(tmp_path / "data"))  # placement: no override
    assert plain["format_version"] == 3 and plain["overrides"] == {}
    short = _fit(config, tmp_path / "short", "--task_loop.steps_per_task", "2", "--seed_everything", "1",
                 "--model.lr", "0.001", "--data.scenario", "task")  # lr as in the config: no override either
    assert short["overrides"] == {"data.init_args.scenario": "task", "task_loop.steps_per_task": 2}

    # A resume with the run's own config.yaml (which says steps_per_task 2) keeps the first start's overrides.
    first = tmp_path / "short/lightning_logs/version_0"
    resumed = _fit(first / "config.yaml", tmp_path / "resumed", "--ckpt_path", str(first / "checkpoints/epoch=0.ckpt"))
    assert resumed["complete"] and resumed["overrides"] == short["overrides"]


def _write(root: Path, name: str, seed: int, lr: float, overrides: dict | None, format_version: int = 3) -> None:
    config = {"seed_everything": seed, "model": {"lr": lr}, "task_loop": {"steps_per_task": 50}}
    record = RunResults(complete=True, tasks=[[0, 1], [2, 3]], accuracy_matrix=[[1.0, 0.0], [0.6, 1.0]],
                        seen_accuracy=[1.0, 0.8], method="ewc", seed=seed, config=config, overrides=overrides,
                        format_version=format_version)
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


def test_a_run_of_format_2_has_no_overrides(tmp_path):
    _write(tmp_path, "old", 0, 1e-3, None, format_version=2)
    (run,) = load_runs([tmp_path])[0]
    assert run.record.overrides is None


def test_the_config_file_arguments_are_picked_in_order():
    assert config_file_args(["-c", "a.yaml", "--model.lr", "1", "--config=b.yaml", "--config", "c.yaml", "-c"]) == [
        "-c", "a.yaml", "--config=b.yaml", "--config", "c.yaml"]
