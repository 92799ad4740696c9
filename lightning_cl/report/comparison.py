"""Compare any set of runs: group them by what their ``results.json`` records (benchmark,
scenario, method, and every grouping setting that differs between runs of the same method:
:func:`lightning_cl.settings.grouping_settings`), and summarise each group over its seeds
(mean ± std of each metric of :data:`lightning_cl.metrics.CL_METRICS`). Directory and
config-file names play no part. A group's label also names the settings its runs' command
lines changed from their config files (``overrides``), so that a shortened run reads
``ewc (task_loop.steps_per_task=50)``, never plain ``ewc``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning_cl.metrics import CL_METRICS
from lightning_cl.results import RESULTS_FILE, ResultsError, RunResults
from lightning_cl.settings import SHOWN_BY_GROUP, grouping_settings

SUMMARY_FORMAT_VERSION = 1  # groups gained overrides and warnings since, optional keys in format 1


@dataclass
class LoadedRun:
    path: Path  # the run directory
    record: RunResults

    @property
    def mtime(self) -> float:
        return (self.path / RESULTS_FILE).stat().st_mtime


@dataclass
class Group:
    benchmark: str
    scenario: str
    method: str
    settings: dict[str, Any]
    runs: list[LoadedRun] = field(default_factory=list)
    # what the runs' command lines changed from their -c files, beyond ``settings`` and what the
    # group's benchmark, scenario and method show (lightning_cl.settings.SHOWN_BY_GROUP)
    overrides: dict[str, Any] = field(default_factory=dict)

    def values(self, metric: str, task_il: bool = False) -> list[float]:
        """``metric`` of each run; ``task_il``: of its task-IL accuracy matrix (runs without one left out)."""
        found = [(r.record.task_il_metrics() or {}) if task_il else r.record.metrics() for r in self.runs]
        return [v for metrics in found if (v := metrics.get(metric)) is not None and math.isfinite(v)]

    @property
    def has_task_il(self) -> bool:
        """Whether every run recorded a task-IL accuracy matrix (a class-IL run with TaskILAccuracy)."""
        return bool(self.runs) and all(r.record.task_il_accuracy_matrix is not None for r in self.runs)

    def stats(self, metric: str, task_il: bool = False) -> dict[str, float | None]:
        return _mean_std(self.values(metric, task_il))

    def wall_time(self) -> dict[str, float | None]:
        """Seconds each run's training took (``results.json``'s ``wall_time_s``), mean and std."""
        return _mean_std([t for r in self.runs if (t := r.record.wall_time_s) is not None])

    def label(self) -> str:
        """``ewc``, ``ewc (model.lr=0.01, task_loop.steps_per_task=50)``: the settings, then the overrides."""
        shown = self.settings | self.overrides
        if not shown:
            return self.method
        return f"{self.method} ({', '.join(f'{k}={_short(v)}' for k, v in shown.items())})"


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    """``{"mean", "std"}`` of ``values``: None where there are too few (no value; one value's std)."""
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None}


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def find_results(dirs: Sequence[str | Path]) -> list[Path]:
    """Every ``results.json`` under ``dirs`` (each a run directory or a folder above run directories)."""
    paths: list[Path] = []
    for d in map(Path, dirs):
        if (d / RESULTS_FILE).is_file():
            paths.append(d / RESULTS_FILE)
        elif d.is_dir():
            paths.extend(sorted(d.rglob(RESULTS_FILE)))
        else:
            raise FileNotFoundError(f"{d}: no such run directory")
    return list(dict.fromkeys(p.resolve() for p in paths))


def load_runs(dirs: Sequence[str | Path]) -> tuple[list[LoadedRun], list[str]]:
    """The readable runs under ``dirs``, and one message for each file that could not be read."""
    runs, problems = [], []
    for path in find_results(dirs):
        try:
            runs.append(LoadedRun(path.parent, RunResults.read(path)))
        except ResultsError as err:
            problems.append(str(err))
    return runs, problems


def group_runs(runs: Sequence[LoadedRun]) -> list[Group]:
    """Complete runs grouped by (benchmark, scenario, method, differing settings); within a group
    one run per seed, the newest."""
    complete = sorted((r for r in runs if r.record.complete), key=lambda r: r.mtime)
    by_method: dict[tuple[str, str, str], list[LoadedRun]] = {}
    for run in complete:
        rec = run.record
        by_method.setdefault((rec.benchmark, rec.scenario, rec.method), []).append(run)
    groups: list[Group] = []
    for (benchmark, scenario, method), members in sorted(by_method.items()):
        settings = [grouping_settings(r.record.config) for r in members]
        keys = sorted({k for s in settings for k in s})
        differing = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in settings}) > 1]
        by_setting: dict[str, Group] = {}
        for run, s in zip(members, settings):
            chosen = {k: s.get(k) for k in differing}
            key = json.dumps(chosen, sort_keys=True)
            group = by_setting.setdefault(key, Group(benchmark, scenario, method, chosen))
            group.runs = [r for r in group.runs if r.record.seed != run.record.seed] + [run]
        groups.extend(by_setting[k] for k in sorted(by_setting))
    for group in groups:
        for run in group.runs:  # a group's runs have the same settings: an override's value is theirs
            group.overrides |= {k: v for k, v in (run.record.overrides or {}).items()
                                if k not in group.settings and k not in SHOWN_BY_GROUP and k not in group.overrides}
    return groups


def summary(groups: Sequence[Group]) -> dict[str, Any]:
    """``summary.json``: one entry per group (format in README.md)."""
    return {
        "format_version": SUMMARY_FORMAT_VERSION,
        "groups": [
            {
                "benchmark": g.benchmark, "scenario": g.scenario, "method": g.method, "settings": g.settings,
                "overrides": g.overrides,
                "n_seeds": len(g.runs), "seeds": [r.record.seed for r in g.runs],
                **{m.key: g.stats(m.key) for m in CL_METRICS},
                **({"task_il": {m.key: g.stats(m.key, task_il=True) for m in CL_METRICS}} if g.has_task_il else {}),
                "wall_time_s": g.wall_time(),
                "runs": [str(r.path) for r in g.runs],
                "warnings": [f"{r.path}: {w}" for r in g.runs for w in r.record.warnings],
            }
            for g in groups
        ],
    }


def acc_curve(record: RunResults) -> list[float]:
    """ACC on the tasks seen so far after each task: ``mean_{j<=k} R[k][j]``."""
    return [statistics.fmean(row[: k + 1]) for k, row in enumerate(record.accuracy_matrix)]
