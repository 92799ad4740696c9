"""``results.json`` is written atomically, with the mode of any other new file; a file of a newer
format version than this lightning-cl reads is named and left out of the report."""

import json
import os

import pytest

from lightning_cl.report import main
from lightning_cl.results import FORMAT_VERSION, RunResults, write_json_atomic


def test_results_get_the_mode_of_a_new_file_under_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == (tmp_path / "other").stat().st_mode & 0o777
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def _results(run, **extra):
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"complete": True, "tasks": [[0, 1], [2, 3]],
                                                  "accuracy_matrix": [[1.0, 0.0], [0.6, 1.0]],
                                                  "seen_accuracy": [1.0, 0.8], **extra}))


def test_a_newer_or_odd_format_version_is_named_and_skipped_and_formats_1_and_2_are_read(tmp_path, capsys):
    logs = tmp_path / "logs"
    _results(logs / "v1", format_version=1, config={"data": {"tasks": [[0, 1], [2, 3]]}})  # format 1's config
    _results(logs / "v2", format_version=2, method="ewc", benchmark="permuted_mnist", scenario="domain")
    _results(logs / "v3", format_version=FORMAT_VERSION + 1, method="newer")
    _results(logs / "text", format_version="2")
    assert RunResults.read(logs / "v1" / "results.json").format_version == 1
    main([str(logs), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert (f"warning: skipped {logs / 'v3' / 'results.json'}: format_version {FORMAT_VERSION + 1} was written by "
            f"a newer lightning-cl (this one reads format_version {FORMAT_VERSION} and older); upgrade to read it"
            in err)
    assert f"warning: skipped {logs / 'text' / 'results.json'}: format_version '2' is not a format version" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted((g["benchmark"], g["method"]) for g in summary["groups"]) == [("permuted_mnist", "ewc"),
                                                                               ("split_mnist", "none")]
    assert all(g["acc"]["mean"] == pytest.approx(0.8) for g in summary["groups"])


def test_a_run_whose_loss_exploded_is_flagged_in_its_record_and_marked_in_the_report(tmp_path):
    logs = tmp_path / "logs"
    # Written before results.json had warnings (format 2 without the key): flagged on reading.
    _results(logs / "exploded", format_version=2, seed=0, seen_loss=[0.5, 7e11])
    _results(logs / "healthy", format_version=2, seed=0, seen_loss=[0.5, 10.1], config={"model": {"lr": 0.001}})
    exploded = RunResults.read(logs / "exploded" / "results.json")
    assert exploded.warnings == ["the loss exploded: the seen-task test loss was 7e+11 after task 2 (above 1000 after "
                                 "1 of 2 tasks): the accuracies are those of a blown-up model; try a smaller model.lr"]
    assert exploded.to_dict()["warnings"] == exploded.warnings and exploded.to_dict()["format_version"] == 2
    assert RunResults.read(logs / "healthy" / "results.json").warnings == []
    assert RunResults.from_dict({**exploded.to_dict(), "warnings": ["stale"]}).warnings == exploded.warnings  # derived

    main([str(logs), "-o", str(tmp_path / "out")])
    report = (tmp_path / "out" / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| none")]
    assert len(rows) == 2 and sum("⚠" in row for row in rows) == 1
    assert f"`{logs / 'exploded' / 'results.json'}`: the loss exploded: the seen-task test loss was 7e+11" in report
    groups = json.loads((tmp_path / "out" / "summary.json").read_text())["groups"]
    assert sorted(len(g["warnings"]) for g in groups) == [0, 1]


def test_method_metrics_are_an_optional_key_of_format_2(tmp_path):
    _results(tmp_path / "before", format_version=2)  # written before methods reported per-task numbers
    before = RunResults.read(tmp_path / "before" / "results.json")
    assert before.method_metrics == {} and before.to_dict()["format_version"] == 2
    _results(tmp_path / "after", format_version=2, method="gpm", method_metrics={"gpm/leak": [None, 2e-7]})
    after = RunResults.read(tmp_path / "after" / "results.json")
    assert after.to_dict()["method_metrics"] == {"gpm/leak": [None, 2e-7]}
