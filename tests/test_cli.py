"""The command line: bad settings fail before training, naming the setting; results land on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_cl.cli import run_cli
from conftest import REPO

BAD = [
    (["--model.norm", "group"], "model.norm"),
    (["--model.dropout", "1.0"], "model.dropout=1.0"),
    (["--model.dropout", "-0.2"], "model.dropout=-0.2"),
    (["--model.lambda_l1", "-0.5"], "model.lambda_l1=-0.5"),
    (["--model.optimizer", "rmsprop"], "model.optimizer"),
    (["--model.lr", "0"], "model.lr=0.0"),
    (["--data.tasks", "[[1, 2], [3, 11]]"], "data.tasks[1] contains 11"),
    (["--data.tasks", "[[1, 2], [2, 3]]"], "data.tasks: class 2 is in task 0 and task 1"),
    (["--data.tasks", "[[1, 2], []]"], "data.tasks[1] is empty"),
    (["--data.tasks", "[]"], "data.tasks is empty"),
    (["--task_loop.epochs_per_task", "0"], "task_loop.epochs_per_task=0"),
    (["--model.no_such_option", "1"], "no_such_option"),
    (["--trainer.callbacks+=lightning_cl.callbacks.NoSuchCallback"], "has no attribute 'NoSuchCallback'"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[m for _, m in BAD])
def test_bad_settings_fail_before_training_and_name_the_setting(override, message, tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                 "--trainer.default_root_dir", str(root), *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not root.exists()  # nothing trained, nothing written


@pytest.mark.parametrize("config", sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "studies"),
                         ids=lambda p: p.parent.name + "/" + p.stem)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "task_loop:" in printed and "accelerator: cpu" in printed


BAD_BENCHMARK = [
    ("benchmarks/split_mnist.yaml", ["--data.scenario", "everything"], "Expected a typing.Literal['class', 'task', 'domain']"),
    ("benchmarks/rotated_mnist.yaml", ["--data.angles", "[]"], "data.angles is empty"),
    ("benchmarks/permuted_mnist.yaml", ["--data.num_tasks", "0"], "data.num_tasks=0"),
    ("benchmarks/split_mnist.yaml", ["--data.scenario", "domain", "--data.tasks", "[[0, 1], [2, 3, 4]]"],
     "every task needs the same number of classes"),
    ("split_mnist/sequential.yaml", ["--task_loop.steps_per_task", "100"],
     "task_loop.epochs_per_task=5 and task_loop.steps_per_task=100 are both set"),
    ("benchmarks/split_mnist.yaml", ["--model.hidden", "[]"], "model.hidden=[]"),
]


@pytest.mark.parametrize("config, override, message", BAD_BENCHMARK, ids=[m[:30] for _, _, m in BAD_BENCHMARK])
def test_bad_benchmark_settings_fail_before_training_and_name_the_setting(config, override, message, tmp_path,
                                                                          capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs" / config), "--trainer.default_root_dir", str(root), *override])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not root.exists()


def test_the_data_decides_the_output_layer(capsys):
    from lightning_cl.cli import run_cli as cli

    for config, override, outputs in [("split_mnist/sequential.yaml", [], 10),
                                      ("benchmarks/split_mnist.yaml", ["--data.scenario", "domain"], 2),
                                      ("benchmarks/permuted_mnist.yaml", ["--data.scenario", "class"], 100)]:
        built = cli(["-c", str(REPO / "configs" / config), *override, "--trainer.logger", "false"], run=False)
        assert built.model.network.head.out_features == outputs == built.datamodule.num_outputs


def test_the_notebook_experiments_have_configs():
    assert {c.stem for c in (REPO / "configs/split_mnist").glob("*.yaml")} >= {
        "concurrent", "concurrent_bn", "concurrent_ln", "sequential", "sequential_bn", "sequential_ln",
        "sequential_dropout", "ogd", "ogd_bn", "ogd_bn_t95", "ogd_bn_t95_l1", "ogd_bn_dropout",
    }


@pytest.mark.mnist
def test_console_script_runs_a_shrunk_sequence_and_prints_where_results_are(mnist_dir, tmp_path):
    out = subprocess.run(
        [str(Path(sys.executable).parent / "lightning-cl"), "fit", "-c", "configs/split_mnist/sequential.yaml", "--data.data_dir", mnist_dir,
         "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_train_batches", "3",
         "--task_loop.epochs_per_task", "1", "--seed_everything", "7", "--model.lambda_l1", "0.1"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (path,) = tmp_path.rglob("results.json")
    assert f"results: {path}" in out.stdout
    results = json.loads(path.read_text())
    assert results["seed"] == 7 and results["config"]["model"]["lambda_l1"] == 0.1
    assert results["config"]["data"]["init_args"]["tasks"] == results["tasks"] and len(results["seen_accuracy"]) == 5
    # A second run never replaces the first one's results.
    subprocess.run(out.args, capture_output=True, text=True, cwd=REPO, check=True)
    assert len(list(tmp_path.rglob("results.json"))) == 2 and json.loads(path.read_text()) == results


def test_an_unwritable_log_directory_is_refused_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                 "--trainer.default_root_dir", str(blocker / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "trainer.default_root_dir" in err and "cannot be written" in err


@pytest.mark.mnist
def test_a_diverging_run_stops_with_a_clear_message_and_keeps_its_results(mnist_dir, tmp_path, capsys):
    from lightning_cl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--data.data_dir", mnist_dir,
              "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_train_batches", "20",
              "--task_loop.epochs_per_task", "1", "--trainer.enable_progress_bar", "false",
              "--model.optimizer", "sgd", "--model.lr", "1e6"])
    message = str(exit_info.value.code)
    assert message.startswith("error: the training loss was") and "training diverged" in message
    (path,) = tmp_path.rglob("results.json")
    results = json.loads(path.read_text())
    assert results["complete"] is False and "FloatingPointError" in results["error"]
    assert results["tasks_done"] == 0 and results["final_seen_accuracy"] is None


class WritesAFileWhenUnpickled:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def checkpoint(_verified_mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--data.data_dir", _verified_mnist_dir,
             "--trainer.default_root_dir", str(root), "--trainer.limit_train_batches", "2",
             "--task_loop.epochs_per_task", "1", "--trainer.enable_progress_bar", "false"])
    (path,) = root.rglob("last.ckpt")
    return path


@pytest.mark.mnist
@pytest.mark.parametrize("override, message", [
    (["--model.norm", "batch"], "model.norm: checkpoint 'none', config 'batch'"),
    (["--data.tasks", "[[1, 2], [3, 4]]"], "data.tasks: checkpoint [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]"),
    (["--model.lr", "0.01"], "model.lr: checkpoint 0.001, config 0.01"),
])
def test_resuming_with_another_config_is_refused(checkpoint, mnist_dir, tmp_path, override, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--data.data_dir", mnist_dir,
                 "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(checkpoint), *override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "was made with another config" in err


def test_a_checkpoint_that_runs_code_is_refused_without_running_it(tmp_path, capsys):
    import torch

    marker = tmp_path / "the_checkpoint_ran_code"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": WritesAFileWhenUnpickled(str(marker))}, evil)
    for ckpt, message in ((evil, "cannot be loaded safely (weights_only)"), (tmp_path / "missing.ckpt", "does not exist")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                     "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(ckpt)])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not marker.exists()


@pytest.mark.mnist
@pytest.mark.parametrize("how, exit_code, error", [("exception", 1, "RuntimeError: a callback failed in task 2"),
                                                   ("sigint", 1, "KeyboardInterrupt")])
def test_a_failing_run_keeps_its_results_marked_incomplete(how, exit_code, error, mnist_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "lightning_cl", "fit", "-c", "configs/split_mnist/sequential.yaml",
         "--data.data_dir", mnist_dir, "--trainer.default_root_dir", str(tmp_path), "--trainer.limit_train_batches", "3",
         "--task_loop.epochs_per_task", "1", "--trainer.enable_progress_bar", "false",
         "--trainer.callbacks+=probes.FailAt", "--trainer.callbacks.init_args.how", how],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == exit_code, out.stderr[-2000:]
    (path,) = tmp_path.rglob("results.json")
    results = json.loads(path.read_text())
    assert results["complete"] is False and error in results["error"]
    assert results["tasks_done"] == 1 and len(results["accuracy_matrix"]) == 1  # task 1 was measured and kept
    assert (path.parent / "checkpoints/last.ckpt").exists()  # and can be resumed from
