"""Choosing hyper-parameters on validation accuracy: of the groups of one benchmark x scenario x
method that differ only in the settings being selected over (a grid), keep the one whose runs have
the best mean final validation accuracy (``results.json``'s ``final_val_accuracy``: the held-out
training images of every task, never the test set), and list the whole grid with its scores.

A study file declares it (``select: {metric: val_acc, over: [trainer.callbacks.lam]}``), and so
does ``python -m lightning_cl.report ... --select trainer.callbacks.lam``. A setting is named
as on the command line (``trainer.callbacks.lam``, ``model.lr``, ``data.val_fraction``) or as the
report keys it (``callbacks.EWC.lam``, ``data.init_args.val_fraction``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_cl.report.comparison import Group

# What a selection may compare: validation metrics only (the test set must not choose).
SELECTION_METRICS = {"val_acc": "the final validation accuracy (results.json's final_val_accuracy)"}


class SelectionError(ValueError):
    """A selection that cannot be made as declared; the message says why and how to fix it."""


def check_selection(metric: Any, over: Any, where: str) -> tuple[str, tuple[str, ...]]:
    """``(metric, over)`` as given by a study file or the command line, checked."""
    if metric not in SELECTION_METRICS:
        test = " (the test set never chooses hyper-parameters)" if isinstance(metric, str) else ""
        raise SelectionError(f"{where}: metric {metric!r} cannot select{test}; use one of {', '.join(SELECTION_METRICS)}.")
    if isinstance(over, str):
        over = [over]
    if not isinstance(over, list) or not over or not all(isinstance(k, str) and k for k in over):
        raise SelectionError(f"{where}: 'over' must list the settings to choose among, e.g. [trainer.callbacks.lam].")
    return metric, tuple(over)


def names_setting(name: str, key: str) -> bool:
    """Whether ``name`` (command-line or report form) names the report's grouping ``key``."""
    if name == key:
        return True
    if name.startswith("trainer.callbacks.") and key.startswith("callbacks."):
        # trainer.callbacks.lam names the argument lam of whichever method has it
        return key.split(".", 2)[2] == name.removeprefix("trainer.callbacks.")
    if name.startswith("data.") and not name.startswith("data.init_args."):
        return key == "data.init_args." + name.removeprefix("data.")
    return False


@dataclass
class GridPoint:
    group: Group
    scores: list[float]  # one final validation accuracy per seed (runs that recorded one)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.scores) if self.scores else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.scores) if len(self.scores) > 1 else None


@dataclass
class Choice:
    """One benchmark x scenario x method (and whatever else tells its groups apart): its grid and the pick."""

    benchmark: str
    scenario: str
    method: str
    points: list[GridPoint] = field(default_factory=list)
    chosen: GridPoint | None = None  # None: a point lacks validation scores, nothing chosen

    def to_dict(self, metric: str, over: Sequence[str]) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "scenario": self.scenario, "method": self.method, "metric": metric,
                "over": list(over), "chosen": None if self.chosen is None else self.chosen.group.settings,
                "grid": [{"settings": p.group.settings, "mean": p.mean, "std": p.std, "n_seeds": len(p.scores),
                          "seeds": [r.record.seed for r in p.group.runs], "chosen": p is self.chosen}
                         for p in self.points]}


def _selected_keys(group: Group, over: Sequence[str]) -> set[str]:
    keys = set(group.settings) | set(group.overrides)
    return {k for k in keys if any(names_setting(name, k) for name in over)}


def select(groups: Sequence[Group], over: Sequence[str]) -> tuple[list[Group], list[Choice]]:
    """The groups with each grid replaced by its chosen point, and every :class:`Choice` made.

    Groups of one benchmark x scenario x method whose settings agree outside ``over`` form a grid;
    a single group is kept as it is. The point with the highest mean final validation
    accuracy is kept (the first in the report's order on a tie); if any point of a grid lacks a
    validation score (a run of an earlier lightning-cl, or ``data.val_fraction 0``) nothing is
    chosen and every point stays, so that no choice rests on part of the grid.
    """
    grids: dict[str, list[Group]] = {}
    for group in groups:
        chosen_keys = _selected_keys(group, over)
        rest = {k: v for k, v in (group.settings | group.overrides).items() if k not in chosen_keys}
        key = json.dumps([group.benchmark, group.scenario, group.method, rest], sort_keys=True, default=str)
        grids.setdefault(key, []).append(group)
    kept: list[Group] = []
    choices: list[Choice] = []
    for members in grids.values():
        if len(members) == 1:  # nothing to choose among (a setting given once, as by a variant)
            kept.extend(members)
            continue
        first = members[0]
        choice = Choice(first.benchmark, first.scenario, first.method)
        for group in members:
            scores = [v for r in group.runs if (v := r.record.final_val_accuracy) is not None and math.isfinite(v)]
            choice.points.append(GridPoint(group, scores))
        if all(len(p.scores) == len(p.group.runs) and p.scores for p in choice.points):
            choice.chosen = max(choice.points, key=lambda p: p.mean)  # max keeps the first of equals
            kept.append(choice.chosen.group)
        else:
            kept.extend(members)
        choices.append(choice)
    order = {id(g): i for i, g in enumerate(groups)}
    return sorted(kept, key=lambda g: order[id(g)]), choices


def selection_tables(choices: Sequence[Choice], metric: str, over: Sequence[str]) -> list[str]:
    """The report's section: every grid point with its validation score, the chosen one marked."""
    lines = ["## Selected on validation accuracy", "",
             f"Over {', '.join(f'`{k}`' for k in over)}, by {SELECTION_METRICS[metric]}, mean ± std over seeds (n). "
             "Only the chosen point (**bold**) is in the tables above; the test set played no part.", ""]
    for choice in choices:
        lines += [f"### {choice.benchmark}, {choice.scenario}-incremental, {choice.method}", "",
                  "| setting | n | validation accuracy |", "| --- | --- | --- |"]
        for point in choice.points:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(point.group.settings.items())) or point.group.label()
            cell = "—" if point.mean is None else (f"{point.mean:.4f}" if point.std is None
                                                   else f"{point.mean:.4f} ± {point.std:.4f}")
            bold = "**" if point is choice.chosen else ""
            lines.append(f"| {bold}{shown}{bold} | {len(point.scores)} | {cell} |")
        if choice.chosen is None:
            lines += ["", "Nothing chosen: a run of this grid recorded no validation accuracy (a run of an earlier "
                          "lightning-cl, or `data.val_fraction 0`); every point is in the tables above."]
        lines.append("")
    return lines
