"""A run killed mid-task (SIGKILL: no clean-up) resumes with the documented command and ends
with the results of an uninterrupted run; the killed run's results stay as they were."""

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.mnist

SHRUNK = ["--data.tasks", "[[1, 2], [3, 4], [5, 6]]", "--trainer.limit_train_batches", "30",
          "--task_loop.epochs_per_task", "4", "--trainer.enable_progress_bar", "false"]
# The second epoch of the third task, batch 10 (all counted from 0).
KILL = ["--trainer.callbacks+=probes.KillAt", "--trainer.callbacks.init_args.task", "2",
        "--trainer.callbacks.init_args.epoch", "1", "--trainer.callbacks.init_args.batch", "10"]


def fit(args, kill=False):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    env.pop("KILL_AT", None)
    if kill:
        env["KILL_AT"] = "1"
    return subprocess.run([sys.executable, "-m", "lightning_cl", "fit", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)


def results(run_dir):
    return json.loads((run_dir / "results.json").read_text())


def test_sigkill_mid_task_then_resume_gives_the_uninterrupted_results(mnist_dir, tmp_path):
    common = ["-c", "configs/split_mnist/ogd_bn.yaml", "--data.data_dir", mnist_dir, *SHRUNK, *KILL]
    straight = fit([*common, "--trainer.default_root_dir", str(tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = results(tmp_path / "straight/lightning_logs/version_0")
    assert expected["complete"] and expected["epochs_per_task"][2] >= 2  # the kill point is reached
    assert expected["overrides"]["task_loop.epochs_per_task"] == 4  # SHRUNK, not the config's 30

    killed = fit([*common, "--trainer.default_root_dir", str(tmp_path / "killed")], kill=True)
    assert killed.returncode == -9, "the run was not killed"
    run = tmp_path / "killed/lightning_logs/version_0"
    before = (run / "results.json").read_text()
    partial = json.loads(before)  # whole, not truncated: written atomically after task 2
    assert partial["tasks_done"] == 2 and not partial["complete"]
    assert partial["accuracy_matrix"] == expected["accuracy_matrix"][:2]

    # The documented resume command: the run's own config and its last checkpoint.
    resumed = fit(["-c", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints/last.ckpt")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = results(tmp_path / "killed/lightning_logs/version_1")
    for key in ("complete", "accuracy_matrix", "seen_accuracy", "seen_loss", "sparsity", "epochs_per_task",
                "global_step", "overrides"):  # the overrides of the first start, though config.yaml has them all
        assert final[key] == expected[key], key
    assert (run / "results.json").read_text() == before  # the killed run's record is not overwritten
