"""``python -m lightning_cl.report RUN_DIR [RUN_DIR ...] -o OUT_DIR``: compare any set of runs.

Each RUN_DIR is a run's log directory (with ``results.json``) or any folder above such
directories (e.g. ``lightning_logs``). Writes into OUT_DIR:

* ``report.md``: a table per benchmark x scenario (each method's ACC, BWT, FWT, forgetting
  and learning accuracy, mean ± std over seeds, n; a row's label names the settings that tell
  groups apart and what the runs' command lines changed from their configs, e.g.
  ``ewc (task_loop.steps_per_task=50)``), then, when there are runs of the
  notebook's experiments, the notebook's tables side by side with ours; a group with a run
  whose loss exploded (``results.json``'s ``warnings``) is marked ⚠, with a footnote naming the run;
* ``summary.json``: the same groups as data (format in README.md);
* ``acc_<benchmark>_<scenario>.png``: ACC on the tasks seen so far against the number of
  tasks trained, a line per method with a band over seeds; and the runs' own PNGs.

Where a number was published for a protocol the runs follow (``lightning_cl/report/published.yaml``,
each with its source), a section puts ours next to it with a verdict
(:mod:`lightning_cl.report.reproduction`; ``--published FILE`` compares with another such file).

``--select KEY [KEY ...]`` chooses among the groups that differ only in those settings the one
with the best final validation accuracy (:mod:`lightning_cl.report.selection`): only its test
numbers are in the tables, and a section lists the whole grid with its validation scores.

A ``results.json`` that cannot be read, or lacks keys, is named in a warning and skipped.
A study (``lightning-cl-study``) ends with this report over its runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_cl.metrics import CL_METRICS
from lightning_cl.report.comparison import Group, LoadedRun, acc_curve, group_runs, load_runs, summary
from lightning_cl.report.notebook import copy_pictures, notebook_runs, render_notebook
from lightning_cl.report.reproduction import PUBLISHED_FILE, PublishedError, load_published, reproduction_rows, reproduction_table
from lightning_cl.report.selection import SelectionError, check_selection, select, selection_tables
from lightning_cl.plots import acc_curve_figure, save_figure
from lightning_cl.results import RESULTS_FILE

REPORT_FILE = "report.md"
SUMMARY_FILE = "summary.json"
WARNING_MARK = "⚠"  # a group with a run whose numbers are suspect (results.json's warnings), footnoted


def _cell(stats: dict, digits: int = 4) -> str:
    if stats["mean"] is None:
        return "—"
    mean = f"{stats['mean']:.{digits}f}"
    return mean if stats["std"] is None else f"{mean} ± {stats['std']:.{digits}f}"


def comparison_tables(groups: Sequence[Group], pictures: dict[tuple[str, str], str]) -> list[str]:
    """One table per benchmark x scenario, methods as rows."""
    legend = "; ".join(f"{m.label}: {m.meaning}" for m in CL_METRICS)
    lines = ["## Methods compared", "",
             f"Mean ± std over seeds (n). {legend}; wall time: seconds of training per run.", ""]
    if not groups:
        return lines + ["No complete runs.", ""]
    for key in dict.fromkeys((g.benchmark, g.scenario) for g in groups):
        lines += [f"### {key[0]}, {key[1]}-incremental", "",
                  "| " + " | ".join(["method", "n", *(m.label for m in CL_METRICS), "wall time (s)"]) + " |",
                  "|" + " --- |" * (3 + len(CL_METRICS))]
        notes = []
        for g in (g for g in groups if (g.benchmark, g.scenario) == key):
            cells = [_cell(g.stats(m.key)) for m in CL_METRICS] + [_cell(g.wall_time(), digits=0)]
            warned = [(r, w) for r in g.runs for w in r.record.warnings]
            lines.append(f"| {g.label()}{f' {WARNING_MARK}' if warned else ''} | {len(g.runs)} | " + " | ".join(cells) + " |")
            notes += [f"{WARNING_MARK} {g.label()}, `{r.path / RESULTS_FILE}`: {w}." for r, w in warned]
        lines.append("")
        if notes:
            lines += [*notes, ""]
        lines += task_il_table([g for g in groups if (g.benchmark, g.scenario) == key])
        if key in pictures:
            lines += [f"![ACC by tasks trained]({pictures[key]})", ""]
    return lines


def task_il_table(groups: Sequence[Group]) -> list[str]:
    """The task-IL metrics of the groups whose class-IL runs recorded them (results.json's
    ``task_il_accuracy_matrix``); no lines when none did."""
    groups = [g for g in groups if g.has_task_il]
    if not groups:
        return []
    lines = ["Task-IL metrics of the same runs (each test set scored on its own task's outputs only):", "",
             "| " + " | ".join(["method", "n", *(m.label for m in CL_METRICS)]) + " |",
             "|" + " --- |" * (2 + len(CL_METRICS))]
    lines += [f"| {g.label()} | {len(g.runs)} | " + " | ".join(_cell(g.stats(m.key, task_il=True)) for m in CL_METRICS)
              + " |" for g in groups]
    return lines + [""]


def draw_acc_curves(groups: Sequence[Group], out: Path) -> dict[tuple[str, str], str]:
    """A PNG per benchmark x scenario; returns the relative paths."""
    pictures = {}
    for key in dict.fromkeys((g.benchmark, g.scenario) for g in groups):
        curves = []
        for g in (g for g in groups if (g.benchmark, g.scenario) == key):
            rows = [acc_curve(r.record) for r in g.runs]
            if len({len(r) for r in rows}) == 1:
                curves.append((g.label(), np.array(rows)))
        name = f"acc_{key[0]}_{key[1]}.png"
        save_figure(acc_curve_figure(curves, f"{key[0]}, {key[1]}-incremental"), out / name)
        pictures[key] = name
    return pictures


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path, include_deviating: bool = False,
                 select_over: Sequence[str] = (), select_metric: str = "val_acc",
                 published: str | Path = PUBLISHED_FILE) -> Path:
    """Write ``report.md``, ``summary.json`` and the pictures for the runs under ``run_dirs``;
    with ``select_over``, each grid over those settings is replaced by its point chosen on validation."""
    out = Path(out_dir)
    loaded, problems = load_runs(run_dirs)
    out.mkdir(parents=True, exist_ok=True)
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    groups = group_runs(loaded)
    choices = []
    if select_over:
        metric, over = check_selection(select_metric, list(select_over), "select")
        groups, choices = select(groups, over)
    data = summary(groups)
    if select_over:
        data["selections"] = [c.to_dict(metric, over) for c in choices]
    reproduction = reproduction_rows(groups, load_published(published))
    if reproduction:
        data["reproduction"] = [{"benchmark": r.published.protocol.benchmark, "scenario": r.published.scenario,
                                 "method": r.published.method, "protocol": r.published.protocol.name,
                                 "published": {"value": r.published.value, "spread": r.published.spread,
                                               "spread_kind": r.published.spread_kind, "seeds": r.published.seeds,
                                               "scale": r.published.protocol.scale, "source": r.published.source,
                                               "settings": r.published.settings},
                                 "ours": None if r.group is None else {"label": r.group.label(), **r.ours(),
                                                                       "n_seeds": len(r.group.runs),
                                                                       "task_il_of_class_runs": r.task_il},
                                 "verdict": r.verdict()} for r in reproduction]
    (out / SUMMARY_FILE).write_text(json.dumps(data, indent=2) + "\n")
    lines = ["# lightning-cl report", "",
             f"{len(loaded)} run(s) read, {sum(r.record.complete for r in loaded)} complete, "
             f"{len(groups)} group(s){' after selection' if select_over else ''}.", ""]
    lines += comparison_tables(groups, draw_acc_curves(groups, out))
    lines += reproduction_table(reproduction)
    if choices:
        lines += selection_tables(choices, metric, over)
    incomplete = [r for r in loaded if not r.record.complete]
    if incomplete or problems:
        lines += ["## Not compared", ""]
        lines += [f"- `{r.path / RESULTS_FILE}`: incomplete ({r.record.tasks_done} of {len(r.record.tasks)} tasks"
                  f"{', ' + r.record.error if r.record.error else ''})" for r in incomplete]
        lines += [f"- unreadable: {p}" for p in problems]
        lines.append("")
    runs = notebook_runs(loaded)
    if any(r.experiment is not None for r in runs):
        lines.append(render_notebook(runs, copy_pictures(runs, out), include_deviating))
    path = out / REPORT_FILE
    path.write_text("\n".join(lines))
    return path


class _Parser(argparse.ArgumentParser):
    """Prints an error as one ``error:`` line and a pointer to ``--help``, as ``lightning-cl`` does."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\ntip: `{self.prog} --help` lists every option.\n")


def main(argv: Sequence[str] | None = None) -> None:
    parser = _Parser(prog="python -m lightning_cl.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="*", help="run directories (with results.json) or folders above them")
    parser.add_argument("-o", "--out", required=True, help="output directory for report.md, summary.json, pictures")
    parser.add_argument("--include-deviating", action="store_true",
                        help="also compare runs that depart from the notebook's protocol in its tables")
    parser.add_argument("--select", nargs="+", metavar="KEY", default=[],
                        help="choose, among groups that differ only in these settings (e.g. trainer.callbacks.lam), "
                             "the one with the best final validation accuracy")
    parser.add_argument("--published", default=str(PUBLISHED_FILE), metavar="FILE",
                        help="published numbers to put ours next to (default: the package's published.yaml)")
    args = parser.parse_args(argv)
    if not args.run_dirs:
        parser.error("give run directories (or run a study: lightning-cl-study configs/studies/notebook.yaml)")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"-o {args.out} is a file, not a directory: give a directory for report.md, summary.json "
                     "and the pictures (it is created if missing)")
    try:
        path = write_report(args.run_dirs, args.out, args.include_deviating, args.select, published=args.published)
    except (FileNotFoundError, SelectionError, PublishedError) as err:
        parser.error(str(err))
    except OSError as err:  # a file on the way to -o, a read-only directory, a full disk
        parser.error(f"-o {args.out} cannot be written: {err.strerror or err}"
                     f"{f' ({err.filename})' if err.filename else ''}")
    print(f"report: {path}")


if __name__ == "__main__":
    main()
