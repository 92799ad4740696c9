"""The network comes from the config and its sizes from the data: a benchmark whose examples are
not 784 numbers trains a network that is not the built-in MLP, through the real CLI; without
``model.network`` the MLP is built exactly as before."""

import json

import pytest
import torch
from lightning.pytorch import Callback
from torch import nn

from lightning_cl.classifier import ContinualClassifier
from lightning_cl.cli import run_cli
from lightning_cl.data.task_data import TaskDataModule
from lightning_cl.models.mlp import MLP
from synthetic import SyntheticTasks


class TinyTasks(SyntheticTasks):
    """Four Gaussian classes in 20 dimensions, two tasks of two classes: inputs that are not 784 numbers."""

    benchmark = "tiny"
    num_classes = 4
    input_size = 20
    sizes = {"train": 32, "val": 4, "test": 10}  # examples per class

    def __init__(self, **kwargs) -> None:
        super().__init__(tasks=[[0, 1], [2, 3]], separation=6.0, **kwargs)


class OneHiddenLayer(nn.Module):
    """The network contract in a few lines: built with the sizes from the data, returns
    ``(logits, hidden)``, lists its Linear layers."""

    def __init__(self, input_size: int, num_outputs: int, width: int = 8) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width={width} must be at least 1.")  # shown as "model.network: width=..."
        self.inner, self.head = nn.Linear(input_size, width), nn.Linear(width, num_outputs)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        h = torch.relu(self.inner(x))
        return self.head(h), (h,)

    def linear_layers(self) -> list[nn.Linear]:
        return [self.inner, self.head]


class FailInSecondTask(Callback):
    """Raises at the first batch of the second task while ``armed``: a run that stops mid-way.
    Keeps the tasks it saw trained, so that a test can tell a resume from a restart."""

    armed = False
    trained_tasks: set[int] = set()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        FailInSecondTask.trained_tasks.add(trainer.datamodule.current_task)
        if FailInSecondTask.armed and trainer.datamodule.current_task == 1:
            raise RuntimeError("stopped in task 2")


# With the L1 penalty and a method, both of which read the network's outputs and parameters.
NETWORK_RUN = ["--data", "test_network.TinyTasks", "--data.batch_size", "16", "--task_loop.epochs_per_task", "2",
               "--model.network", "test_network.OneHiddenLayer", "--model.network.width", "6",
               "--model.lr", "0.01", "--model.lambda_l1", "0.01",
               "--trainer.callbacks+=lightning_cl.methods.EWC", "--trainer.callbacks.lam", "100",
               "--trainer.callbacks+=test_network.FailInSecondTask", "--trainer.enable_progress_bar", "false"]
SAME_RESULTS = ("complete", "accuracy_matrix", "seen_accuracy", "seen_loss", "sparsity", "epochs_per_task", "global_step")


def fit(root, *args):
    cli = run_cli(["fit", *args, "--trainer.default_root_dir", str(root)])
    return cli, cli.run_dir, json.loads((cli.run_dir / "results.json").read_text())


@pytest.fixture(scope="module")
def network_run(tmp_path_factory):
    return fit(tmp_path_factory.mktemp("network"), *NETWORK_RUN)


def test_a_configured_network_trains_on_inputs_of_another_size(network_run):
    cli, run_dir, results = network_run
    network = cli.model.network
    assert type(network) is OneHiddenLayer and network.inner.in_features == 20 and network.inner.out_features == 6
    assert network.head.out_features == 4  # class-IL: every class of the benchmark
    assert results["complete"] and results["tasks_done"] == 2 and results["benchmark"] == "tiny"
    assert results["config"]["model"]["network"] == {"class_path": "test_network.OneHiddenLayer",
                                                     "init_args": {"width": 6}}
    assert "network" not in torch.load(run_dir / "checkpoints/last.ckpt", weights_only=True)["hyper_parameters"]


def test_the_saved_config_reruns_the_same_run(network_run, tmp_path):
    _, run_dir, results = network_run
    _, _, again = fit(tmp_path, "-c", str(run_dir / "config.yaml"))
    for key in SAME_RESULTS:
        assert again[key] == results[key], key


def test_print_config_shows_the_network(capsys):
    with pytest.raises(SystemExit):
        run_cli(["fit", *NETWORK_RUN, "--print_config"])
    printed = capsys.readouterr().out
    assert "  network:\n    class_path: test_network.OneHiddenLayer\n    init_args:\n      width: 6\n" in printed


def test_a_stopped_run_resumes_to_the_same_results(network_run, tmp_path):
    _, _, expected = network_run
    FailInSecondTask.armed = True
    try:
        with pytest.raises(RuntimeError, match="stopped in task 2"):
            fit(tmp_path, *NETWORK_RUN)
    finally:
        FailInSecondTask.armed = False
    run_dir = tmp_path / "lightning_logs/version_0"
    assert json.loads((run_dir / "results.json").read_text())["tasks_done"] == 1
    FailInSecondTask.trained_tasks = set()
    _, _, resumed = fit(tmp_path, "-c", str(run_dir / "config.yaml"), "--ckpt_path", str(run_dir / "checkpoints/last.ckpt"))
    assert FailInSecondTask.trained_tasks == {1}  # resumed at task 2, not started again
    for key in SAME_RESULTS:
        assert resumed[key] == expected[key], key


@pytest.mark.parametrize("override, message", [
    ([], "is the end of a finished run (task 2 of 2 trained)"),  # the network matched
    (["--model.network.width", "7"], "was made with another config (model.network.init_args.width: checkpoint 6, config 7)"),
])
def test_a_resume_is_checked_against_the_network(network_run, tmp_path, override, message, capsys):
    _, run_dir, _ = network_run
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", "-c", str(run_dir / "config.yaml"), "--trainer.default_root_dir", str(tmp_path / "runs"),
                 "--ckpt_path", str(run_dir / "checkpoints/last.ckpt"), *override])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("override, message", [
    (["--model.norm", "batch"], "model.norm='batch' applies to the built-in MLP, not to model.network"),
    (["--model.dropout", "0.5"], "model.dropout=0.5 applies to the built-in MLP"),
    (["--model.hidden", "[400, 400]"], "model.hidden=[400, 400] applies to the built-in MLP"),
    (["--model.network.width", "0"], "model.network: width=0 must be at least 1."),  # its own refusal
])
def test_mlp_settings_with_a_network_are_refused_before_training(override, message, tmp_path, capsys):
    root = tmp_path / "runs"
    with pytest.raises(SystemExit) as exit_info:
        run_cli(["fit", *NETWORK_RUN, "--trainer.default_root_dir", str(root), *override])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not root.exists()


def test_without_a_network_the_mlp_is_built_as_before():
    for settings in ({}, {"norm": "batch", "dropout": 0.2, "hidden": [400, 400]}):
        torch.manual_seed(0)
        built = ContinualClassifier(**settings).network
        torch.manual_seed(0)
        direct = MLP(**{**settings, "hidden": tuple(settings.get("hidden", (120, 84)))})
        assert repr(built) == repr(direct)
        assert built.state_dict().keys() == direct.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), direct.state_dict().values()))
    assert ContinualClassifier(input_size=20, num_outputs=4).network.linear_layers()[0].in_features == 20


def test_a_network_that_is_not_a_module_is_refused():
    with pytest.raises(ValueError, match="model.network built a str, not a torch.nn.Module"):
        ContinualClassifier(network=lambda inputs, outputs: "a network")


def test_a_benchmark_must_say_its_input_size():
    class Unsized(TaskDataModule):
        benchmark, num_classes = "unsized", 2
        task_classes, task_names, task_examples = (lambda self: [[0, 1]]), (lambda self: ["[0, 1]"]), None

    with pytest.raises(ValueError, match="Unsized does not say its input_size"):
        Unsized()
