"""Choosing hyper-parameters on validation accuracy: per benchmark x scenario x method, the grid point
with the best mean final validation accuracy is kept, only its test numbers are reported, the whole
grid is listed with its validation scores, and the test set never chooses."""

import json

import pytest

from lightning_cl.report import main
from lightning_cl.report.comparison import group_runs, load_runs
from lightning_cl.report.selection import SelectionError, check_selection, names_setting, select
from lightning_cl.results import RunResults
from lightning_cl.study.plan import StudyError, load_study


def _write(root, name, lam, seed, test_acc, val_acc, scenario="task", method="ewc", protocol_lam=1e5):
    callbacks = [{"class_path": "lightning_cl.methods.EWC", "init_args": {"lam": lam}}]
    config = {"seed_everything": seed, "model": {"lr": 1e-3}, "trainer": {"callbacks": callbacks},
              "data": {"class_path": "lightning_cl.data.SplitMNIST", "init_args": {"scenario": scenario}}}
    record = RunResults(complete=True, tasks=[[0, 1], [2, 3]], accuracy_matrix=[[test_acc, 0.5], [test_acc, test_acc]],
                        seen_accuracy=[test_acc, test_acc], val_seen_accuracy=[0.9, val_acc], scenario=scenario,
                        method=method, seed=seed, random_init_accuracy=[0.5, 0.5], config=config,
                        overrides={"callbacks.EWC.lam": lam} if lam != protocol_lam else {})
    (root / name).mkdir(parents=True)
    record.write(root / name / "results.json")


def _grid(root):
    # lam 1 has the best test accuracy but lam 100 the best validation accuracy: 100 must win.
    for seed in (0, 1):
        _write(root, f"l1s{seed}", 1.0, seed, test_acc=0.99, val_acc=0.80 + seed / 100)
        _write(root, f"l100s{seed}", 100.0, seed, test_acc=0.90, val_acc=0.85 + seed / 100)
        _write(root, f"l1e4s{seed}", 1e4, seed, test_acc=0.95, val_acc=0.83)
    _write(root, "class", 5.0, 0, test_acc=0.3, val_acc=0.2, scenario="class")  # one point: kept as it is


def test_the_best_mean_validation_accuracy_is_chosen_never_the_best_test_accuracy(tmp_path):
    _grid(tmp_path)
    groups = group_runs(load_runs([tmp_path])[0])
    kept, choices = select(groups, ["trainer.callbacks.lam"])
    assert [(g.scenario, g.settings) for g in kept] == [("class", {}), ("task", {"callbacks.EWC.lam": 100.0})]
    (choice,) = choices
    assert [p.group.settings["callbacks.EWC.lam"] for p in choice.points] == [1.0, 100.0, 10000.0]
    assert [p.mean for p in choice.points] == pytest.approx([0.805, 0.855, 0.83])
    assert choice.chosen.group.settings == {"callbacks.EWC.lam": 100.0}
    # without a selection every point is its own group
    assert len(groups) == 4


def test_a_grid_with_a_run_that_recorded_no_validation_accuracy_chooses_nothing(tmp_path):
    _grid(tmp_path)
    old = json.loads((tmp_path / "l1e4s0" / "results.json").read_text())
    old["val_seen_accuracy"] = []  # as written by an earlier lightning-cl
    (tmp_path / "l1e4s0" / "results.json").write_text(json.dumps(old))
    kept, (choice,) = select(group_runs(load_runs([tmp_path])[0]), ["trainer.callbacks.lam"])
    assert choice.chosen is None and len(kept) == 4


def test_the_report_gives_only_the_chosen_point_s_test_numbers_and_lists_the_grid(tmp_path):
    _grid(tmp_path / "runs")
    main([str(tmp_path / "runs"), "-o", str(tmp_path / "out"), "--select", "trainer.callbacks.lam"])
    report = (tmp_path / "out" / "report.md").read_text()
    tables, grid = report.split("## Selected on validation accuracy")
    assert "ewc (callbacks.EWC.lam=100.0)" in tables and "lam=1.0)" not in tables and "0.9900" not in tables
    assert "| **callbacks.EWC.lam=100.0** | 2 | 0.8550 ± 0.0071 |" in grid
    assert "| callbacks.EWC.lam=1.0 | 2 | 0.8050 ± 0.0071 |" in grid
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    (selection,) = summary["selections"]
    assert selection["chosen"] == {"callbacks.EWC.lam": 100.0} and len(selection["grid"]) == 3
    assert [g["chosen"] for g in selection["grid"]] == [False, True, False]


@pytest.mark.parametrize("metric, over, message", [
    ("acc", ["model.lr"], "metric 'acc' cannot select (the test set never chooses hyper-parameters)"),
    ("val_acc", [], "'over' must list the settings"),
])
def test_a_selection_on_the_test_set_or_over_nothing_is_refused(metric, over, message):
    with pytest.raises(SelectionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_selection(metric, over, "select")


def test_settings_are_named_as_on_the_command_line_or_as_the_report_keys_them():
    assert names_setting("trainer.callbacks.lam", "callbacks.EWC.lam")
    assert names_setting("callbacks.EWC.lam", "callbacks.EWC.lam")
    assert names_setting("data.val_fraction", "data.init_args.val_fraction")
    assert not names_setting("trainer.callbacks.lam", "callbacks.EWC.gamma")
    assert not names_setting("model.lr", "model.hidden")


def _study(tmp_path, select):
    (tmp_path / "base.yaml").write_text("model:\n  lr: 0.001\n")
    path = tmp_path / "study.yaml"
    path.write_text(f"seeds: [0]\nselect: {select}\nexperiments:\n  - name: a\n    configs: [base.yaml]\n"
                    "    grid: {model.lr: [0.001, 0.01]}\n")
    return path


def test_a_study_file_declares_its_selection_and_a_bad_one_fails_before_any_run(tmp_path):
    assert load_study(_study(tmp_path, "{metric: val_acc, over: [model.lr]}")).select == ("val_acc", ("model.lr",))
    with pytest.raises(StudyError, match="no experiment's grid varies model.hidden; select over settings that a grid "
                                         r"lists \(model.lr\)"):
        load_study(_study(tmp_path, "{over: [model.hidden]}"))
    with pytest.raises(StudyError, match="metric 'acc' cannot select"):
        load_study(_study(tmp_path, "{metric: acc, over: [model.lr]}"))
