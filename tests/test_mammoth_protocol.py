"""Mammoth's MNIST protocol (Buzzega et al. 2020; github.com/aimagelab/mammoth): the benchmark
configs seq_mnist / perm_mnist / rot_mnist, Mammoth's network and random rotations, and the task-IL
accuracy a class-IL run records (Mammoth's masking), with the report's table of it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torchvision.transforms import functional as TF

from lightning_cl.cli import run_cli
from lightning_cl.data.rotated_mnist import RandomRotatedMNIST, RotatedMNIST, nearest_rotation, random_angles
from lightning_cl.diagnostics import TaskILAccuracy
from lightning_cl.evaluation import evaluate_tasks, task_il_accuracy
from lightning_cl.models.mammoth_mlp import MammothMLP
from lightning_cl.report.writer import write_report
from lightning_cl.results import RunResults
from method_runs import fit_synthetic

REPO = Path(__file__).resolve().parent.parent
BEST_ARGS = REPO / "configs" / "mammoth" / "best_args.yaml"


def _built(config: str, *overrides: str):
    return run_cli(["-c", str(REPO / "configs" / "benchmarks" / config), *overrides, "--trainer.logger", "false"],
                   run=False)


# ----------------------------------------------------------------------------- the benchmark configs
@pytest.mark.parametrize("config, tasks, scenario, batch, lr, outputs", [
    ("seq_mnist.yaml", 5, "class", 10, 0.03, 10),
    ("perm_mnist.yaml", 20, "domain", 128, 0.2, 10),
    ("rot_mnist.yaml", 20, "domain", 128, 0.2, 10),
])
def test_the_mammoth_configs_build_mammoths_protocol(config, tasks, scenario, batch, lr, outputs):
    built = _built(config)
    data, model, loop = built.datamodule, built.model, built.config_init["task_loop"]
    assert (data.num_tasks, data.scenario, data.batch_size, data.num_outputs) == (tasks, scenario, batch, outputs)
    assert data.val_fraction == 0.0 and data.normalize is False  # all 60,000 training images, pixels in [0, 1]
    assert (loop.epochs_per_task, loop.steps_per_task) == (1, None)
    assert isinstance(model.network, MammothMLP)
    sizes = [(layer.in_features, layer.out_features) for layer in model.network.linear_layers()]
    assert sizes == [(784, 100), (100, 100), (100, outputs)]
    optimizer = model.configure_optimizers()
    assert type(optimizer) is torch.optim.SGD and optimizer.defaults["lr"] == lr
    assert optimizer.defaults["momentum"] == 0.0 and optimizer.defaults["weight_decay"] == 0.0
    assert any(isinstance(cb, TaskILAccuracy) for cb in built.trainer.callbacks) == (scenario == "class")


def test_seq_mnist_is_the_five_digit_pairs_in_order():
    assert _built("seq_mnist.yaml").datamodule.task_classes() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]


def test_rot_mnist_draws_twenty_angles_of_the_first_task_on():
    data = _built("rot_mnist.yaml").datamodule
    assert data.angles == random_angles(20, seed=0) and all(0 <= a < 180 for a in data.angles)
    assert data.angles[0] != 0 and data.interpolation == "nearest"


def test_a_method_after_a_mammoth_config_is_the_last_callback():
    built = _built("seq_mnist.yaml", "-c", str(REPO / "configs/methods/ewc.yaml"), "--trainer.callbacks.lam", "5")
    ewc = [cb for cb in built.trainer.callbacks if type(cb).__name__ == "EWC"]
    assert len(ewc) == 1 and ewc[0].lam == 5.0


def test_mammoths_network_is_xavier_uniform_with_zero_biases():
    torch.manual_seed(0)
    net = MammothMLP(784, 10)
    for layer in net.linear_layers():
        fan_out, fan_in = layer.weight.shape
        bound = math.sqrt(3) * math.sqrt(2 / (fan_in + fan_out))  # Mammoth's xavier: a = sqrt(3) * std
        assert layer.weight.abs().max() <= bound
        assert layer.weight.abs().max() > 0.95 * bound  # uniform up to the bound, not PyTorch's 1/sqrt(fan_in)
        assert abs(layer.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    logits, hidden = net(torch.rand(3, 784))
    assert logits.shape == (3, 10) and [h.shape for h in hidden] == [(3, 100), (3, 100)]
    assert all((h >= 0).all() for h in hidden)  # ReLU


# ----------------------------------------------------------------------------- Mammoth's random rotations
def _mammoths_angles(num_tasks: int, seed: int) -> list[float]:
    """Mammoth's rule written out: set_random_seed(seed), then one Rotation() per task, each drawing
    np.random.uniform(deg_min=0, deg_max=180) from NumPy's global generator."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        return [np.random.uniform(0, 180) for _ in range(num_tasks)]
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_random_angles_are_mammoths_draws_for_a_seed(seed):
    assert random_angles(20, seed) == _mammoths_angles(20, seed)
    assert random_angles(20, seed) == random_angles(20, seed)  # deterministic
    assert random_angles(5, seed) == random_angles(20, seed)[:5]  # a task's angle does not depend on the count


def test_random_angles_are_uniform_on_zero_to_180():
    angles = np.array([a for seed in range(200) for a in random_angles(20, seed)])
    assert angles.min() >= 0 and angles.max() < 180
    quarters = np.histogram(angles, bins=4, range=(0, 180))[0] / len(angles)
    assert np.all(np.abs(quarters - 0.25) < 0.02), quarters  # 4000 draws: std of a quarter's share ~0.007
    assert random_angles(20, 0) != random_angles(20, 1)
    assert all(10 <= a < 20 for a in random_angles(50, 3, 10, 20))


def test_random_rotation_turns_images_as_mammoths_pil_rotation_does():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 28, 28), dtype=torch.uint8, generator=g)
    dm = RandomRotatedMNIST(num_tasks=3, rotation_seed=7, normalize=False)
    dm._mnist = {s: (images.flatten(1).float() / 255, torch.arange(6) % 10) for s in ("train", "val", "test")}
    for task, angle in enumerate(dm.angles):
        x = dm.task_data("test", task)[0].view(-1, 28, 28)
        # Mammoth: Compose((Rotation(), ToTensor())): rotate the PIL image, then scale to [0, 1].
        pil = torch.stack([torch.from_numpy(np.array(TF.rotate(Image.fromarray(im.numpy(), mode="L"), angle)))
                           for im in images])
        assert torch.equal(x, pil.float() / 255), (task, angle)
    assert dm.task_names() == [f"{a:.1f}°" for a in random_angles(3, 7)]


@pytest.mark.parametrize("fill", [0.0, -0.4242])
def test_nearest_rotation_by_gather_is_torchvisions_rotate_pixel_for_pixel(fill):
    x = torch.rand(500, 784, generator=torch.Generator().manual_seed(1))
    for angle in [0.0, 12.3, 45.0, 90.0, 133.7, 179.9] + random_angles(10, 3):
        expected = TF.rotate(x.view(-1, 1, 28, 28), angle, interpolation=TF.InterpolationMode.NEAREST, fill=[fill])
        assert torch.equal(nearest_rotation(x, angle, fill), expected.reshape(len(x), -1)), angle
    assert not torch.equal(nearest_rotation(x, 30.0, fill), x)  # it does turn the images


@pytest.mark.parametrize("make", [lambda: RandomRotatedMNIST(num_tasks=2), lambda: RotatedMNIST(angles=[0, 30])])
def test_rotated_mnist_without_validation_images_has_an_empty_validation_set(make):
    dm = make()  # Mammoth's protocol: data.val_fraction 0, no validation images to rotate
    dm._mnist = {s: (torch.rand(0 if s == "val" else 4, 784), torch.arange(0 if s == "val" else 4))
                 for s in ("train", "val", "test")}
    x, y, t = dm.seen_data("val", 1)
    assert x.shape == (0, 784) and len(y) == len(t) == 0


@pytest.mark.parametrize("make, message", [
    (lambda: RandomRotatedMNIST(num_tasks=0), "data.num_tasks=0"),
    (lambda: RandomRotatedMNIST(angle_range=(90, 10)), r"data.angle_range=\[90, 10\]"),
    (lambda: RandomRotatedMNIST(angle_range=(0, float("inf"))), "data.angle_range"),
    (lambda: RandomRotatedMNIST(interpolation="cubic"), "data.interpolation='cubic'"),
])
def test_bad_random_rotation_settings_are_refused_at_construction(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_fixed_angle_rotated_mnist_is_unchanged():
    # Its settings (and so the resolved config, the study's run ids and the resume check of its runs)
    # are what they were; the rotation stays bilinear, the first task unrotated.
    config = _built("rotated_mnist.yaml").config.as_dict()["data"]["init_args"]
    assert sorted(config) == ["angles", "batch_size", "cumulative", "data_dir", "download", "normalize",
                              "scenario", "split_seed", "val_fraction"]
    dm = RotatedMNIST(angles=[0, 30], normalize=False)
    g = torch.Generator().manual_seed(0)
    dm._mnist = {s: (torch.rand(4, 784, generator=g), torch.arange(4)) for s in ("train", "val", "test")}
    x0, x1 = dm.task_data("test", 0)[0], dm.task_data("test", 1)[0]
    expected = TF.rotate(x0.view(-1, 1, 28, 28), 30.0, interpolation=TF.InterpolationMode.BILINEAR, fill=[0.0])
    assert torch.equal(x1, expected.reshape(4, -1)) and dm.task_names() == ["0°", "30°"]


# ----------------------------------------------------------------------------- task-IL accuracy of a class-IL run
def test_task_il_accuracy_masks_the_other_tasks_outputs():
    # Two tasks, units [0, 1] and [2, 3]. Class-IL picks the largest logit overall; task-IL among the
    # example's own task's units only.
    logits = torch.tensor([[1.0, 0.0, 5.0, 0.0],   # task 0, class 0: class-IL says 2 (wrong), task-IL 0 (right)
                           [0.0, 2.0, 0.0, 3.0],   # task 0, class 1: class-IL 3 (wrong), task-IL 1 (right)
                           [3.0, 0.0, 1.0, 2.0],   # task 0, class 1: class-IL 0 (wrong), task-IL 0 (wrong)
                           [0.0, 0.0, 9.0, 1.0]])  # task 0, class 0: class-IL 2 (wrong), task-IL tie 0 vs 1 -> 0
    y = torch.tensor([0, 1, 1, 0])
    assert task_il_accuracy(logits, y, [0, 1]) == 0.75
    assert task_il_accuracy(logits, y, [2, 3]) == 0.0  # never the labels' units
    assert task_il_accuracy(logits[:, [2, 3, 0, 1]], y + 2, [2, 3]) == 0.75  # the same task as units 2, 3


def test_evaluate_tasks_scores_each_task_on_its_units_from_one_forward_pass():
    logits = [torch.tensor([[0.0, 1.0, 2.0, 0.0], [1.0, 0.0, 0.0, 0.0]]),  # task 0: labels 1, 0
              torch.tensor([[5.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.0, 0.5]])]  # task 1: labels 3, 2
    sets = [(torch.zeros(2, 1), torch.tensor([1, 0]), torch.zeros(2, dtype=torch.long)),
            (torch.ones(2, 1), torch.tensor([3, 2]), torch.ones(2, dtype=torch.long))]
    calls = []

    def forward(x, t):
        calls.append(int(t[0]))
        return logits[int(t[0])], (torch.zeros(2, 3),)

    evaluation = evaluate_tasks(forward, sets, seen_tasks=2, task_units=[[0, 1], [2, 3]])
    assert calls == [0, 1]
    assert evaluation.task_accuracy == [0.5, 0.5]  # class-IL: [2, 0] vs [1, 0]; [0, 2] vs [3, 2]
    assert evaluation.task_il_accuracy == [1.0, 1.0]  # task-IL: [1, 0]; [3, 2]
    assert evaluate_tasks(forward, sets, seen_tasks=2).task_il_accuracy is None


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("task_il")
    with_it = fit_synthetic(root / "with", [TaskILAccuracy()], scenario="class")
    without = fit_synthetic(root / "without", [], scenario="class")
    return with_it, without


def test_a_class_il_run_records_its_task_il_matrix_and_trains_the_same(synthetic_runs):
    (trainer, results), (_, plain) = synthetic_runs
    matrix = results["task_il_accuracy_matrix"]
    assert len(matrix) == 3 and all(len(row) == 3 for row in matrix)
    assert len(results["task_il_random_init_accuracy"]) == 3
    assert results["task_il_metrics"]["acc"] == pytest.approx(sum(matrix[-1]) / 3)
    # The last row again, by hand, from the trained network: each task's test set masked to its classes.
    module, data = trainer.lightning_module, trainer.datamodule
    for task, (x, y, t) in enumerate(data.test_sets()):
        logits, _ = module.eval_logits(x, t)
        keep = torch.zeros(logits.shape[1], dtype=torch.bool)
        keep[data.task_units(task)] = True
        by_hand = (logits.masked_fill(~keep, -float("inf")).argmax(1) == y).float().mean().item()
        assert matrix[-1][task] == pytest.approx(by_hand, abs=1e-6)
    # Training and the class-IL record are untouched; a run without the callback writes no task-IL key.
    for key in ("accuracy_matrix", "random_init_accuracy", "seen_accuracy", "seen_loss", "global_step"):
        assert results[key] == plain[key], key
    assert not [k for k in plain if k.startswith("task_il")]


def test_a_task_il_or_domain_il_run_records_no_task_il_matrix(tmp_path):
    for scenario in ("task", "domain"):
        _, results = fit_synthetic(tmp_path / scenario, [TaskILAccuracy()], scenario=scenario, steps=2)
        assert "task_il_accuracy_matrix" not in results and "task_il_metrics" not in results


def test_the_task_il_matrix_survives_a_resume(tmp_path, synthetic_runs):
    (_, results), _ = synthetic_runs
    checkpoints = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    fit_synthetic(tmp_path / "straight", [TaskILAccuracy(), checkpoints], scenario="class")
    ckpt = next((tmp_path / "straight").rglob("epoch=0-*.ckpt"))  # end of task 1
    _, resumed = fit_synthetic(tmp_path / "resumed", [TaskILAccuracy()], scenario="class", ckpt_path=ckpt)
    assert resumed["task_il_accuracy_matrix"] == results["task_il_accuracy_matrix"]
    assert resumed["task_il_random_init_accuracy"] == results["task_il_random_init_accuracy"]


def test_results_keep_the_optional_task_il_keys_only_when_recorded():
    base = dict(complete=True, tasks=[[0, 1], [2, 3]], accuracy_matrix=[[1.0, 0.0], [0.0, 1.0]], seen_accuracy=[1, .5])
    plain = RunResults(**base).to_dict()
    assert not [k for k in plain if k.startswith("task_il")]
    record = RunResults(**base, task_il_accuracy_matrix=[[1.0, 0.5], [0.9, 1.0]], task_il_random_init_accuracy=[.5, .5])
    data = json.loads(json.dumps(record.to_dict()))
    assert data["task_il_metrics"] == {"acc": 0.95, "bwt": pytest.approx(-0.1), "fwt": 0.0,
                                       "forgetting": pytest.approx(0.1), "learning_acc": 1.0}
    assert RunResults.from_dict(data).task_il_accuracy_matrix == [[1.0, 0.5], [0.9, 1.0]]
    assert RunResults.from_dict(plain).task_il_metrics() is None


def test_the_report_shows_task_il_metrics_of_runs_that_recorded_them(tmp_path):
    def run(name, seed, **extra):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        record = RunResults(complete=True, tasks=[[0, 1], [2, 3]], accuracy_matrix=[[1.0, 0.0], [0.0, 1.0]],
                            seen_accuracy=[1.0, 0.5], seed=seed, method=name.rstrip("0123456789"), **extra)
        record.write(d / "results.json")

    run("none0", 0, task_il_accuracy_matrix=[[1.0, 0.5], [0.8, 1.0]])
    run("none1", 1, task_il_accuracy_matrix=[[1.0, 0.5], [0.6, 1.0]])
    run("ewc0", 0)
    write_report([tmp_path / "runs"], tmp_path / "out")
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Task-IL metrics of the same runs" in report
    row = next(line for line in report.splitlines() if line.startswith("| none | 2 |") and "0.8500" in line)
    assert "0.8500 ± 0.0707" in row  # task-IL ACC: (0.9, 0.8) over the seeds
    groups = {g["method"]: g for g in json.loads((tmp_path / "out" / "summary.json").read_text())["groups"]}
    assert groups["none"]["task_il"]["acc"]["mean"] == pytest.approx(0.85) and "task_il" not in groups["ewc"]
    assert groups["none"]["acc"]["mean"] == 0.5  # the class-IL ACC as before


# ----------------------------------------------------------------------------- Mammoth's best arguments
def test_the_best_args_transcription_covers_every_method_and_dataset():
    import yaml

    table = yaml.safe_load(BEST_ARGS.read_text())
    assert table["source"]["commit"] == "9efb3441c4ac2605e0202c28c392b5a33149a69b"
    for dataset in ("seq-mnist", "perm-mnist", "rot-mnist"):
        args = table["best_args"][dataset]
        for method, values in args.items():
            for buffer, entry in values.items():
                assert buffer in (-1, 200, 500, 5120), (dataset, method, buffer)
                assert entry["n_epochs"] == 1 and entry["lr"] > 0, (dataset, method, buffer)
        for method in ("sgd", "ewc_on", "si", "er", "gem", "agem", "der", "derpp"):
            assert method in args, (dataset, method)
        for method in ("er", "gem", "agem", "der", "derpp"):
            assert sorted(args[method]) == [200, 500, 5120], (dataset, method)
    assert {"lwf", "icarl"} <= set(table["best_args"]["seq-mnist"])
    missing = {(m["dataset"], m["method"]) for m in table["missing"]}
    assert ("seq-mnist", "gdumb") in missing and ("seq-mnist", "joint") in missing
    # spot checks against the file, read at the commit
    assert table["best_args"]["seq-mnist"]["ewc_on"][-1] == {"lr": 0.03, "e_lambda": 90, "gamma": 1.0,
                                                             "batch_size": 10, "n_epochs": 1}
    assert table["best_args"]["seq-mnist"]["derpp"][5120] == {"lr": 0.1, "minibatch_size": 64, "alpha": 0.2,
                                                              "beta": 0.5, "batch_size": 10, "n_epochs": 1}
    assert table["best_args"]["rot-mnist"]["agem"][500]["lr"] == 0.3


# ----------------------------------------------------------------------------- the real protocol, shrunk
@pytest.mark.mnist
def test_shrunk_seq_mnist_records_class_il_and_task_il_accuracy(run_cli):
    results = run_cli("benchmarks/seq_mnist.yaml", "--task_loop.epochs_per_task", "null",
                      "--task_loop.steps_per_task", "30", "--trainer.enable_checkpointing", "false")
    class_il, task_il = results["accuracy_matrix"], results["task_il_accuracy_matrix"]
    assert results["complete"] and len(class_il) == len(task_il) == 5 and results["steps_per_task"] == [30] * 5
    # Naive class-IL forgets the earlier pairs (the new pair's outputs take over); asked only between
    # its own two digits, the same network still tells most of them apart.
    assert max(class_il[-1][:4]) < 0.2 and min(task_il[-1]) > 0.6
    assert results["task_il_metrics"]["acc"] > results["acc"] + 0.5
    assert all(task_il[j][j] >= class_il[j][j] for j in range(5))  # fewer outputs to confuse it with
    assert results["val_seen_accuracy"] == [None] * 5  # val_fraction 0: no held-out images, as Mammoth


# ----------------------------------------------------------------- the study's values are Mammoth's
STUDY = Path(__file__).parents[1] / "configs" / "studies" / "mammoth_mnist.yaml"
BEST_ARGS = Path(__file__).parents[1] / "configs" / "mammoth" / "best_args.yaml"
DATASETS = {"seq": "seq-mnist", "perm": "perm-mnist", "rot": "rot-mnist"}
TASKS = {"seq": 5, "perm": 20, "rot": 20}
# our method (the study's experiment name) -> Mammoth's model name in best_args
MAMMOTH_MODEL = {"none": "sgd", "online_ewc": "ewc_on", "si": "si", "lwf": "lwf", "er": "er", "gem": "gem",
                 "agem": "agem", "icarl": "icarl", "der": "der", "derpp": "derpp"}


def _resolved(args: list[str]) -> dict:
    """The study run's settings: its -c files' (benchmark, then method), then its command-line overrides."""
    import yaml

    values = {}
    configs = [args[i + 1] for i, a in enumerate(args) if a == "-c"]
    for config in configs:
        data = yaml.safe_load(Path(config).read_text())
        values |= {f"model.{k}": v for k, v in (data.get("model") or {}).items()}
        for callback in (data.get("trainer") or {}).get("callbacks+", []) or []:
            values |= {f"trainer.callbacks.{k}": v for k, v in (callback.get("init_args") or {}).items()}
    flags = [a for a in args if a != "-c" and a not in configs]
    values |= {flags[i].removeprefix("--"): yaml.safe_load(flags[i + 1]) for i in range(0, len(flags), 2)}
    return values


def _expected(method: str, bench: str, buffer: int, best: dict) -> dict:
    """What Mammoth's best arguments say the run's settings are, mapped to ours (configs/mammoth/best_args.yaml)."""
    entry = best[DATASETS[bench]][MAMMOTH_MODEL[method]]
    args = entry[-1] if -1 in entry else entry[buffer]
    expected = {"model.lr": args["lr"]}
    cb = "trainer.callbacks."
    if method == "online_ewc":
        expected |= {cb + "lam": 2 * args["e_lambda"], cb + "gamma": args["gamma"], cb + "fisher": "weighted"}
    elif method == "si":
        expected |= {cb + "c": args["c"], cb + "xi": args["xi"]}
    elif method == "lwf":
        expected |= {cb + "temperature": args["softmax_temp"]}
    elif method in ("er", "der", "derpp"):
        expected |= {cb + "buffer_size": buffer, cb + "minibatch_size": args["minibatch_size"]}
        expected |= {cb + k: args[k] for k in ("alpha", "beta") if k in args}
    elif method == "gem":
        expected |= {cb + "memories": buffer, cb + "budget": "total", cb + "margin": args["gamma"]}
    elif method == "agem":  # Mammoth keeps buffer_size // tasks random examples of each task
        expected |= {cb + "sampling": "task", cb + "per_task": buffer // TASKS[bench],
                     cb + "batch_size": args["minibatch_size"]}
    elif method == "icarl":
        expected |= {cb + "buffer_size": buffer}
    return expected


def test_every_run_of_the_mammoth_study_has_mammoth_s_best_arguments():
    import yaml

    from lightning_cl.study.plan import expand, load_study

    best = yaml.safe_load(BEST_ARGS.read_text())["best_args"]
    checked = 0
    for name, args, _ in expand(load_study(STUDY), [0]):
        bench, method, *variant = name.split("/")
        if method not in MAMMOTH_MODEL:  # joint and GDumb: no best arguments on MNIST
            continue
        buffer = int(variant[0].removeprefix("b")) if variant else -1
        settings = _resolved(args)
        for key, value in _expected(method, bench, buffer, best).items():
            assert settings.get(key) == pytest.approx(value) if isinstance(value, float) else settings.get(key) == value, \
                (name, key, settings.get(key), value)
        checked += 1
    assert checked == 4 + 6 * 2 + 2 * (3 + 5 * 2)  # seq: 4 + 6 methods x 2 buffers; perm, rot: 3 + 5 x 2 each
