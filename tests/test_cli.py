"""The command line: bad settings fail before training, naming the setting; results land on disk."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_cl.cli import run_cli
from conftest import REPO

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
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
    (["--seed_everything", "-1"], "error: seed_everything=-1 is not a seed: give an integer from 0 to 4294967295"),
    (["--seed_everything", str(2**32)], "error: seed_everything=4294967296 is not a seed"),  # Lightning: a traceback
    (["--model.no_such_option", "1"], "no_such_option"),
    (["--trainer.callbacks+=lightning_cl.callbacks.NoSuchCallback"], "has no attribute 'NoSuchCallback'"),
    # Trainer settings the task loop and manual optimisation cannot honour.
    (["--trainer.accumulate_grad_batches", "2"], "trainer.accumulate_grad_batches=2 is not supported"),
    (["--trainer.gradient_clip_val", "1.0"], "trainer.gradient_clip_val=1.0 is not supported"),
    (["--trainer.gradient_clip_algorithm", "norm"], "trainer.gradient_clip_algorithm='norm' is not supported"),
    (["--trainer.max_epochs", "3"], "trainer.max_epochs=3 is set by the task loop"),
    (["--trainer.min_epochs", "3"], "trainer.min_epochs=3 cannot be honoured"),
    (["--trainer.max_steps", "10"], "trainer.max_steps=10 would stop the run in the middle of a task"),
    (["--trainer.max_time", "00:00:01:00"], "trainer.max_time='00:00:01:00' would end the run"),
    (["--trainer.reload_dataloaders_every_n_epochs", "0"], "trainer.reload_dataloaders_every_n_epochs=0 must be 1"),
    (["--trainer.devices", "0"], "`Trainer(devices='0')` value is not a valid input"),  # Lightning's, as an error: line
    (["--trainer.accelerator", "tpu"], "trainer.accelerator='tpu' is not supported; use cpu or gpu"),
    # More CPU processes than cores would start an oversubscribed DDP run without a word.
    (["--trainer.devices", str(CORES + 1)], f"trainer.devices={CORES + 1} on the CPU starts {CORES + 1} training "
     f"processes (DDP), more than the {CORES} CPU core"),
    (["--trainer.devices", "-1"], "trainer.devices=-1 on the CPU: give the number of training processes"),  # a traceback
    # Lightning would run bf16-mixed and the run would record 16-mixed.
    (["--trainer.precision", "16-mixed"], "trainer.precision='16-mixed' on the CPU: there is no float16 mixed "
     "precision on the CPU and Lightning would run bfloat16 while the run records '16-mixed'; use --trainer.precision "
     "bf16-mixed"),
    (["--trainer.callbacks+=lightning_cl.methods.OrthogonalGradientDescent", "--trainer.precision", "bf16-mixed"],
     "trainer.precision='bf16-mixed' with OrthogonalGradientDescent (trainer.callbacks): gradient projection needs "
     "float32 gradients"),
    (["--trainer.callbacks+=lightning_cl.methods.OrthogonalGradientDescent", "--trainer.precision", "16-mixed"],
     "trainer.precision='16-mixed' with OrthogonalGradientDescent"),
    (["--trainer.callbacks+=lightning_cl.methods.GPM", "--trainer.precision", "16-mixed"],
     "trainer.precision='16-mixed' with GPM"),  # every method that projects gradients
    (["--trainer.callbacks+=lightning_cl.methods.AGEM", "--trainer.precision", "bf16-mixed"],
     "trainer.precision='bf16-mixed' with AGEM"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[m for _, m in BAD])
def test_bad_settings_fail_before_training_and_name_the_setting(override, message, tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                 "--trainer.default_root_dir", str(root), *override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage:" not in err and "tip: `lightning-cl fit --help` lists every option." in err  # no wall of usage
    assert not root.exists()  # nothing trained, nothing written


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without a GPU")
def test_a_gpu_that_is_not_there_is_named_before_training(tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                 "--trainer.default_root_dir", str(root), "--trainer.accelerator", "gpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: trainer.accelerator='gpu': no GPU is visible" in err and "use --trainer.accelerator cpu" in err
    assert "Traceback" not in err and not root.exists()


def test_more_cpu_processes_than_cores_are_started_only_when_a_strategy_is_named(monkeypatch):
    from lightning_cl import trainer_checks
    from lightning_cl.cli import TRAINER_DEFAULTS

    monkeypatch.setattr(trainer_checks, "_cpu_cores", lambda: 2)
    errors = lambda **trainer: trainer_checks.trainer_setting_errors(  # noqa: E731
        {"accelerator": "cpu", "strategy": "auto", **trainer}, TRAINER_DEFAULTS)
    assert errors(devices=3) and "more than the 2 CPU cores" in errors(devices="3")[0]
    assert errors(devices=2) == [] and errors(devices="auto") == []
    assert errors(devices=3, strategy="ddp") == [] and errors(devices=3, strategy="ddp_spawn") == []  # asked for


def test_settings_that_cannot_be_honoured_are_all_named_at_once(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--trainer.default_root_dir",
                 str(tmp_path / "runs"), "--trainer.accumulate_grad_batches", "2", "--trainer.max_epochs", "3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: trainer.max_epochs=3" in err and "error: trainer.accumulate_grad_batches=2" in err


def test_test_and_predict_are_not_offered(capsys):
    for subcommand in ("test", "predict"):
        with pytest.raises(SystemExit) as exit_info:
            run_cli([subcommand])
        assert exit_info.value.code == 2
        assert f"invalid choice: '{subcommand}' (choose from 'fit', 'validate')" in capsys.readouterr().err


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("model:\n  lr: [0.1\n")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(config), "--trainer.default_root_dir", str(tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: -c {config} is not valid YAML" in err and f'in "{config}", line 2' in err
    assert "<unicode string>" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("module, expected", [("lightning_cl", "usage: lightning-cl [-c CONFIG] {fit,validate}"),
                                              ("lightning_cl.study", "usage: lightning-cl-study [-h]")])
def test_module_help_names_the_command(module, expected):
    out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert expected in out.stdout and "__main__.py" not in out.stdout


def test_claiming_run_directories_at_once_gives_each_its_own():
    from concurrent.futures import ThreadPoolExecutor
    import tempfile

    from lightning_cl.cli import claim_run_dir

    with tempfile.TemporaryDirectory() as root:
        logs = Path(root) / "lightning_logs"
        with ThreadPoolExecutor(8) as pool:
            versions = list(pool.map(lambda _: claim_run_dir(logs), range(32)))
        assert sorted(versions) == list(range(32))
        assert sorted(d.name for d in logs.iterdir()) == sorted(f"version_{v}" for v in range(32))


@pytest.mark.mnist
@pytest.mark.parametrize("round_", [1, 2])
def test_runs_started_together_each_get_their_own_directory(round_, mnist_dir, tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "together"  # shared by both rounds: the second finds version_0..5
    runs = 6
    command = [sys.executable, "-m", "lightning_cl", "fit", "-c", "configs/split_mnist/sequential.yaml",
               "--data.data_dir", mnist_dir, "--trainer.default_root_dir", str(root), "--data.tasks", "[[0, 1]]",
               "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "2",
               "--task_loop.epochs_per_task", "1", "--trainer.enable_progress_bar", "false",
               "--trainer.enable_model_summary", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    processes = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(runs)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    run_dirs = sorted((root / "lightning_logs").iterdir())
    assert len(run_dirs) == runs * round_
    printed = {line for out, _ in outputs for line in out.splitlines() if line.startswith("results: ")}
    assert len(printed) == runs  # each run of this round reports its own results.json
    for run_dir in run_dirs:
        assert sorted(p.name for p in run_dir.iterdir() if p.is_file() and not p.name.startswith("events")) == [
            "config.yaml", "hparams.yaml", "results.json"], run_dir
        assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, run_dir
        assert (run_dir / "checkpoints/last.ckpt").is_file()
        assert json.loads((run_dir / "results.json").read_text())["complete"]


# studies/ holds study files and mammoth/ a table of hyper-parameters, not -c configs
@pytest.mark.parametrize("config", sorted(p for p in (REPO / "configs").glob("*/*.yaml")
                                          if p.parent.name not in ("studies", "mammoth")),
                         ids=lambda p: p.parent.name + "/" + p.stem)
def test_every_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "task_loop:" in printed and "accelerator: cpu" in printed


BAD_BENCHMARK = [
    ("benchmarks/split_mnist.yaml", ["--data.scenario", "everything"],
     "data.scenario='everything' is not one of 'class', 'task', 'domain'."),
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


SPLIT, EWC, ER, GPM = (f"configs/{c}.yaml" for c in ("benchmarks/split_mnist", "methods/ewc", "methods/er", "methods/gpm"))
# A value refused inside a class given by class_path: jsonargparse's "Does not validate against any
# of the Union subtypes" dump, 8-14 lines with the reason inside, becomes that reason on one line.
IN_A_CLASS = [
    ([SPLIT, ER], ["--trainer.callbacks.per_class", "0"],
     "trainer.callbacks: ExperienceReplay init_args.per_class=0 must be at least 1."),
    ([SPLIT, EWC], ["--trainer.callbacks.lam", "-1"], "trainer.callbacks: EWC init_args.lam=-1.0 must be >= 0."),
    ([SPLIT, EWC], ["--trainer.callbacks.fisher", "bogus"],
     "trainer.callbacks: EWC init_args.fisher='bogus' is not one of 'empirical', 'expected', 'weighted'."),
    ([SPLIT, GPM], ["--trainer.callbacks.threshold", "[0.95, 1.5, 0.99]"],
     "trainer.callbacks: GPM init_args.threshold=[0.95, 1.5, 0.99] must be one or more values in (0, 1]."),
    ([SPLIT, GPM], ["--trainer.callbacks.project", "weights"],
     "trainer.callbacks: GPM init_args.project='weights' is not one of 'gradient', 'update', 'both'."),
    ([SPLIT], ["--trainer.callbacks.lam", "5"],
     "--trainer.callbacks.lam sets an argument of the last callback given before it, and there is none: add the "
     "callback first, e.g. --trainer.callbacks+=lightning_cl.methods.EWC (EWC, MAS and OnlineEWC take lam)."),
    ([SPLIT, ER], ["--trainer.callbacks.lam", "5"], "trainer.callbacks: ExperienceReplay has no option 'lam' "
     "(--trainer.callbacks.lam sets the last callback given before it)."),
    ([SPLIT, ER], ["--trainer.callbacks.per_class", "abc"],
     "trainer.callbacks: ExperienceReplay init_args.per_class='abc' is not a valid int."),
    ([SPLIT], ["--data.scenario", "Task"], "data.scenario='Task' is not one of 'class', 'task', 'domain'."),
    ([SPLIT], ["--data.tasks", "[[0, 11]]"], "data.tasks[0] contains 11; classes are the integers 0-9."),
    ([SPLIT], ["--data.batch_size", "0"], "data.batch_size=0 must be at least 1."),
    ([SPLIT], ["--data.batch_size", "abc"], "data.batch_size='abc' is not a valid int."),
    ([SPLIT], ["--data.no_such", "1"], "data: SplitMNIST has no option 'no_such'."),
    ([SPLIT], ["--data.class_path", "nosuch.Data"], "data: class_path 'nosuch.Data' cannot be used: No module named 'nosuch'"),
    ([SPLIT], ["--model.optimizer", "rmsprop"], "model.optimizer='rmsprop' is not one of 'adam', 'sgd'."),
]


@pytest.mark.parametrize("configs, override, line", IN_A_CLASS,
                         ids=[" ".join([Path(c).stem for c in cs[1:]] + o) for cs, o, _ in IN_A_CLASS])
def test_a_value_refused_inside_a_class_is_one_error_line(configs, override, line, tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *(arg for c in configs for arg in ("-c", str(REPO / c))), "--trainer.default_root_dir", str(root),
                 *override])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {line}", "tip: `lightning-cl fit --help` lists every option."]
    assert not root.exists()


def test_jsonargparse_debug_still_shows_the_whole_dump(monkeypatch, tmp_path):
    from jsonargparse import ArgumentError

    monkeypatch.setenv("JSONARGPARSE_DEBUG", "true")
    with pytest.raises(ArgumentError, match="Does not validate against any of the Union subtypes"):
        run_cli(["fit", "-c", str(REPO / SPLIT), "--trainer.default_root_dir", str(tmp_path), "--data.scenario", "Task"])


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


SYNTHETIC = ["fit", "--data", "synthetic.SyntheticOnDisk", "--data.tasks", "[[0, 1], [2, 3]]",
             "--task_loop.epochs_per_task", "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar",
             "false", "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.init_args.save_top_k", "-1",
             "--trainer.callbacks.init_args.filename", "{epoch}", "--trainer.callbacks.init_args.save_on_train_epoch_end",
             "true"]  # a checkpoint after each task


def test_a_run_resumes_in_another_place_but_not_with_another_setting(tmp_path, capsys):
    run_cli([*SYNTHETIC, "--trainer.default_root_dir", str(tmp_path / "first")])
    first = tmp_path / "first/lightning_logs/version_0"
    elsewhere = ["--trainer.default_root_dir", str(tmp_path / "again"), "--ckpt_path", str(first / "checkpoints/epoch=0.ckpt"),
                 "--data.data_dir", str(tmp_path / "data"), "--data.download", "false", "--trainer.log_every_n_steps", "1"]
    with pytest.raises(SystemExit):
        run_cli([*SYNTHETIC, *elsewhere, "--model.lr", "0.01"])
    assert "was made with another config (model.lr: checkpoint 0.001, config 0.01)" in capsys.readouterr().err
    run_cli([*SYNTHETIC, *elsewhere])  # placement may differ on resume
    resumed = json.loads((tmp_path / "again/lightning_logs/version_0/results.json").read_text())
    assert resumed["complete"] and resumed["config"]["data"]["init_args"]["data_dir"] == str(tmp_path / "data")
    assert resumed["accuracy_matrix"] == json.loads((first / "results.json").read_text())["accuracy_matrix"]


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
    truncated = tmp_path / "truncated.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    for ckpt, message in ((evil, "cannot be loaded safely (weights_only)"), (tmp_path / "missing.ckpt", "does not exist"),
                          (truncated, "is corrupt or not a checkpoint (RuntimeError: PytorchStreamReader failed")):
        with pytest.raises(SystemExit) as exit_info:
            run_cli(["fit", "-c", str(REPO / "configs/split_mnist/sequential.yaml"),
                     "--trainer.default_root_dir", str(tmp_path / "runs"), "--ckpt_path", str(ckpt)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err
        assert "weights_only=False" not in err  # never advise the unsafe way round
    assert not marker.exists() and not (tmp_path / "runs").exists()


@pytest.mark.mnist
@pytest.mark.parametrize("how, exit_code, error", [("exception", 1, "RuntimeError: a callback failed in task 2"),
                                                   ("sigint", 1, "KeyboardInterrupt"),
                                                   ("sigterm", 143, "the run was terminated by SIGTERM")])
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
    if how == "sigterm":  # a scheduler's SIGTERM: the error says how to resume, on stderr and in results.json
        resume = f"lightning-cl fit -c {path.parent / 'config.yaml'} --ckpt_path {path.parent / 'checkpoints/last.ckpt'}"
        assert resume in results["error"] and f"error: {results['error']}" in out.stderr


@pytest.fixture(scope="module")
def ogd_run(_verified_mnist_dir, tmp_path_factory):
    """A finished two-task OGD run (threshold stopping, lr factor): its directory."""
    root = tmp_path_factory.mktemp("ogd")
    run_cli(["fit", "-c", str(REPO / "configs/split_mnist/ogd_bn.yaml"), "--data.data_dir", _verified_mnist_dir,
             "--data.tasks", "[[1, 2], [3, 4]]", "--trainer.default_root_dir", str(root),
             "--trainer.limit_train_batches", "2", "--task_loop.epochs_per_task", "1",
             "--trainer.enable_progress_bar", "false"])
    (path,) = root.rglob("last.ckpt")
    return path.parent.parent


@pytest.mark.mnist
@pytest.mark.parametrize("override, message", [
    (["--trainer.callbacks", "[]"], "trainer.callbacks: checkpoint ['OrthogonalGradientDescent', 'AccuracyThreshold', "
                                    "'TaskLearningRate'], config []"),
    (["--task_loop.epochs_per_task", "2"], "task_loop.epochs_per_task: checkpoint 1, config 2"),
    (["--trainer.callbacks.init_args.factor", "0.5"],
     "trainer.callbacks[2] (TaskLearningRate).init_args.factor: checkpoint 0.2, config 0.5"),
    (["--seed_everything", "3"], "seed_everything: checkpoint 0, config 3"),
    (["--trainer.limit_train_batches", "5"], "trainer.limit_train_batches: checkpoint 2.0, config 5.0"),
])
def test_resuming_with_other_training_settings_is_refused(ogd_run, tmp_path, override, message, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(ogd_run / "config.yaml"), "--trainer.default_root_dir", str(root),
                 "--ckpt_path", str(ogd_run / "checkpoints/last.ckpt"), *override])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"was made with another config ({message}" in err and f"-c {ogd_run / 'config.yaml'}" in err
    assert not root.exists()


@pytest.mark.mnist
def test_a_threshold_change_is_named(ogd_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", "-c", str(REPO / "configs/split_mnist/ogd_bn_t95.yaml"), "-c", str(ogd_run / "config.yaml"),
                 "-c", str(REPO / "configs/split_mnist/ogd_bn_t95.yaml"), "--data.tasks", "[[1, 2], [3, 4]]",
                 "--data.data_dir", json.loads((ogd_run / "results.json").read_text())["config"]["data"]["init_args"]["data_dir"],
                 "--trainer.limit_train_batches", "2", "--task_loop.epochs_per_task", "1",
                 "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--ckpt_path", str(ogd_run / "checkpoints/last.ckpt")])
    err = capsys.readouterr().err
    assert "trainer.callbacks[1] (AccuracyThreshold).init_args.threshold: checkpoint 0.98, config 0.95" in err


@pytest.mark.mnist
def test_resuming_a_finished_run_says_it_is_finished_and_writes_nothing(ogd_run, tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(ogd_run / "config.yaml"), "--trainer.default_root_dir", str(root),
                 "--ckpt_path", str(ogd_run / "checkpoints/last.ckpt")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "is the end of a finished run (task 2 of 2 trained): there is nothing to resume" in err
    assert f"Its results are in {ogd_run / 'results.json'}" in err
    assert not root.exists()


@pytest.mark.mnist
def test_validate_on_a_checkpoint_writes_no_run_directory(checkpoint, mnist_dir, tmp_path, capsys):
    root = tmp_path / "runs"
    run_cli(["validate", "-c", str(REPO / "configs/split_mnist/sequential.yaml"), "--data.data_dir", mnist_dir,
             "--trainer.default_root_dir", str(root), "--trainer.limit_val_batches", "2",
             "--trainer.enable_progress_bar", "false", "--ckpt_path", str(checkpoint)])
    assert "val/acc" in capsys.readouterr().out  # it validated, and printed its metrics
    assert not root.exists() or not any(root.rglob("*"))



@pytest.mark.parametrize("lr, exploded", [("1e6", True), ("0.001", False)])
def test_a_run_whose_loss_exploded_ends_complete_but_flagged(lr, exploded, tmp_path, capsys):
    run_cli(["fit", "--data.class_path", "synthetic.SyntheticTasks", "--data.init_args.tasks", "[[0, 1], [2, 3]]",
             "--data.init_args.batch_size", "16", "--model.hidden", "[32, 16]", "--task_loop.steps_per_task", "8",
             "--task_loop.epochs_per_task", "null", "--trainer.enable_progress_bar", "false", "--model.lr", lr,
             "--trainer.default_root_dir", str(tmp_path)])
    (path,) = tmp_path.rglob("results.json")
    results = json.loads(path.read_text())
    assert results["complete"] and results["format_version"] == 2
    if not exploded:
        assert results["warnings"] == [] and "warning:" not in capsys.readouterr().err
        return
    assert max(results["seen_loss"]) > 1e3  # Adam at lr 1e6: the logits blow up, the loss stays finite
    (warning,) = results["warnings"]
    assert warning.startswith("the loss exploded: the seen-task test loss was ") and "try a smaller model.lr" in warning
    assert f"warning: {warning}" in capsys.readouterr().err
