"""The reproduction table: runs that follow a published protocol next to its published numbers, with
a verdict; runs that depart from the protocol never compared; every published number with its source."""

import json

import pytest

from lightning_cl.report import main
from lightning_cl.report.comparison import group_runs, load_runs
from lightning_cl.report.reproduction import PublishedError, load_published, reproduction_rows
from lightning_cl.results import RunResults

PROTOCOL = {"model": {"hidden": [400, 400], "optimizer": "adam", "lr": 0.001},
            "data": {"class_path": "lightning_cl.data.SplitMNIST",
                     "init_args": {"tasks": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], "normalize": False, "batch_size": 128}},
            "task_loop": {"steps_per_task": 2000}}


def _write(root, name, acc, seed, method="none", scenario="task", steps=2000):
    config = json.loads(json.dumps(PROTOCOL)) | {"seed_everything": seed}
    config["task_loop"]["steps_per_task"] = steps
    record = RunResults(complete=True, tasks=[[0, 1]], accuracy_matrix=[[acc]], seen_accuracy=[acc],
                        scenario=scenario, method=method, seed=seed, config=config,
                        overrides={} if steps == 2000 else {"task_loop.steps_per_task": steps})
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


def test_every_published_number_of_the_package_names_its_source_and_protocol():
    entries = load_published()
    assert entries, "the package's published numbers are empty"
    for e in entries:
        assert e.source["paper"] and e.source["table"] and e.source.get("row")
        assert 0 <= e.value <= 100 * e.protocol.scale / 100
        assert e.seeds or e.spread is None  # a source that gives a spread says over how many seeds
        assert e.scenario in ("task", "domain", "class")
    none_task = next(e for e in entries if (e.scenario, e.method) == ("task", "none"))
    assert (none_task.value, none_task.spread, none_task.spread_kind, none_task.seeds) == (84.32, 0.99, "SEM", 20)


def test_a_verdict_is_inside_within_the_published_spread_and_a_shortened_run_is_never_compared(tmp_path):
    # published task-IL none: 84.32 ± 0.99 (SEM); ours 0.84, 0.85 -> mean 84.50: inside
    _write(tmp_path, "a", 0.84, 0)
    _write(tmp_path, "b", 0.85, 1)
    _write(tmp_path, "c", 0.989, 0, method="ewc")  # published 99.06 ± 0.15: 98.90 is outside
    _write(tmp_path, "short", 0.99, 0, method="lwf", steps=50)  # not the protocol: not compared
    rows = reproduction_rows(group_runs(load_runs([tmp_path])[0]), load_published())
    verdicts = {(r.published.method, r.published.scenario): r.verdict() for r in rows}
    # ours 84.50 ± 0.71 (n=2): z = 0.18 / sqrt(0.99^2 + (0.71/sqrt 2)^2) = 0.16
    assert verdicts[("none", "task")] == "inside; z +0.2"
    assert verdicts[("ewc", "task")] == "outside (-0.16)"  # 98.90 - 99.06
    assert verdicts[("lwf", "task")] == "not run"
    assert ("none", "class") not in verdicts  # a scenario we did not run is left out


def test_a_protocol_no_run_follows_is_left_out_of_the_table(tmp_path):
    # runs of the same benchmark under another protocol (here: other steps per task) list nothing
    _write(tmp_path, "a", 0.84, 0, steps=50)
    _write(tmp_path, "b", 0.99, 0, method="ewc", steps=50)
    assert reproduction_rows(group_runs(load_runs([tmp_path])[0]), load_published()) == []
    _write(tmp_path, "c", 0.85, 1)  # one run that follows it brings the protocol's rows back
    rows = reproduction_rows(group_runs(load_runs([tmp_path])[0]), load_published())
    assert {(r.published.method, r.verdict()) for r in rows if r.published.scenario == "task"} >= {("none", "inside"), ("ewc", "not run")}


def test_the_report_has_the_reproduction_section_and_summary(tmp_path):
    _write(tmp_path / "runs", "a", 0.84, 0)
    _write(tmp_path / "runs", "b", 0.85, 1)
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Reproduction: ours next to the published numbers" in report
    assert "| task | none | 84.32 ± 0.99 (SEM, 20 seeds) | van de Ven et al. 2022, Table 2, Task-CL, None | " \
           "84.50 ± 0.71 (n=2) | inside; z +0.2 |" in report
    (none,) = [r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["reproduction"]
               if r["method"] == "none"]
    assert none["verdict"] == "inside; z +0.2" and none["ours"]["mean"] == pytest.approx(0.845)


def test_a_published_number_without_its_source_is_refused(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text("protocols: {p: {benchmark: split_mnist}}\n"
                    "entries: [{protocol: p, scenario: task, method: none, value: 1, source: {paper: X}}]\n")
    with pytest.raises(PublishedError, match="needs its source's paper and table"):
        load_published(path)


def _mammoth_run(root, name, acc, task_il_acc, seed, buffer_size):
    config = {"model": {"optimizer": "sgd"}, "data": {"init_args": {"batch_size": 10}},
              "trainer": {"callbacks": [{"class_path": "lightning_cl.methods.DER", "init_args": {"buffer_size": buffer_size}}]},
              "seed_everything": seed}
    record = RunResults(complete=True, tasks=[[0, 1]], accuracy_matrix=[[acc]], seen_accuracy=[acc], scenario="class",
                        method="der", seed=seed, config=config, task_il_accuracy_matrix=[[task_il_acc]])
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


def test_an_entry_names_its_buffer_and_task_il_entries_read_the_class_il_runs_task_il_accuracy(tmp_path):
    path = tmp_path / "published.yaml"
    path.write_text(
        "protocols: {p: {benchmark: split_mnist, scale: 100, task_il_from: class, settings: {model.optimizer: sgd}}}\n"
        "entries:\n"
        "  - {protocol: p, scenario: class, method: der, settings: {callbacks.DER.buffer_size: 200}, value: 80, spread: null, seeds: null, source: {paper: X, table: T, row: a}}\n"
        "  - {protocol: p, scenario: class, method: der, settings: {callbacks.DER.buffer_size: 500}, value: 90, spread: 1, seeds: 10, source: {paper: X, table: T, row: b}}\n"
        "  - {protocol: p, scenario: task, method: der, settings: {callbacks.DER.buffer_size: 500}, value: 99, spread: 0.5, seeds: 10, source: {paper: X, table: T, row: c}}\n")
    _mammoth_run(tmp_path / "runs", "a", 0.81, 0.97, 0, buffer_size=200)
    _mammoth_run(tmp_path / "runs", "b", 0.83, 0.98, 1, buffer_size=200)
    _mammoth_run(tmp_path / "runs", "c", 0.905, 0.991, 0, buffer_size=500)
    rows = reproduction_rows(group_runs(load_runs([tmp_path / "runs"])[0]), load_published(path))
    verdicts = {r.published.source["row"]: (r.task_il, r.verdict()) for r in rows}
    # buffer 200: ours 82.00 ± 1.41 (n=2) against 80 without a spread: z = 2 / (1.41 / sqrt 2) = 2.0
    assert verdicts["a"] == (False, "no published spread (+2.00); z +2.0 on our SEM alone")
    assert verdicts["b"] == (False, "inside")  # buffer 500's run only: 90.5 within 90 ± 1
    assert verdicts["c"] == (True, "inside")  # the task-IL accuracy of the buffer-500 class-IL run: 99.1
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--published", str(path)])
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| task | der (callbacks.DER.buffer_size=500), task-IL of the class-IL runs | 99 ± 0.5 (10 seeds) |" in report
    row = next(r for r in json.loads((tmp_path / "out" / "summary.json").read_text())["reproduction"]
               if r["published"]["source"]["row"] == "c")
    assert row["ours"]["task_il_of_class_runs"] and row["ours"]["mean"] == pytest.approx(0.991)
    assert row["published"]["settings"] == {"callbacks.DER.buffer_size": 500}
