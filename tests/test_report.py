"""The report: the notebook's numbers as data, runs matched to experiments by config, every
notebook row present (with "not run" where no run), mean ± std over seeds, pictures copied beside it."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest

from lightning_cl.report.notebook import deviations_of, experiment_of
from lightning_cl.report import main
from lightning_cl.report.notebook_targets import TARGETS, Experiment

def _config(tasks, norm="none", dropout=0.0, lambda_l1=0.0, callbacks=None, seed=0):
    return {"seed_everything": seed, "trainer": {"callbacks": callbacks, "limit_train_batches": None},
            "model": {"norm": norm, "dropout": dropout, "lambda_l1": lambda_l1, "optimizer": "adam", "lr": 1e-3},
            "data": {"tasks": tasks, "batch_size": 64}, "task_loop": {"epochs_per_task": 5}}


SEQ = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]


def _write_run(root: Path, name: str, config: dict, seen_accuracy, seen_loss=None, complete=True, png=True) -> Path:
    run = root / name
    run.mkdir(parents=True)
    n = len(seen_accuracy)
    results = {"complete": complete, "seed": config["seed_everything"], "tasks": config["data"]["tasks"],
               "seen_accuracy": seen_accuracy, "seen_loss": seen_loss or [0.5] * n,
               "sparsity": [{"h1": 0.5, "h2": 0.6, "overall": 0.55}] * n,
               "accuracy_matrix": [[0.0] * len(config["data"]["tasks"])] * n,
               "final_seen_accuracy": seen_accuracy[-1] if complete else None, "config": config}
    (run / "results.json").write_text(json.dumps(results))
    if png:
        (run / "forgetting_curve.png").write_bytes(b"\x89PNG fake")
    return run


def test_experiment_of_reads_method_and_threshold_from_the_callbacks():
    callbacks = [{"class_path": "lightning_cl.methods.ogd.OGD", "init_args": {}},
                 {"class_path": "lightning_cl.callbacks.accuracy_stop.AccuracyThreshold",
                  "init_args": {"threshold": 0.95}}]
    exp = experiment_of(_config(SEQ, norm="batch", lambda_l1=5.0, callbacks=callbacks))
    assert exp == Experiment("sequential", norm="batch", lambda_l1=5.0, method="ogd", threshold=0.95)
    assert experiment_of(_config([list(range(10))])) == Experiment("concurrent")
    assert experiment_of(None) is None


def test_a_run_with_another_network_departs_from_the_protocol():
    config = _config(SEQ)
    assert deviations_of(config, experiment_of(config)) == []
    config["model"]["network"] = {"class_path": "my_nets.ConvNet", "init_args": {"channels": 8}}
    assert deviations_of(config, experiment_of(config)) == ["model.network=my_nets.ConvNet"]


def test_report_has_every_spec_row_side_by_side_with_ours(tmp_path):
    a = [0.99, 0.50, 0.30, 0.25, 0.20]
    b = [0.97, 0.48, 0.32, 0.26, 0.19]
    _write_run(tmp_path / "logs", "seq0", _config(SEQ, seed=0), a)
    _write_run(tmp_path / "logs", "seq1", _config(SEQ, seed=1), b)
    _write_run(tmp_path / "logs", "seq2", _config(SEQ, seed=2), [0.1, 0.1], complete=False, png=False)
    short = _config(SEQ, seed=3)
    short["trainer"]["limit_train_batches"] = 30
    _write_run(tmp_path / "logs", "short", short, [0.5] * 5, png=False)
    bn = _write_run(tmp_path, "bn", _config([list(range(10))], norm="batch"), [0.978])
    out = tmp_path / "out"
    main([str(tmp_path / "logs"), str(bn), "-o", str(out)])
    report = (out / "report.md").read_text()

    for target in TARGETS:
        assert target.section in report
        row_lines = [line for line in report.splitlines() if line.startswith(f"| {target.row} | notebook |")]
        assert row_lines, f"row {target.row!r} of {target.section!r} missing"
        assert all(v in report for v in target.values)
    # ours: mean ± std of the two complete seeds; the incomplete run is not counted
    t1 = f"{statistics.fmean([a[0], b[0]]):.4f} ± {statistics.stdev([a[0], b[0]]):.4f}"
    assert f"| plain | ours (n=2) | {t1} |" in report
    assert "| BatchNorm | ours (n=1) | 0.9780 |" in report  # concurrent BatchNorm, one seed
    assert "| threshold 0.98 | ours (n=0) | not run |" in report
    assert "trainer.limit_train_batches=30" in report  # listed, but not compared
    pictures = sorted(p.relative_to(out).as_posix() for p in (out / "runs").rglob("*.png"))
    assert len(pictures) == 3 and all(f"]({p})" in report for p in pictures)


def test_report_refuses_a_missing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope"), "-o", str(tmp_path / "out")])
    assert "no such run directory" in capsys.readouterr().err


@pytest.mark.parametrize("out, message", [("a_file", "-o {a_file} is a file, not a directory"),
                                          ("a_file/out", "-o {a_file}/out cannot be written: Not a directory")])
def test_report_refuses_an_output_that_is_not_a_directory_in_one_line(tmp_path, capsys, out, message):
    run = _write_run(tmp_path / "logs", "seq0", _config(SEQ), [0.99, 0.5, 0.3, 0.25, 0.2])
    (tmp_path / "a_file").write_text("not a directory")
    with pytest.raises(SystemExit) as exit_info:
        main([str(run), "-o", str(tmp_path / out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    error, tip = err.splitlines()  # one line, no usage, no traceback
    assert error.startswith(f"error: {message.format(a_file=tmp_path / 'a_file')}")
    assert tip == "tip: `python -m lightning_cl.report --help` lists every option."
    assert (tmp_path / "a_file").read_text() == "not a directory"
