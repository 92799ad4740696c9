"""The comparison report over any set of runs: grouped by what results.json records, summarised
over seeds, one picture per benchmark x scenario, unreadable files named and skipped."""

import json
import statistics

import pytest

from lightning_cl.report.comparison import acc_curve, group_runs, load_runs
from lightning_cl.report import main
from lightning_cl.results import RunResults
from lightning_cl.settings import grouping_settings


def _config(lr=1e-3, callbacks=None, seed=0, root="x"):
    return {"seed_everything": seed, "model": {"lr": lr, "hidden": [400, 400]},
            "data": {"class_path": "lightning_cl.data.SplitMNIST", "init_args": {"tasks": [[0, 1], [2, 3]],
                                                                                  "data_dir": root}},
            "trainer": {"callbacks": callbacks, "default_root_dir": root, "enable_progress_bar": False},
            "task_loop": {"steps_per_task": 2000}}


def _write(root, name, matrix, method="none", scenario="class", benchmark="split_mnist", seed=0, config=None,
           complete=True, wall_time_s=None):
    record = RunResults(complete=complete, tasks=[[0, 1], [2, 3]], accuracy_matrix=matrix, wall_time_s=wall_time_s,
                        seen_accuracy=[row[0] for row in matrix], benchmark=benchmark, scenario=scenario,
                        method=method, seed=seed, random_init_accuracy=[0.5, 0.5],
                        config=config or _config(seed=seed, root=str(root / name)))
    run = root / name
    run.mkdir(parents=True)
    record.write(run / "results.json")
    return run


def test_runs_are_grouped_by_recorded_benchmark_scenario_method_and_differing_settings(tmp_path):
    # Directory names say nothing (and mislead): grouping reads results.json only.
    _write(tmp_path, "ewc_run", [[1.0, 0.0], [0.6, 1.0]], seed=0)
    _write(tmp_path, "b", [[1.0, 0.0], [0.8, 1.0]], seed=1)
    _write(tmp_path, "c", [[1.0, 0.0], [0.9, 0.9]], method="ewc", seed=0)
    _write(tmp_path, "d", [[1.0, 0.0], [0.9, 0.9]], method="ewc", scenario="task", seed=0)
    _write(tmp_path, "e", [[1.0, 0.0], [0.7, 0.9]], method="ewc", seed=0, config=_config(lr=1e-4))
    _write(tmp_path, "f", [[1.0, 0.0]], seed=2, complete=False)  # incomplete: not compared
    runs, problems = load_runs([tmp_path])
    assert not problems and len(runs) == 6
    groups = group_runs(runs)
    keys = [(g.benchmark, g.scenario, g.method, json.dumps(g.settings)) for g in groups]
    assert keys == [("split_mnist", "class", "ewc", '{"model.lr": 0.0001}'),
                    ("split_mnist", "class", "ewc", '{"model.lr": 0.001}'),
                    ("split_mnist", "class", "none", "{}"), ("split_mnist", "task", "ewc", "{}")]
    none = groups[2]
    assert len(none.runs) == 2 and none.stats("acc")["mean"] == pytest.approx((0.8 + 0.9) / 2)
    assert none.stats("bwt")["std"] == pytest.approx(statistics.stdev([-0.4, -0.2]))
    assert groups[3].stats("bwt")["std"] is None  # one seed: no spread


def test_runs_on_more_devices_are_a_group_of_their_own_but_a_gpu_run_is_not(tmp_path):
    def config(seed, **trainer):
        config = _config(seed=seed, root=str(tmp_path / f"root{seed}"))
        config["trainer"] |= trainer
        return config

    _write(tmp_path, "cpu", [[1.0, 0.0], [0.6, 1.0]], seed=0, config=config(0, accelerator="cpu", devices=1,
                                                                           strategy="auto"))
    _write(tmp_path, "gpu", [[1.0, 0.0], [0.8, 1.0]], seed=1, config=config(1, accelerator="gpu", devices=1,
                                                                           strategy="auto"))
    _write(tmp_path, "ddp", [[1.0, 0.0], [0.7, 1.0]], seed=0, config=config(0, accelerator="cpu", devices=2,
                                                                           strategy="ddp"))
    groups = group_runs(load_runs([tmp_path])[0])
    assert [(g.label(), sorted(r.path.name for r in g.runs)) for g in groups] == [
        ("none (trainer.devices=1, trainer.strategy=auto)", ["cpu", "gpu"]),
        ("none (trainer.devices=2, trainer.strategy=ddp)", ["ddp"])]


def test_settings_ignore_paths_seeds_and_observers_but_name_method_settings():
    callbacks = [{"class_path": "lightning_cl.methods.ewc.EWC", "init_args": {"lam": 1e5}},
                 {"class_path": "lightning_cl.diagnostics.ForgettingCurve", "init_args": {"every_n_batches": 2}}]
    flat = grouping_settings(_config(callbacks=callbacks, seed=4, root="/somewhere"))
    assert flat["callbacks.EWC.lam"] == 1e5 and flat["model.lr"] == 1e-3
    assert not any(k.startswith("callbacks.ForgettingCurve") for k in flat)
    assert "seed_everything" not in flat and "trainer.default_root_dir" not in flat
    assert "data.init_args.data_dir" not in flat


def test_report_writes_tables_summary_and_a_picture_per_benchmark_and_scenario(tmp_path, capsys):
    logs = tmp_path / "logs"
    _write(logs, "a", [[1.0, 0.0], [0.6, 1.0]], seed=0, wall_time_s=10.0)
    _write(logs, "b", [[1.0, 0.0], [0.8, 1.0]], seed=1, wall_time_s=14.0)
    _write(logs, "c", [[0.9, 0.2], [0.9, 0.9]], method="joint", seed=0)
    _write(logs, "p", [[0.9, 0.2], [0.5, 0.9]], benchmark="permuted_mnist", scenario="domain")
    (logs / "broken").mkdir()
    (logs / "broken" / "results.json").write_text("{ not json")
    (logs / "old").mkdir()
    (logs / "old" / "results.json").write_text(json.dumps({"complete": True, "tasks": [[0, 1]]}))
    out = tmp_path / "out"
    main([str(logs), "-o", str(out)])
    err = capsys.readouterr().err
    assert f"{logs / 'broken' / 'results.json'}: cannot be read" in err
    assert f"{logs / 'old' / 'results.json'}: missing key(s) accuracy_matrix, seen_accuracy" in err

    report = (out / "report.md").read_text()
    assert "### split_mnist, class-incremental" in report and "### permuted_mnist, domain-incremental" in report
    assert ("Mean ± std over seeds (n). ACC: mean final accuracy over the tasks; BWT: final minus just-learnt accuracy "
            "(negative: forgetting); FWT: accuracy on a task before training it minus a random network's; forgetting: "
            "drop from the best earlier accuracy; learning acc: mean just-learnt accuracy; wall time: seconds of training "
            "per run.\n") in report
    assert ("| method | n | ACC | BWT | FWT | forgetting | learning acc | wall time (s) |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n") in report
    assert "| none | 2 | 0.8500 ± 0.0707 |" in report  # ACC (0.6+1)/2 and (0.8+1)/2
    assert report.split("| none | 2 |")[1].split("\n")[0].endswith("| 12 ± 3 |")  # seconds per run: 10 and 14
    assert "| joint | 1 | 0.9000 |" in report and report.split("| joint | 1 |")[1].split("\n")[0].endswith("| — |")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format_version"] == 1
    none = next(g for g in summary["groups"] if (g["benchmark"], g["method"]) == ("split_mnist", "none"))
    assert none["n_seeds"] == 2 and none["acc"]["mean"] == pytest.approx(0.85)
    assert none["wall_time_s"]["mean"] == pytest.approx(12.0) and none["wall_time_s"]["std"] == pytest.approx(2 ** 0.5 * 2)
    assert none["bwt"]["mean"] == pytest.approx(-0.3) and none["forgetting"]["mean"] == pytest.approx(0.3)
    assert none["fwt"]["mean"] == pytest.approx(-0.5)
    assert set(none) >= {"settings", "overrides", "runs", "scenario", "benchmark"}
    assert {p.name for p in out.glob("acc_*.png")} == {"acc_split_mnist_class.png", "acc_permuted_mnist_domain.png"}
    assert "](acc_split_mnist_class.png)" in report
    assert "unreadable" in report


def test_acc_curve_is_the_mean_over_the_tasks_seen_so_far():
    record = RunResults(complete=True, tasks=[[0], [1], [2]], seen_accuracy=[1, 1, 1],
                        accuracy_matrix=[[0.9, 0.1, 0.0], [0.5, 0.8, 0.0], [0.4, 0.6, 1.0]])
    assert acc_curve(record) == pytest.approx([0.9, 0.65, (0.4 + 0.6 + 1.0) / 3])
