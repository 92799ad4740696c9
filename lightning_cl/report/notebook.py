"""The notebook's tables (``lightning_cl.report.notebook_targets``) side by side with our runs:
the reproduction section of ``report.md``.

A run is matched to a notebook experiment by its resolved config (``results.json["config"]``:
data.tasks, model.norm, model.dropout, model.lambda_l1, the trainer callbacks); runs of the
same experiment with different seeds are summarised as mean ± std. Rows without a complete run
are shown as "not run". The runs' PNGs are copied beside the report and linked from it.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_cl.report.comparison import LoadedRun
from lightning_cl.results import RESULTS_FILE
from lightning_cl.report.notebook_targets import SECTIONS, TARGETS, Column, Experiment, Target

# The notebook's protocol: a run that departs from it (a shortened test run, another optimiser
# setting) is listed but kept out of the comparison unless asked for.
PROTOCOL_BATCH_SIZE = 64
PROTOCOL_EPOCHS = 5  # per task, unless an accuracy threshold ends tasks (OGD: up to ~30)
PROTOCOL_LR = {"none": 1e-3, "ogd": 1e-4}
NOTEBOOK_TASKS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]
NOTEBOOK_HIDDEN = [120, 84]


@dataclass
class Run:
    path: Path
    results: dict
    experiment: Experiment | None
    deviations: list[str]

    @property
    def seed(self):
        return self.results.get("seed", (self.results.get("config") or {}).get("seed_everything"))


def _data_args(config: dict) -> dict:
    """The DataModule's settings (``data.init_args`` when the config names the class, else ``data``);
    KeyError unless it is Split-MNIST."""
    data = config["data"]
    if "class_path" in data:
        if not str(data["class_path"]).endswith("SplitMNIST"):
            raise KeyError("data.class_path")
        data = data.get("init_args") or {}
    return data


def experiment_of(config: dict | None) -> Experiment | None:
    """The notebook experiment that a resolved run config describes (None if it cannot tell)."""
    if not config:
        return None
    try:
        tasks = _data_args(config)["tasks"]
        model = config["model"]
    except (KeyError, TypeError):
        return None
    if sorted(map(sorted, tasks)) not in (sorted(map(sorted, NOTEBOOK_TASKS)), [list(range(10))]):
        return None  # another benchmark or task split: not one of the notebook's experiments
    callbacks = (config.get("trainer") or {}).get("callbacks") or []
    if isinstance(callbacks, dict):
        callbacks = [callbacks]
    method, threshold = "none", None
    for cb in callbacks:
        if not isinstance(cb, dict):
            continue
        name = str(cb.get("class_path", "")).rsplit(".", 1)[-1].lower()
        if "ogd" in name or "orthogonal" in name:
            method = "ogd"
        for key, value in (cb.get("init_args") or {}).items():
            if "threshold" in key.lower() and isinstance(value, (int, float)):
                threshold = float(value)
    return Experiment(
        kind="concurrent" if len(tasks) == 1 else "sequential",
        norm=model.get("norm", "none"),
        dropout=float(model.get("dropout", 0.0) or 0.0),
        lambda_l1=float(model.get("lambda_l1", 0.0) or 0.0),
        method=method,
        threshold=threshold,
    )


def deviations_of(config: dict | None, experiment: Experiment | None) -> list[str]:
    """How a run's config departs from the notebook's protocol for its experiment (empty: it follows it)."""
    if experiment is None:
        return ["config not recognised"]
    found = []
    trainer, model, data = config.get("trainer") or {}, config.get("model") or {}, _data_args(config)
    for key in ("limit_train_batches", "limit_val_batches"):
        if trainer.get(key) not in (None, 1.0):
            found.append(f"trainer.{key}={trainer[key]}")
    if trainer.get("max_steps", -1) not in (None, -1):
        found.append(f"trainer.max_steps={trainer['max_steps']}")
    epochs = (config.get("task_loop") or {}).get("epochs_per_task")
    if experiment.threshold is None and epochs != PROTOCOL_EPOCHS:
        found.append(f"task_loop.epochs_per_task={epochs}")
    if data.get("batch_size", PROTOCOL_BATCH_SIZE) != PROTOCOL_BATCH_SIZE:
        found.append(f"data.batch_size={data['batch_size']}")
    for key, notebook in (("scenario", "class"), ("normalize", True), ("cumulative", False)):
        if data.get(key, notebook) != notebook:
            found.append(f"data.{key}={data[key]}")
    network = model.get("network")
    if network is not None:  # not the notebook's MLP, whatever its settings
        found.append(f"model.network={network.get('class_path') if isinstance(network, dict) else network}")
    if list(model.get("hidden", NOTEBOOK_HIDDEN)) != NOTEBOOK_HIDDEN:
        found.append(f"model.hidden={model['hidden']}")
    if model.get("optimizer", "adam") != "adam":
        found.append(f"model.optimizer={model['optimizer']}")
    lr = model.get("lr", PROTOCOL_LR[experiment.method])
    if not math.isclose(lr, PROTOCOL_LR.get(experiment.method, lr)):
        found.append(f"model.lr={lr}")
    return found


def notebook_runs(loaded: Sequence[LoadedRun]) -> list[Run]:
    """The loaded runs, each matched to the notebook experiment it reproduces (if any)."""
    runs = []
    for run in loaded:
        results = run.record.to_dict()
        experiment = experiment_of(results.get("config"))
        runs.append(Run(run.path, results, experiment, deviations_of(results.get("config"), experiment)))
    return runs


def compared_runs(runs: list[Run], include_deviating: bool = False) -> list[Run]:
    """The complete runs that enter the tables: one per (experiment, seed), the newest."""
    chosen: dict[tuple, Run] = {}
    for run in sorted(runs, key=lambda r: (r.path / RESULTS_FILE).stat().st_mtime):
        if run.experiment is None or not run.results.get("complete"):
            continue
        if run.deviations and not include_deviating:
            continue
        chosen[(run.experiment, run.seed)] = run
    return list(chosen.values())


def measured(results: dict, column: Column) -> float | None:
    """A run's value in ``column`` (sparsity: over both layers), or None if the run lacks it."""
    series = results.get(column.measure) or []
    try:
        value = series[column.task]
    except IndexError:
        return None
    if isinstance(value, dict):
        value = value.get("overall")
    return None if value is None else float(value)


def summarise(values: list[float], digits: int) -> str:
    if not values:
        return "not run"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _digits(column: Column) -> int:
    return 3 if column.measure == "seen_loss" else 4


def target_rows(target: Target, runs: list[Run]) -> tuple[list[str], list[str], int]:
    """The notebook's row and ours (cells), and how many runs ours summarises."""
    mine = [r for r in runs if r.experiment == target.experiment]
    ours = []
    for column in target.columns:
        values = [v for r in mine if (v := measured(r.results, column)) is not None and math.isfinite(v)]
        ours.append(summarise(values, _digits(column)))
    return [v or "—" for v in target.values], ours, len(mine)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def copy_pictures(runs: list[Run], out: Path) -> dict[Path, list[str]]:
    """Copy each run's PNGs into ``out/runs/<experiment>_seed<seed>/``; return the relative paths."""
    pictures: dict[Path, list[str]] = {}
    used: set[str] = set()
    for run in runs:
        pngs = sorted(run.path.glob("*.png"))
        if not pngs:
            continue
        name = f"{_slug(run.experiment.label()) if run.experiment else 'run'}_seed{run.seed}"
        base, k = name, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        dest = out / "runs" / name
        dest.mkdir(parents=True, exist_ok=True)
        for png in pngs:
            shutil.copy2(png, dest / png.name)
        pictures[run.path] = [f"runs/{name}/{png.name}" for png in pngs]
    return pictures


def render_notebook(runs: list[Run], pictures: dict[Path, list[str]], include_deviating: bool = False) -> str:
    compared = compared_runs(runs, include_deviating)
    lines = ["## The notebook's results and ours", ""]
    lines += [
        f"{len(runs)} run(s) found, {len(compared)} compared. Each row: the notebook's single run, then ours "
        "(mean ± std over seeds when several; n = seeds). Notebook values are as the notebook printed them. "
        + ("Runs that depart from the notebook's protocol are included." if include_deviating else
           "Incomplete runs and runs that depart from the notebook's protocol (see Runs) are left out."), "",
    ]
    for section in SECTIONS:
        targets = [t for t in TARGETS if t.section == section]
        columns = targets[0].columns if len({t.columns for t in targets}) == 1 else None
        lines += [f"### {section}", ""]
        if columns is None:  # rows with different columns: one small table each
            for target in targets:
                lines += _table([target], target.columns, compared)
        else:
            lines += _table(targets, columns, compared)
    lines += ["### Runs", "", "| run | experiment | seed | complete | compared | departs from protocol | "
              "final seen acc | wall time (s) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in runs:
        final = run.results.get("final_seen_accuracy")
        lines.append(
            f"| `{run.path}` | {run.experiment.label() if run.experiment else '?'} | {run.seed} | "
            f"{run.results.get('complete')} | {'yes' if any(run is c for c in compared) else 'no'} | "
            f"{', '.join(run.deviations) or '—'} | {'—' if final is None else f'{final:.4f}'} | "
            f"{run.results.get('wall_time_s', '—')} |"
        )
    lines.append("")
    if pictures:
        lines += ["### Pictures", ""]
        for run in runs:
            if run.path in pictures:
                label = run.experiment.label() if run.experiment else str(run.path)
                lines += [f"#### {label}, seed {run.seed}", ""]
                lines += [f"![{Path(p).stem}]({p})" for p in pictures[run.path]]
                lines.append("")
    return "\n".join(lines)


def _table(targets: list[Target], columns: tuple[Column, ...], runs: list[Run]) -> list[str]:
    lines = ["| row | source | " + " | ".join(c.label for c in columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for target in targets:
        notebook, ours, n = target_rows(target, runs)
        lines.append(f"| {target.row} | notebook | " + " | ".join(notebook) + " |")
        lines.append(f"| {target.row} | ours (n={n}) | " + " | ".join(ours) + " |")
    return lines + [""]


