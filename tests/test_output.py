"""What a run and a study print: none of Lightning's banners that lightning_cl/quiet.py silences,
the lines it keeps, and a progress bar that names the task. Runs train on tests/synthetic.py."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch import Callback, Trainer

from conftest import REPO
from lightning_cl import quiet
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.progress import TaskProgressBar
from lightning_cl.task_loop import TaskLoop
from synthetic import SyntheticTasks, config_yaml

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}
# What Lightning printed before: the litlogger advert, the LeafSpec deprecation, log_every_n_steps on
# short tasks, the TPU line, max_epochs reached, and (in a study) the warning about LightningCLI's args.
BANNERS = ("litlogger", "LeafSpec", "log_every_n_steps", "TPU available", "`Trainer.fit` stopped",
           "LightningCLI's args parameter")
SYNTHETIC = config_yaml(steps=3)


def test_a_run_prints_no_banner_and_its_bar_names_the_task(tmp_path):
    (tmp_path / "synthetic.yaml").write_text(SYNTHETIC)
    out = subprocess.run([sys.executable, "-m", "lightning_cl", "fit", "-c", str(tmp_path / "synthetic.yaml"),
                          "--trainer.default_root_dir", str(tmp_path / "runs")],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    printed = out.stdout + out.stderr
    assert out.returncode == 0, printed[-3000:]
    assert [banner for banner in BANNERS if banner in printed] == [], printed[:3000]
    assert "Seed set to 0" in printed and "GPU available: " in printed  # kept: the seed, and the GPU hint
    assert re.search(r"task 1/2 \[0, 1\]: +\d+%\|", printed) and re.search(r"task 2/2 \[2, 3\]: +\d+%\|", printed)
    assert "Epoch 1:" not in printed and "Training:" not in printed  # Lightning's descriptions
    for line in ("task 1/2 [0, 1] (3 steps): seen-task", "task 2/2 [2, 3] (3 steps): seen-task"):
        assert f"\n{line}" in printed  # below the task's bar, not behind it on its line


@pytest.mark.study
def test_a_study_prints_no_banner_nor_do_its_runs(tmp_path):
    (tmp_path / "synthetic.yaml").write_text(SYNTHETIC)
    (tmp_path / "study.yaml").write_text("seeds: [0]\nexperiments:\n  - name: a\n    configs: [synthetic.yaml]\n")
    out = subprocess.run([sys.executable, "-m", "lightning_cl.study", str(tmp_path / "study.yaml"), "--root",
                          str(tmp_path / "root")], env=ENV, capture_output=True, text=True, timeout=300)
    printed = out.stdout + out.stderr
    assert out.returncode == 0, printed[-3000:]
    (log,) = (tmp_path / "root").rglob("fit.log")
    run_output = log.read_text()
    assert "task 2/2 [2, 3] (3 steps)" in run_output  # the run's own lines are there
    assert [banner for banner in BANNERS if banner in printed + run_output] == [], printed + run_output


def test_the_filters_silence_only_their_messages(caplog):
    quiet.install()
    quiet.install()  # twice changes nothing
    assert sum(f is quiet._FILTER for f in logging.getLogger(quiet.LIGHTNING_LOGGERS[0]).filters) == 1
    with warnings.catch_warnings(record=True) as caught:
        quiet.install()
        warnings.simplefilter("always")
        quiet.install()  # its filters come first again
        warnings.warn("The number of training batches (3) is smaller than the logging interval Trainer(...)",
                      PossibleUserWarning)
        warnings.warn("GPU available but not used. You can set it by doing `Trainer(accelerator='gpu')`.",
                      PossibleUserWarning)
        warnings.warn("The number of training batches (3) is smaller than the logging interval", UserWarning)
    assert [str(w.message)[:20] for w in caught] == ["GPU available but no", "The number of traini"]
    logger = logging.getLogger(quiet.LIGHTNING_LOGGERS[0])
    with caplog.at_level(logging.INFO, logger=logger.name):
        for message in ("TPU available: False, using: 0 TPU cores", "GPU available: False, used: False",
                        "`Trainer.fit` stopped: `max_epochs=10` reached.",
                        "`Trainer.fit` stopped: No training batches."):
            logger.info(message)
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False",
                                                       "`Trainer.fit` stopped: No training batches."]


class Descriptions(Callback):
    """The training bar's description at each batch."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_train_batch_end(self, trainer, *args) -> None:
        self.seen.append(trainer.progress_bar_callback.train_progress_bar.desc.rstrip(": "))


@pytest.mark.parametrize("epochs, expected", [
    (1, ["task 1/2 [0, 1]", "task 2/2 [2, 3]"]),
    (2, ["task 1/2 [0, 1], epoch 1/2", "task 1/2 [0, 1], epoch 2/2", "task 2/2 [2, 3], epoch 1/2",
         "task 2/2 [2, 3], epoch 2/2"]),
])
def test_the_bar_names_the_task_and_the_epoch_within_it(tmp_path, epochs, expected):
    descriptions = Descriptions()
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=-1, reload_dataloaders_every_n_epochs=1,
                      num_sanity_val_steps=0, limit_train_batches=2, enable_model_summary=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path,
                      callbacks=[TaskLoop(epochs_per_task=epochs), TaskProgressBar(), descriptions])
    datamodule = SyntheticTasks(tasks=[[0, 1], [2, 3]], batch_size=16)
    trainer.fit(ContinualClassifier(num_outputs=datamodule.num_outputs, hidden=[8]), datamodule)
    assert list(dict.fromkeys(descriptions.seen)) == expected
